"""The scikit-learn estimators: validation with scikit-learn's helpers, the fit in Rust."""

import json
import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, DensityMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from mdem import _core

#: The outer solvers: plain EM, SQUAREM-accelerated EM (the command line's default),
#: Anderson-accelerated EM (DAAREM with a monotone safeguard), mirror descent (step
#: 1/L-hat measured along the run, or a fixed ``eta``) and gradient descent with Armijo
#: backtracking.
SOLVERS = ("em", "squarem", "anderson", "md", "newton", "gd")
#: How each seeded start is drawn (as ``mdem fit --init``).
INITS = ("auto", "random", "subset", "kmeans", "short-em")
#: When a gated fit also starts from the ungated optimum (as ``mdem fit --ungated-start``).
UNGATED_STARTS = ("when-below", "always", "off")


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"invalid value {value} for {name}: expected an int >= {low}")


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _check_choice(name, value, choices):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(
            f"invalid value {value!r} for {name}: expected one of {', '.join(map(repr, choices))}"
        )


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"invalid value {value} for {name}: expected a finite number > 0")


def _theta_like(theta, fitted):
    """``theta`` as a contiguous float64 array of the fitted ``theta_``'s shape (``None``
    stays ``None``: the kept start)."""
    if theta is None:
        return None
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    if theta.shape != fitted.shape:
        raise ValueError(f"theta must have shape {fitted.shape}, found {theta.shape}")
    return theta


def _check_solver(solver, eta):
    _check_choice("solver", solver, SOLVERS)
    if eta is not None:
        _check_positive("eta", eta)
        if solver != "md":
            raise ValueError(f"eta={eta} applies to solver='md' only, not {solver!r}")


def _check_ridge(ridge):
    if (
        not isinstance(ridge, numbers.Real)
        or isinstance(ridge, bool)
        or not np.isfinite(ridge)
        or ridge < 0
    ):
        raise ValueError(f"invalid value {ridge!r} for ridge: expected a finite number >= 0")


def _check_presample(presample, solver, eta):
    """``presample``: None, a number of rows (an int >= 1) or a fraction of them in (0, 1),
    with a solver that fits its starts by the library's restarts (not ``gd`` or ``md``
    with a fixed ``eta``)."""
    if presample is None:
        return
    ok = isinstance(presample, numbers.Real) and not isinstance(presample, bool)
    if ok and isinstance(presample, numbers.Integral):
        ok = presample >= 1
    elif ok:
        ok = 0 < presample < 1
    if not ok:
        raise ValueError(
            f"invalid value {presample!r} for presample: expected a number of rows "
            "(an int >= 1) or a fraction of them in (0, 1)"
        )
    if solver == "gd" or (solver == "md" and eta is not None):
        raise ValueError(
            "presample needs solver 'em', 'squarem', 'anderson', 'newton' or 'md' without eta"
        )


def _presample_arg(presample):
    return None if presample is None else float(presample)


def _master_seed(random_state):
    """The master seed: ``random_state`` itself when it is an int, 0 for None (fits are
    deterministic), one draw from a ``RandomState`` instance."""
    rs = random_state
    if rs is None:
        return 0
    if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
        if rs < 0:
            raise ValueError(f"invalid value {rs} for random_state: expected an int >= 0")
        return int(rs)
    return int(check_random_state(rs).randint(np.iinfo(np.int32).max))


