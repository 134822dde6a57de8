"""Fits over Dask partitions: ``mdem.dask.fit(estimator, X, y)``.

The rows stay where Dask keeps them (a ``dask.array`` or a dask DataFrame partitioned
by rows); only sums over rows travel. A fit is the in-memory estimator's EM, round by
round, on the library's shard statistics (``em_as_md::shard``):

1. **Survey** (one pass): the rows, each column's mean and variance (merged in partition
   order by Chan's update: the estimators' standardisation, computed over every row), the
   classes of a classifier's labels; NaN and infinite values are refused here, naming
   the row.
2. **Start**: a clone of the estimator fitted in memory on a seeded random sample of
   ``sample_rows`` rows (every restart and start strategy of ``fit``), or a fitted
   estimator given as ``start``.
3. **Exact EM over the partitions** from that fit, through the library's executor with
   the estimator's ``solver`` (``"em"``, ``"squarem"`` or ``"anderson"``), ``tol`` and ``max_iter``:
   every E-step is one Dask round, and so is every Newton round of the M-step of a
   softmax gate or of logistic, multinomial or Poisson experts. A round maps
   :meth:`mdem._core.ShardModel.accumulate` over the partitions and merges the
   statistics in a fixed tree over the partitions in order (``split_every`` at a node),
   so a fit gives the same bits on every run and with any scheduler.
4. **Summaries** (one pass): the log-likelihood and classification entropy at the fit.

The result is the estimator itself, fitted: ``predict``, ``score``, ``summary()`` work as
after ``estimator.fit``; ``certificate()``, ``responsibilities`` and ``em_md_gap`` need
in-memory ``X, y`` passed to them (the training data are not kept), and the certificate
re-runs EM from the start the Dask fit ran from.

Persist the collections first when the cluster can hold them (``X, y =
dask.persist(X, y)``); otherwise every round reads the partitions again from their
source, as ``mdem fit --stream`` re-reads its file.
"""

import numbers
import time

import dask
import dask.array as da
import numpy as np
from sklearn.base import clone
from sklearn.utils.multiclass import check_classification_targets

from mdem import _core
from mdem._estimators import MixtureOfExpertsClassifier, _MixtureOfExperts

__all__ = ["fit", "DEFAULT_SAMPLE_ROWS", "DEFAULT_SPLIT_EVERY"]

#: Rows of the random sample the start is fitted on (as ``mdem fit --sample-rows``).
DEFAULT_SAMPLE_ROWS = 100_000
#: Statistics merged at one node of a round's merge tree.
DEFAULT_SPLIT_EVERY = 8


