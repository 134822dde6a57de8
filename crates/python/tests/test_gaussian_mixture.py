"""mdem.GaussianMixture: the command line's fit, scikit-learn's optimum, independent
densities, the fitted attributes' shapes, and bad inputs."""

import json
import pickle
import subprocess

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn import mixture

from conftest import two_regimes
from mdem import GaussianMixture, MixtureOfExpertsRegressor, _core
from test_cli_equality import assert_close, mdem_bin

COVARIANCES = ("full", "diag", "spherical")


def blobs(n=600, seed=0):
    """Three well-separated clusters in 3 dimensions with correlated covariances and
    weights 0.5, 0.3, 0.2."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, -4.0, 2.0], [-5.0, 6.0, 7.0]])
    shapes = [
        np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, -0.2, 0.3]]),
        np.diag([0.5, 1.2, 0.8]),
        np.array([[0.7, 0.0, 0.0], [-0.3, 0.5, 0.0], [0.2, 0.1, 0.9]]),
    ]
    z = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    return centres[z] + np.stack([shapes[k] @ rng.normal(size=3) for k in z])


@pytest.fixture(scope="module")
def data():
    return blobs()


def cli_gmm(tmp_path, X, args):
    path = tmp_path / "points.csv"
    with open(path, "w") as f:
        f.write(",".join(f"x{j}" for j in range(X.shape[1])) + "\n")
        for row in X:
            f.write(",".join(repr(float(v)) for v in row) + "\n")
    out = subprocess.run(
        [mdem_bin(), "fit", str(path), "--expert", "gaussian", "--json", "--quiet", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    "covariance_type,solver,accel",
    [("full", "squarem", "squarem"), ("diag", "squarem", "squarem"), ("full", "em", "none"),
     ("spherical", "md", "md")],
)
def test_python_fit_equals_cli_fit(tmp_path, data, covariance_type, solver, accel):
    est = GaussianMixture(
        n_components=3,
        covariance_type=covariance_type,
        n_init=2,
        solver=solver,
        max_iter=300,
        random_state=7,
    ).fit(data)
    cli = cli_gmm(
        tmp_path,
        data,
        ["--experts", "3", "--covariance", covariance_type, "--n-init", "2", "--seed", "7",
         "--accel", accel, "--max-iter", "300"],
    )
    assert cli["iterations"] == est.n_iter_
    assert cli["termination"] == est.termination_
    assert_close(est.log_likelihood_, cli["log_likelihood"])
    assert_close(est.theta_, cli["parameters"]["theta"])
    assert_close(est.weights_, cli["parameters"]["gate"]["weights"])
    for k, comp in enumerate(cli["parameters"]["experts"]):
        scalars = {s["name"]: s["value"] for s in comp["scalars"]}
        assert_close(est.means_[k], [scalars[f"mean_{j}"] for j in range(3)])
    assert est.lower_bound_ == est.log_likelihood_ / len(data)


@pytest.mark.parametrize("covariance_type", COVARIANCES)
def test_the_optimum_is_scikit_learns(data, covariance_type):
    ours = GaussianMixture(
        n_components=3, covariance_type=covariance_type, tol=1e-12, max_iter=2000,
        init="kmeans", solver="em", random_state=0,
    ).fit(data)
    ref = mixture.GaussianMixture(
        n_components=3, covariance_type=covariance_type, tol=1e-12, max_iter=2000,
        init_params="kmeans", random_state=0,
    ).fit(data)
    assert ours.converged_ and ref.converged_
    n = len(data)
    assert ours.log_likelihood_ == pytest.approx(ref.score(data) * n, rel=1e-6)
    assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-6)
    a, b = np.argsort(ours.means_[:, 0]), np.argsort(ref.means_[:, 0])
    np.testing.assert_allclose(ours.weights_[a], ref.weights_[b], rtol=1e-5)
    np.testing.assert_allclose(ours.means_[a], ref.means_[b], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.covariances_[a], ref.covariances_[b], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        ours.precisions_cholesky_[a], ref.precisions_cholesky_[b], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(ours.precisions_[a], ref.precisions_[b], rtol=1e-4, atol=1e-6)
    assert ours.bic(data) == pytest.approx(ref.bic(data), rel=1e-6)
    assert ours.aic(data) == pytest.approx(ref.aic(data), rel=1e-6)
    # Same clustering, up to the labels.
    agree = np.mean(a.argsort()[ours.predict(data)] == b.argsort()[ref.predict(data)])
    assert agree == 1.0


@pytest.mark.parametrize("covariance_type", COVARIANCES)
def test_densities_and_probabilities_equal_scipys_at_the_fitted_parameters(data, covariance_type):
    est = GaussianMixture(n_components=3, covariance_type=covariance_type, random_state=1).fit(data)
    K, q = est.means_.shape
    cov = {
        "full": lambda k: est.covariances_[k],
        "diag": lambda k: np.diag(est.covariances_[k]),
        "spherical": lambda k: est.covariances_[k] * np.eye(q),
    }[covariance_type]
    joint = np.stack(
        [np.log(est.weights_[k]) + multivariate_normal(est.means_[k], cov(k)).logpdf(data)
         for k in range(K)],
        axis=1,
    )
    dens = logsumexp(joint, axis=1)
    np.testing.assert_allclose(est.score_samples(data), dens, rtol=1e-10)
    np.testing.assert_allclose(est.predict_proba(data), np.exp(joint - dens[:, None]), atol=1e-10)
    assert est.score(data) == pytest.approx(np.mean(dens), rel=1e-10)
    assert est.log_likelihood_ == pytest.approx(np.sum(dens), rel=1e-10)
    np.testing.assert_array_equal(est.predict(data), np.argmax(joint, axis=1))
    np.testing.assert_array_equal(est.responsibilities(data), est.predict_proba(data))
    # scikit-learn's precision conventions.
    shape = {"full": (K, q, q), "diag": (K, q), "spherical": (K,)}[covariance_type]
    assert est.covariances_.shape == est.precisions_cholesky_.shape == shape
    assert est.precisions_.shape == shape
    if covariance_type == "full":
        for k in range(K):
            u = est.precisions_cholesky_[k]
            assert np.allclose(u, np.triu(u))
            np.testing.assert_allclose(u @ u.T @ est.covariances_[k], np.eye(q), atol=1e-10)
    else:
        np.testing.assert_allclose(est.precisions_ * est.covariances_, 1.0, rtol=1e-12)
    assert est.weights_.shape == (K,) and est.weights_.sum() == pytest.approx(1.0, abs=1e-12)
    assert est.n_features_in_ == q


def test_extras_pickle_and_fit_predict(data):
    est = GaussianMixture(n_components=3, solver="em", random_state=0).fit(data)
    traj = est.trajectory_
    assert len(traj) == est.n_iter_ >= 2
    assert np.all(np.diff(traj) >= -1e-9 * np.abs(traj[:-1]))
    assert traj[-1] == pytest.approx(est.log_likelihood_, rel=1e-12)
    cert = est.certificate()
    assert cert["verdict"] in ("Certified", "Inconclusive", "Violated")
    assert cert["l_hat"] <= 1.0 + 1e-6
    assert cert["rerun"]["log_likelihood"] >= est.log_likelihood_ - 1e-6
    # EM's M-step adds the floor reg_covar (a prior on the precision); the mirror-descent
    # step solves the likelihood alone: they differ by about the floor.
    floored = est.em_md_gap()
    assert 1e-9 < floored["theta_gap"] < 1e-4 and floored["em_inner"]["converged"]
    # Without the floor, EM is mirror descent with unit step.
    exact = GaussianMixture(n_components=3, reg_covar=0.0, solver="em", random_state=0).fit(data)
    gap = exact.em_md_gap()
    assert gap["em_step"] > 1e-3
    assert gap["theta_gap"] < 1e-8 and gap["objective_gap"] < 1e-10
    assert gap["md_inner"]["converged"]
    assert exact.em_md_gap(eta=0.5)["theta_gap"] > 1e-3
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.score_samples(data), est.score_samples(data))
    np.testing.assert_array_equal(back.covariances_, est.covariances_)
    assert back.model_.log_likelihood == est.model_.log_likelihood
    labels = GaussianMixture(n_components=3, solver="em", random_state=0).fit_predict(data)
    np.testing.assert_array_equal(labels, est.predict(data))
    assert "components" in repr(est.model_)
    s = est.summary()
    assert s["expert"]["name"] == "gaussian" and len(s["experts"]) == 3


@pytest.mark.parametrize("solver,eta", [("md", None), ("md", 0.7), ("gd", None)])
def test_every_solver_runs(data, solver, eta):
    ref = GaussianMixture(n_components=3, solver="em", tol=1e-10, random_state=3).fit(data)
    est = GaussianMixture(
        n_components=3, solver=solver, eta=eta, max_iter=3000, random_state=3
    ).fit(data)
    assert np.isfinite(est.log_likelihood_) and len(est.trajectory_) == est.n_iter_
    assert est.log_likelihood_ <= ref.log_likelihood_ + 1e-6 * abs(ref.log_likelihood_)
    if solver == "md":
        assert est.log_likelihood_ == pytest.approx(ref.log_likelihood_, rel=1e-6)


def test_bad_inputs_are_value_errors_naming_the_problem(data):
    cases = [
        (dict(covariance_type="tied"), ValueError, "covariance_type='tied' is not supported"),
        (dict(covariance_type="bogus"), ValueError, "covariance_type"),
        (dict(n_components=0), ValueError, "n_components"),
        (dict(n_components=1.5), TypeError, "n_components must be an int"),
        (dict(reg_covar=-1e-3), ValueError, "reg_covar"),
        (dict(reg_covar=np.nan), ValueError, "reg_covar"),
        (dict(tol=0.0), ValueError, "tol"),
        (dict(max_iter=0), ValueError, "max_iter"),
        (dict(n_init=0), ValueError, "n_init"),
        (dict(init="k-means++"), ValueError, "init"),
        (dict(solver="adam"), ValueError, "solver"),
        (dict(eta=0.5), ValueError, "eta=0.5 applies to solver='md' only"),
        (dict(random_state=-2), ValueError, "random_state"),
    ]
    for params, err, msg in cases:
        est = GaussianMixture(**params)  # constructing never raises
        with pytest.raises(err, match=msg):
            est.fit(data)
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(n_components=5).fit(data[:4])
    with pytest.raises(ValueError, match="20 samples but the model has 29 parameters"):
        GaussianMixture(n_components=3).fit(data[:20])
    bad = data.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        GaussianMixture().fit(bad)
    with pytest.raises(ValueError, match="Expected 2D array"):
        GaussianMixture().fit(data[:, 0])
    est = GaussianMixture(n_components=2, random_state=0).fit(data)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        est.predict(data[:, :2])
    with pytest.raises(ValueError, match="Input X contains infinity"):
        est.score_samples(np.where(bad == bad, bad, np.inf))
    # The native module: what the estimator converts or refuses first.
    kw = dict(n_components=2)
    with pytest.raises(ValueError, match="invalid value 'tied' for covariance_type"):
        _core.fit_gaussian_mixture(data, covariance_type="tied", **kw)
    with pytest.raises(ValueError, match="reg_covar"):
        _core.fit_gaussian_mixture(data, reg_covar=-1.0, **kw)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.fit_gaussian_mixture(np.asfortranarray(data), **kw)
    with pytest.raises(ValueError, match="row Some\\(4\\).*NaN or infinite"):
        _core.fit_gaussian_mixture(bad, **kw)
    with pytest.raises(ValueError, match="pass no y"):
        est.model_.responsibilities(data, np.zeros(len(data)))
    with pytest.raises(ValueError, match="predicts no target"):
        est.model_.predict_mean(data)
    X, y = two_regimes(n=100)
    reg = MixtureOfExpertsRegressor(random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="not a Gaussian mixture"):
        reg.model_.components()
    with pytest.raises(ValueError, match="needs the targets y"):
        reg.model_.responsibilities(X)