class _MixtureOfExperts(BaseEstimator):
    """What both estimators share: parameter checks, the call into Rust, the extras."""

    #: Registry names this estimator accepts for ``expert``.
    _experts = ()

    def _check_params(self):
        _check_int("n_experts", self.n_experts, 1)
        _check_choice("expert", self.expert, self._experts)
        _check_bool("gating", self.gating)
        _check_choice("init", self.init, INITS)
        _check_int("n_init", self.n_init, 1)
        _check_positive("tol", self.tol)
        _check_int("max_iter", self.max_iter, 1)
        _check_solver(self.solver, self.eta)
        _check_bool("standardize", self.standardize)
        _check_ridge(self.ridge)
        _check_choice("ungated_start", self.ungated_start, UNGATED_STARTS)
        _check_presample(self.presample, self.solver, self.eta)

    def _seed(self):
        return _master_seed(self.random_state)

    def _fit_encoded(self, X, y, expert):
        """Fits on validated C-contiguous float64 ``X`` and ``y`` (labels already encoded)."""
        fit = _core.fit(
            X,
            np.ascontiguousarray(y, dtype=np.float64),
            expert=expert,
            n_experts=int(self.n_experts),
            gating=bool(self.gating),
            init=self.init,
            n_init=int(self.n_init),
            tol=float(self.tol),
            max_iter=int(self.max_iter),
            solver=self.solver,
            eta=None if self.eta is None else float(self.eta),
            seed=self._seed(),
            standardize=bool(self.standardize),
            ridge=float(self.ridge),
            ungated_start=self.ungated_start,
            presample=_presample_arg(self.presample),
        )
        # Kept (a reference, not a copy) for certificate() and em_md_gap() without data.
        return self._adopt(fit, expert, (X, y))

    def _adopt(self, fit, expert, train):
        """Sets the fitted attributes from the native ``fit`` (in memory or over Dask
        partitions); ``train`` is the in-memory training data, or None."""
        self.model_ = fit
        self.expert_ = expert
        self.theta_ = fit.theta
        self.log_likelihood_ = fit.log_likelihood
        self.n_iter_ = fit.iterations
        self.converged_ = fit.converged
        self.termination_ = fit.termination
        self.trajectory_ = fit.trajectory
        self._train = train
        return self

    def _X(self, X):
        return validate_data(self, X, reset=False, dtype=np.float64, order="C")

    def _Xy(self, X, y):
        check_is_fitted(self)
        if X is None and y is None:
            if getattr(self, "_train", None) is None:
                raise ValueError(
                    "the training data are not kept in an unpickled or Dask-fitted "
                    "estimator: pass X and y"
                )
            return self._train
        if X is None or y is None:
            raise ValueError("pass both X and y, or neither (the training data)")
        X = self._X(X)
        return X, self._encode_y(y, len(X))

    def responsibilities(self, X, y):
        """Posterior responsibilities ``r[i, k] = P(z_i = k | x_i, y_i)``, shape (n, K)."""
        X, y = self._Xy(X, y)
        return self.model_.responsibilities(X, y)

    def certificate(self, X=None, y=None, max_iter=2000):
        """The convergence certificate of EM, as ``mdem certify`` computes it, as a dict.

        EM is re-run from the kept start (drawn as the fit drew it) to a tight tolerance
        on (X, y) -- by default the training data -- and its iterates certified: measured
        relative smoothness ``l_hat`` and strong convexity ``alpha_hat`` with respect to
        the KL mirror map, the certified rate ``predicted_rate = 1 - alpha_hat``, the
        observed rate, the missing-information rate and a ``verdict``. The ``rerun`` entry
        says how the re-run ended; ``summary`` is the library's text report.
        """
        X, y = self._Xy(X, y)
        _check_int("max_iter", max_iter, 1)
        return json.loads(self.model_.certificate(X, y, max_iter=int(max_iter)))

    def em_md_gap(self, X=None, y=None, eta=1.0, theta=None):
        """One EM step against one mirror-descent step with step ``eta`` from the same start.

        EM is mirror descent with unit step: at ``eta = 1`` the two land on the same
        parameters (``theta_gap`` and ``objective_gap`` near 1e-8 or below); at other
        steps they differ. The start is ``theta`` (the layout of ``theta_``, in the
        data's units) or, by default, the kept start of the fit.
        """
        X, y = self._Xy(X, y)
        _check_positive("eta", eta)
        theta = _theta_like(theta, self.theta_)
        return json.loads(self.model_.em_md_gap(X, y, eta=float(eta), theta=theta))

    def summary(self):
        """The fitted model as a dict: settings, log-likelihood, termination, every
        start's log-likelihood, iterations and EM seconds, a gated fit's ungated fit
        (``ungated_fit``: its log-likelihood, which the fit never ends below, its seconds
        and whether the start from its optimum ran), the parameters of every expert and
        of the gate (in the data's units)."""
        check_is_fitted(self)
        return json.loads(self.model_.summary_json())

    def log_likelihood(self, X, y):
        """Total log-likelihood ``sum_i log p(y_i | x_i)`` of (X, y) under the fit."""
        X, y = self._Xy(X, y)
        return float(np.sum(self.model_.log_predictive_density(X, y)))