def fit(estimator, X, y, *, sample_rows=DEFAULT_SAMPLE_ROWS, start=None,
        split_every=DEFAULT_SPLIT_EVERY, scheduler=None):
    """Fits ``estimator`` (a :class:`~mdem.MixtureOfExpertsRegressor` or
    :class:`~mdem.MixtureOfExpertsClassifier`) to rows held by Dask, and returns it.

    Parameters
    ----------
    estimator : mdem estimator
        Its parameters are the fit's: ``solver`` must be ``"em"``, ``"squarem"`` or ``"anderson"``
        (mirror descent and gradient descent need the rows in memory).
    X : dask array of shape (n, d), or dask DataFrame
        Partitioned by rows (column chunks are joined).
    y : dask array of shape (n,), or dask Series / one-column DataFrame
        Its chunks are aligned with X's rows.
    sample_rows : int, default=100_000
        Rows of the seeded random sample (``random_state``) the start is fitted on in
        memory; all rows when there are fewer.
    start : fitted mdem estimator or None
        Start from this fit's ``theta_`` instead (a warm start: an in-memory fit, or an
        earlier Dask fit); it must be of the same model (experts, features, a
        classifier's ``classes_``). No sample is drawn.
    split_every : int, default=8
        Statistics merged by one task of a round's merge tree.
    scheduler : str or None
        Passed to ``dask.compute`` (None: Dask's default, e.g. the active
        ``distributed.Client``).

    Returns
    -------
    estimator
        Fitted; ``model_.solver`` says "EM over Dask partitions" (or "EM accelerated
        by squarem over Dask partitions").

    Raises
    ------
    ValueError
        With the library's message for bad data (naming the partition and its rows) or a
        failed fit; for a solver other than "em", "squarem" and "anderson".
    TypeError
        For inputs that are not Dask collections, or an estimator not of ``mdem``.
    """
    if not isinstance(estimator, _MixtureOfExperts):
        raise TypeError(
            "estimator must be a MixtureOfExpertsRegressor or MixtureOfExpertsClassifier, "
            f"got {type(estimator).__name__}"
        )
    estimator._check_params()
    if estimator.solver not in ("em", "squarem", "anderson"):
        raise ValueError(
            f"solver={estimator.solver!r} needs the rows in memory; "
            "mdem.dask.fit runs 'em', 'squarem' or 'anderson'"
        )
    for name, value in (("sample_rows", sample_rows), ("split_every", split_every)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if sample_rows < 1:
        raise ValueError(f"invalid value {sample_rows} for sample_rows: expected an int >= 1")
    if split_every < 2:
        raise ValueError(f"invalid value {split_every} for split_every: expected an int >= 2")
    clock = time.perf_counter()
    classify = isinstance(estimator, MixtureOfExpertsClassifier)
    compute = _computer(scheduler)
    seed = estimator._seed()

    X, names = _features(X)
    y = _target(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    if X.shape[1] < 1:
        raise ValueError("X has no feature columns")
    if y.chunks[0] != X.chunks[0]:
        y = y.rechunk({0: X.chunks[0]})
    parts = _partitions(X, y)
    if not parts:
        raise ValueError("X has no rows")

    # 1. Survey.
    n, mean, var, labels = _survey(parts, classify, compute)
    expert, classes = _targets(estimator, labels, classify)

    model = _core.ShardModel(
        expert,
        int(estimator.n_experts),
        int(X.shape[1]),
        bool(estimator.gating),
        len(classes) if expert == "multinomial" else None,
        mean if estimator.standardize else None,
        var if estimator.standardize else None,
        ridge=float(estimator.ridge),
    )
    if n < model.n_params:
        raise ValueError(
            f"{n} samples but the model has {model.n_params} parameters; expected at least "
            "as many samples as parameters: use fewer experts or features"
        )

    # 2. Start: the estimator's own fit on a sample in memory (or the fit given).
    if start is None:
        start = _sample_fit(estimator, X, y, n, sample_rows, seed, expert, classes, compute)
        start_name = "sample fit"
    else:
        _check_start(start, estimator, expert, classes)
        start_name = "given fit"

    # 3. EM over the partitions, one Dask round per E-step and per Newton round.
    def run_round(round_bytes):
        stats = [
            dask.delayed(_accumulate, pure=False)(model, round_bytes, p.x, p.y, classes, p.where)
            for p in parts
        ]
        while len(stats) > 1:
            stats = [
                dask.delayed(_merge, pure=False)(model, *stats[i:i + split_every])
                for i in range(0, len(stats), split_every)
            ]
        (merged,) = compute(stats[0])
        return merged

    # 4. Summaries at the fit, summed in partition order.
    def summarise(round_bytes):
        out = compute(*[
            dask.delayed(_summaries, pure=False)(model, round_bytes, p.x, p.y, classes, p.where)
            for p in parts
        ])
        rows, ll, entropy = 0, 0.0, 0.0
        for r, l, h in out:
            rows, ll, entropy = rows + r, ll + l, entropy + h
        return rows, ll, entropy

    native = model.fit(
        run_round,
        summarise,
        np.ascontiguousarray(start.theta_, dtype=np.float64),
        solver=estimator.solver,
        tol=float(estimator.tol),
        max_iter=int(estimator.max_iter),
        init=estimator.init,
        n_init=int(estimator.n_init),
        seed=seed,
        start_seconds=time.perf_counter() - clock,
        start_name=start_name,
    )
    estimator._adopt(native, expert, None)
    estimator.n_features_in_ = int(X.shape[1])
    if names is not None and all(isinstance(c, str) for c in names):
        estimator.feature_names_in_ = np.asarray(names, dtype=object)
    elif hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_
    if classify:
        estimator.classes_ = classes
    return estimator


class _Partition:
    """One row block: its first row, its two delayed arrays and the words naming it in
    an error. Tasks take the delayed arrays as arguments (Dask computes those, not
    attributes of an object)."""

    __slots__ = ("first", "x", "y", "where")

    def __init__(self, index, first, rows, x, y):
        self.first, self.x, self.y = first, x, y
        self.where = f"partition {index} (rows {first}..{first + rows - 1})"


def _sample_fit(estimator, X, y, n, sample_rows, seed, expert, classes, compute):
    """A clone of ``estimator`` fitted in memory on a seeded sample of the rows."""
    idx = _sample_index(n, sample_rows, seed)
    if idx is None:
        Xs, ys = compute(X, y)
    else:
        Xs, ys = compute(X[idx], y[idx])
    start = clone(estimator).set_params(random_state=seed)
    if classes is not None:
        start.set_params(expert=expert)
    try:
        start.fit(np.asarray(Xs), np.asarray(ys))
    except ValueError as e:
        raise ValueError(f"the start's fit on a sample of {len(Xs)} rows: {e}") from e
    if classes is not None and not np.array_equal(start.classes_, classes):
        raise ValueError(
            f"the sample of {len(Xs)} rows holds {len(start.classes_)} of the "
            f"{len(classes)} classes of y: pass a larger sample_rows"
        )
    return start


def _check_start(start, estimator, expert, classes):
    """A given start is a fitted estimator of the same kind, expert and classes (its
    length is checked natively against the model)."""
    if type(start) is not type(estimator) or not hasattr(start, "theta_"):
        raise TypeError(
            f"start must be a fitted {type(estimator).__name__}, got {type(start).__name__}"
        )
    if start.expert_ != expert:
        raise ValueError(f"start has {start.expert_} experts, the fit {expert} experts")
    if classes is not None and not np.array_equal(start.classes_, classes):
        raise ValueError(
            f"start was fitted on the classes {start.classes_.tolist()}, "
            f"y has {classes.tolist()}"
        )


def _computer(scheduler):
    if scheduler is None:
        return dask.compute
    return lambda *args: dask.compute(*args, scheduler=scheduler)


def _features(X):
    """X as a 2-D dask array with one column block, and its column names if any."""
    names = None
    if hasattr(X, "to_dask_array") and hasattr(X, "columns"):
        names = list(X.columns)
        X = X.to_dask_array(lengths=True)
    if not isinstance(X, da.Array):
        raise TypeError(
            "X must be a dask array or a dask DataFrame (fit numpy arrays with "
            f"estimator.fit), got {type(X).__name__}"
        )
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, found {X.ndim} dimensions")
    if any(np.isnan(c) for c in X.chunks[0]):
        X = X.compute_chunk_sizes()
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    return X, names


def _target(y):
    """y as a 1-D dask array."""
    if hasattr(y, "to_dask_array"):
        y = y.to_dask_array(lengths=True)
    if not isinstance(y, da.Array):
        raise TypeError(
            f"y must be a dask array or a dask Series, got {type(y).__name__}"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, found shape {y.shape}")
    if any(np.isnan(c) for c in y.chunks[0]):
        y = y.compute_chunk_sizes()
    return y


def _partitions(X, y):
    """The non-empty row blocks of X and y, in order."""
    xs = X.to_delayed().ravel()
    ys = y.to_delayed().ravel()
    out, first = [], 0
    for i, (rows, xp, yp) in enumerate(zip(X.chunks[0], xs, ys)):
        if rows > 0:
            out.append(_Partition(i, first, int(rows), xp, yp))
        first += int(rows)
    return out


def _sample_index(n, m, seed):
    """The sorted rows of the start's sample (``m`` of ``n``, seeded), None for all."""
    if m >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))


def _survey(parts, classify, compute):
    """Rows, column means and population variances (Chan's update in partition order),
    and the labels (a classifier's classes, or a regressor's target range)."""
    out = compute(*[
        dask.delayed(_survey_part, pure=False)(p.x, p.y, p.first, classify) for p in parts
    ])
    n, mean, m2 = 0, None, None
    for rows, s, q, _ in out:
        m = s / rows
        if mean is None:
            n, mean, m2 = rows, m, q
            continue
        delta = m - mean
        total = n + rows
        mean = mean + delta * (rows / total)
        m2 = m2 + q + delta * delta * (n * rows / total)
        n = total
    if classify:
        labels = np.unique(np.concatenate([o[3] for o in out]))
    else:
        labels = (min(o[3][0] for o in out), max(o[3][1] for o in out))
    return n, mean.tolist(), (m2 / n).tolist(), labels


def _survey_part(x, y, first, classify):
    x = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"Input X contains NaN or infinity: row {first + i}, column {j}")
    rows = x.shape[0]
    s = x.sum(axis=0)
    q = ((x - s / rows) ** 2).sum(axis=0)
    y = np.asarray(y)
    if classify:
        return rows, s, q, np.unique(y)
    y = y.astype(np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        raise ValueError(f"Input y contains NaN or infinity: row {first + np.argmax(bad)}")
    return rows, s, q, (float(y.min()), float(y.max()))


def _targets(estimator, labels, classify):
    """The expert to fit and a classifier's sorted classes (None for a regressor),
    with the estimators' checks."""
    if not classify:
        lo, hi = labels
        if lo == hi:
            raise ValueError(f"the target is constant ({lo} in every row): nothing to fit")
        return estimator.expert, None
    check_classification_targets(labels)
    if len(labels) < 2:
        raise ValueError(
            "Classifier can't train when only one class is present: "
            f"y has the single class {labels[0]!r}"
        )
    expert = estimator.expert
    if expert == "auto":
        expert = "logistic" if len(labels) == 2 else "multinomial"
    if expert == "logistic" and len(labels) != 2:
        raise ValueError(
            f"expert='logistic' needs exactly 2 classes, y has {len(labels)}: "
            "use expert='multinomial'"
        )
    return expert, labels


def _arrays(part_x, part_y, classes):
    """A partition's X and y as the native side takes them (classes encoded 0..C-1)."""
    x = np.ascontiguousarray(part_x, dtype=np.float64)
    if classes is None:
        y = np.ascontiguousarray(np.asarray(part_y, dtype=np.float64).ravel())
    else:
        y = np.ascontiguousarray(np.searchsorted(classes, np.asarray(part_y)), dtype=np.float64)
    return x, y


def _accumulate(model, round_bytes, x, y, classes, where):
    # Runs on a worker, with the partition's arrays computed.
    try:
        x, y = _arrays(x, y, classes)
        return model.accumulate(round_bytes, x, y)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _merge(model, *stats):
    return model.merge(list(stats))


def _summaries(model, round_bytes, x, y, classes, where):
    try:
        x, y = _arrays(x, y, classes)
        return model.summaries(round_bytes, x, y)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