class MixtureOfExpertsRegressor(RegressorMixin, _MixtureOfExperts):
    """Mixture of regression experts with a softmax gate, fitted by EM.

    Parameters
    ----------
    n_experts : int, default=2
        Number of experts K.
    expert : {"linear", "poisson"}, default="linear"
        Linear-Gaussian experts (each with its own variance) or Poisson experts (log link;
        the target must be counts).
    gating : bool, default=True
        Softmax gate on the features; False gives constant mixing weights (a mixture of
        regressions).
    init : {"auto", "random", "subset", "kmeans", "short-em"}, default="auto"
        How each seeded start is drawn (as ``mdem fit --init``).
    n_init : int, default=1
        Number of seeded starts; the best is kept. A gated fit also fits the ungated
        model (by EM) and never ends below it (see ``ungated_start``).
    tol : float, default=1e-8
        Relative tolerance on the change of the average negative log-likelihood.
    max_iter : int, default=500
        Iteration limit per start.
    solver : {"em", "squarem", "anderson", "md", "newton", "gd"}, default="squarem"
        Plain EM, SQUAREM-accelerated EM (the command line's default), Anderson-accelerated
        EM (DAAREM with a monotone safeguard), mirror descent
        (step 1/L-hat measured along the run, or the fixed step ``eta``), Newton's
        method on the log-likelihood with the observed information (EM as the
        safeguard), or gradient descent with Armijo backtracking.
    eta : float or None, default=None
        Fixed mirror-descent step (``solver="md"`` only).
    standardize : bool, default=True
        Run the solvers on standardised columns (an exact reparametrisation; the
        parameters are reported in the data's units).
    ridge : float, default=0.0
        Ridge penalty ``ridge / 2 * ||b||^2`` on every expert's and the gate's
        coefficients (on the columns the solvers run on, so standardised by default), as
        ``mdem fit --ridge``: the fit maximises the penalised log-likelihood. It gives
        separable classes and saturated gates a finite optimum. ``log_likelihood_`` is
        the unpenalised log-likelihood at that optimum; ``trajectory_`` is the penalised
        one. ``solver="md"`` refuses a ridge.
    ungated_start : {"when-below", "always", "off"}, default="when-below"
        When a gated fit also runs one start from the ungated optimum (with the chosen
        solver), as ``mdem fit --ungated-start``: only when no seeded start ended at or
        above the ungated fit's log-likelihood, always, or never ("off" fits no ungated
        model and gives up the guarantee). ``summary()["ungated_fit"]`` says what
        happened.
    presample : int, float or None, default=None
        Fit every start on a random sample of this many rows (an int) or this fraction
        of them (a float in (0, 1)), then run the solver on all rows from the best, to
        the same tolerance, as ``mdem fit --presample``: for large data most iterations
        run on the sample. The result is a fixed point on all rows; a gated fit's
        comparison with the ungated model is made on the sample (``ungated_fit`` is
        None). Not with ``solver="gd"`` or a fixed ``eta``.
    random_state : int, RandomState instance or None, default=None
        Master seed of the starts; None means seed 0 (fits are deterministic).

    Attributes
    ----------
    model_ : mdem._core.Fit
        The fitted model (predictions, certificate, JSON).
    theta_ : ndarray
        Fitted parameters, the library's layout (gate block, then one block per expert).
    log_likelihood_ : float
        Total training log-likelihood.
    n_iter_ : int
        Iterations of the kept start.
    converged_ : bool
        Whether the kept start converged.
    termination_ : str
        Why it stopped.
    trajectory_ : ndarray
        Total log-likelihood after each iteration of the kept start.
    n_features_in_ : int
        Number of features seen in ``fit``.
    """

    _experts = ("linear", "poisson")

    def __init__(
        self,
        n_experts=2,
        expert="linear",
        gating=True,
        init="auto",
        n_init=1,
        tol=1e-8,
        max_iter=500,
        solver="squarem",
        eta=None,
        standardize=True,
        ridge=0.0,
        ungated_start="when-below",
        presample=None,
        random_state=None,
    ):
        self.n_experts = n_experts
        self.expert = expert
        self.gating = gating
        self.init = init
        self.n_init = n_init
        self.tol = tol
        self.max_iter = max_iter
        self.solver = solver
        self.eta = eta
        self.standardize = standardize
        self.ridge = ridge
        self.ungated_start = ungated_start
        self.presample = presample
        self.random_state = random_state

    def fit(self, X, y):
        """Fits the mixture to features X (n, d) and real targets y (n,)."""
        self._check_params()
        X, y = validate_data(
            self, X, y, dtype=np.float64, order="C", y_numeric=True, ensure_min_samples=2
        )
        return self._fit_encoded(X, np.ascontiguousarray(y, dtype=np.float64), self.expert)

    def _encode_y(self, y, n):
        y = column_or_1d(np.asarray(y), warn=True).astype(np.float64)
        if len(y) != n:
            raise ValueError(f"X has {n} samples but y has {len(y)}")
        if not np.all(np.isfinite(y)):
            raise ValueError("Input y contains NaN or infinity.")
        return np.ascontiguousarray(y)

    def predict(self, X):
        """The mixture mean ``sum_k pi_k(x) E[y | x, z = k]``, shape (n,)."""
        check_is_fitted(self)
        return self.model_.predict_mean(self._X(X))[:, 0]


class MixtureOfExpertsClassifier(ClassifierMixin, _MixtureOfExperts):
    """Mixture of classification experts with a softmax gate, fitted by EM.

    Parameters are those of :class:`MixtureOfExpertsRegressor` except ``expert``:

    expert : {"auto", "logistic", "multinomial"}, default="auto"
        Logistic experts (two classes) or multinomial experts (any number of classes);
        "auto" picks logistic for two classes and multinomial otherwise.

    Attributes
    ----------
    classes_ : ndarray
        The class labels (sorted), in the column order of ``predict_proba``.
    expert_ : str
        The expert that was fitted.

    and those of :class:`MixtureOfExpertsRegressor`.
    """

    _experts = ("auto", "logistic", "multinomial")

    def __init__(
        self,
        n_experts=2,
        expert="auto",
        gating=True,
        init="auto",
        n_init=1,
        tol=1e-8,
        max_iter=500,
        solver="squarem",
        eta=None,
        standardize=True,
        ridge=0.0,
        ungated_start="when-below",
        presample=None,
        random_state=None,
    ):
        self.n_experts = n_experts
        self.expert = expert
        self.gating = gating
        self.init = init
        self.n_init = n_init
        self.tol = tol
        self.max_iter = max_iter
        self.solver = solver
        self.eta = eta
        self.standardize = standardize
        self.ridge = ridge
        self.ungated_start = ungated_start
        self.presample = presample
        self.random_state = random_state

    def fit(self, X, y):
        """Fits the mixture to features X (n, d) and class labels y (n,) of any type."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float64, order="C", ensure_min_samples=2)
        check_classification_targets(y)
        classes, y_enc = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                "Classifier can't train when only one class is present: "
                f"y has the single class {classes[0]!r}"
            )
        expert = self.expert
        if expert == "auto":
            expert = "logistic" if len(classes) == 2 else "multinomial"
        if expert == "logistic" and len(classes) != 2:
            raise ValueError(
                f"expert='logistic' needs exactly 2 classes, y has {len(classes)}: "
                "use expert='multinomial'"
            )
        self.classes_ = classes
        return self._fit_encoded(X, y_enc.astype(np.float64), expert)

    def _encode_y(self, y, n):
        y = column_or_1d(np.asarray(y), warn=True)
        if len(y) != n:
            raise ValueError(f"X has {n} samples but y has {len(y)}")
        known = np.isin(y, self.classes_)
        if not np.all(known):
            unseen = np.unique(y[~known])
            raise ValueError(f"y contains previously unseen labels: {unseen.tolist()}")
        return np.ascontiguousarray(np.searchsorted(self.classes_, y), dtype=np.float64)

    def predict_proba(self, X):
        """Class probabilities ``sum_k pi_k(x) P(y = c | x, z = k)``, shape (n, C),
        columns in the order of ``classes_``."""
        check_is_fitted(self)
        return self.model_.class_probs(self._X(X))

    def predict(self, X):
        """The most probable class of every row."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on (X, y); a label not seen in ``fit`` is a ValueError (the
        model gives it probability zero)."""
        check_is_fitted(self)
        self._encode_y(y, len(y) if hasattr(y, "__len__") else np.asarray(y).shape[0])
        return super().score(X, y, sample_weight=sample_weight)


#: The covariance models of :class:`GaussianMixture` (scikit-learn's names; "tied" is not
#: offered).
COVARIANCE_TYPES = ("full", "diag", "spherical")


def _check_nonnegative(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"invalid value {value} for {name}: expected a finite number >= 0")


def _precisions(covariances, covariance_type):
    """scikit-learn's ``precisions_cholesky_`` and ``precisions_`` from ``covariances_``:
    for a full covariance ``Sigma = C C^T`` (C lower), ``U = C^{-T}`` (upper) with
    ``Sigma^{-1} = U U^T``; elementwise ``1/sqrt(var)`` and ``1/var`` otherwise."""
    if covariance_type == "full":
        chol = np.linalg.cholesky(covariances)
        eye = np.eye(covariances.shape[-1])
        prec_chol = np.transpose(np.linalg.solve(chol, eye), (0, 2, 1))
        return prec_chol, prec_chol @ np.transpose(prec_chol, (0, 2, 1))
    return 1.0 / np.sqrt(covariances), 1.0 / covariances


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM (scikit-learn's ``GaussianMixture`` conventions).

    The fit is ``mdem fit --expert gaussian`` (no target) on the rows of X: components
    ``N(m_k, Sigma_k)`` with mixing weights ``pi_k``, in natural parameters (where EM is
    mirror descent without projection), the covariance floor ``reg_covar`` added to every
    fitted covariance's diagonal as scikit-learn does, seeded restarts. The solvers run on
    the raw coordinates, so every fitted attribute is in the data's units.

    Parameters
    ----------
    n_components : int, default=1
        Number of components K.
    covariance_type : {"full", "diag", "spherical"}, default="full"
        A full, diagonal or spherical (``sigma_k^2 I``) covariance per component.
    tol : float, default=1e-8
        Relative tolerance on the change of the mean negative log-likelihood (scikit-learn's
        ``tol`` is absolute, on the mean log-likelihood, default 1e-3).
    reg_covar : float, default=1e-6
        Non-negative floor added to the diagonal of every covariance.
    max_iter : int, default=500
        Iteration limit per start.
    n_init : int, default=1
        Number of seeded starts; the best is kept.
    init : {"auto", "random", "subset", "kmeans", "short-em"}, default="auto"
        How each start is drawn (as ``mdem fit --init``); "auto" starts with k-means++
        (seeding and Lloyd iterations) and cycles through the others for later starts.
    solver : {"em", "squarem", "anderson", "md", "newton", "gd"}, default="squarem"
        Plain EM, SQUAREM-accelerated EM, Anderson-accelerated EM, mirror descent (step
        1/L-hat, or ``eta``), Newton with the EM safeguard or
        gradient descent with Armijo backtracking.
    eta : float or None, default=None
        Fixed mirror-descent step (``solver="md"`` only).
    presample : int, float or None, default=None
        Fit every start on a random sample of this many rows (an int) or this fraction
        of them (a float in (0, 1)), then run the solver on all rows from the best, as
        ``mdem fit --presample`` (see :class:`MixtureOfExpertsRegressor`).
    random_state : int, RandomState instance or None, default=None
        Master seed of the starts; None means seed 0 (fits are deterministic).

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
        Mixing weights.
    means_ : ndarray of shape (n_components, n_features)
        Component means.
    covariances_ : ndarray
        Covariances (floor included), shape (n_components, n_features, n_features) for
        "full", (n_components, n_features) for "diag", (n_components,) for "spherical".
    precisions_cholesky_, precisions_ : ndarray
        scikit-learn's Cholesky factors of the precisions and the precisions, same shapes.
    converged_ : bool
        Whether the kept start converged.
    n_iter_ : int
        Iterations of the kept start.
    lower_bound_ : float
        Mean log-likelihood of the training data (for a mixture without priors it is
        scikit-learn's lower bound at convergence).
    log_likelihood_ : float
        Total training log-likelihood.
    termination_ : str
        Why the kept start stopped.
    trajectory_ : ndarray
        Total log-likelihood after each iteration of the kept start.
    theta_ : ndarray
        The library's parameters (mixing logits, then each component's natural parameters).
    model_ : mdem._core.Fit
        The native fit.
    n_features_in_ : int
        Number of features seen in ``fit``.
    """

    def __init__(
        self,
        n_components=1,
        covariance_type="full",
        tol=1e-8,
        reg_covar=1e-6,
        max_iter=500,
        n_init=1,
        init="auto",
        solver="squarem",
        eta=None,
        presample=None,
        random_state=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init = init
        self.solver = solver
        self.eta = eta
        self.presample = presample
        self.random_state = random_state

    def _check_params(self):
        _check_int("n_components", self.n_components, 1)
        if self.covariance_type == "tied":
            raise ValueError(
                "covariance_type='tied' is not supported: expected 'full', 'diag' or 'spherical'"
            )
        _check_choice("covariance_type", self.covariance_type, COVARIANCE_TYPES)
        _check_positive("tol", self.tol)
        _check_nonnegative("reg_covar", self.reg_covar)
        _check_int("max_iter", self.max_iter, 1)
        _check_int("n_init", self.n_init, 1)
        _check_choice("init", self.init, INITS)
        _check_solver(self.solver, self.eta)
        _check_presample(self.presample, self.solver, self.eta)

    def fit(self, X, y=None):
        """Fits the mixture to the rows of X (n, d); y is ignored."""
        self._check_params()
        X = validate_data(self, X, dtype=np.float64, order="C", ensure_min_samples=2)
        if X.shape[0] < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got "
                f"n_components = {self.n_components}, n_samples = {X.shape[0]}"
            )
        fit = _core.fit_gaussian_mixture(
            X,
            n_components=int(self.n_components),
            covariance_type=self.covariance_type,
            reg_covar=float(self.reg_covar),
            init=self.init,
            n_init=int(self.n_init),
            tol=float(self.tol),
            max_iter=int(self.max_iter),
            solver=self.solver,
            eta=None if self.eta is None else float(self.eta),
            seed=_master_seed(self.random_state),
            presample=_presample_arg(self.presample),
        )
        self.model_ = fit
        weights, means, covariances = fit.components()
        if self.covariance_type == "diag":
            covariances = np.ascontiguousarray(np.diagonal(covariances, axis1=1, axis2=2))
        elif self.covariance_type == "spherical":
            covariances = np.ascontiguousarray(covariances[:, 0, 0])
        self.weights_, self.means_, self.covariances_ = weights, means, covariances
        self.precisions_cholesky_, self.precisions_ = _precisions(
            covariances, self.covariance_type
        )
        self.theta_ = fit.theta
        self.log_likelihood_ = fit.log_likelihood
        self.lower_bound_ = fit.log_likelihood / X.shape[0]
        self.n_iter_ = fit.iterations
        self.converged_ = fit.converged
        self.termination_ = fit.termination
        self.trajectory_ = fit.trajectory
        # Kept (a reference, not a copy) for certificate() and em_md_gap() without data.
        self._train = X
        return self

    def _X(self, X):
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float64, order="C")

    def _X_or_train(self, X):
        """X validated, or the training data for X=None."""
        check_is_fitted(self)
        if X is None:
            if getattr(self, "_train", None) is None:
                raise ValueError("the training data are not kept in this estimator: pass X")
            return self._train
        return self._X(X)

    def predict_proba(self, X):
        """Posterior probability of each component for each row, shape (n, K)."""
        X = self._X(X)
        return self.model_.responsibilities(X)

    def responsibilities(self, X):
        """Responsibilities ``r[i, k] = P(z_i = k | x_i)``: :meth:`predict_proba`."""
        return self.predict_proba(X)

    def predict(self, X):
        """The most probable component of each row."""
        return np.argmax(self.predict_proba(X), axis=1)

    def fit_predict(self, X, y=None):
        """Fits the mixture to X and returns the most probable component of each row."""
        self.fit(X, y)
        return np.argmax(self.model_.responsibilities(self._train), axis=1)

    def score_samples(self, X):
        """Log density ``log sum_k pi_k N(x_i; m_k, Sigma_k)`` of each row, shape (n,)."""
        X = self._X(X)
        return self.model_.log_predictive_density(X)

    def score(self, X, y=None):
        """Mean log density of the rows of X."""
        return float(np.mean(self.score_samples(X)))

    def bic(self, X):
        """Bayesian information criterion ``-2 log L + p log n`` on X (lower is better)."""
        ll = self.score_samples(X)
        return float(-2 * np.sum(ll) + self.model_.n_params * np.log(len(ll)))

    def aic(self, X):
        """Akaike information criterion ``-2 log L + 2 p`` on X (lower is better)."""
        ll = self.score_samples(X)
        return float(-2 * np.sum(ll) + 2 * self.model_.n_params)

    def certificate(self, X=None, max_iter=2000):
        """The convergence certificate of EM on X (default: the training data), as a dict:
        see :meth:`MixtureOfExpertsRegressor.certificate`."""
        X = self._X_or_train(X)
        _check_int("max_iter", max_iter, 1)
        return json.loads(self.model_.certificate(X, None, max_iter=int(max_iter)))

    def em_md_gap(self, X=None, eta=1.0, theta=None):
        """One EM step against one mirror-descent step with step ``eta`` from the same start
        (default: the kept start of the fit; ``theta`` in the layout of ``theta_``)."""
        X = self._X_or_train(X)
        _check_positive("eta", eta)
        theta = _theta_like(theta, self.theta_)
        return json.loads(self.model_.em_md_gap(X, None, eta=float(eta), theta=theta))

    def summary(self):
        """The fitted model as a dict (settings, log-likelihood, termination, each
        component's mean and covariance entries, the mixing weights)."""
        check_is_fitted(self)
        return json.loads(self.model_.summary_json())
