"""mdem.dask: EM over Dask partitions against the in-memory fit, shard bytes, errors.

The cluster is a ``distributed.LocalCluster`` of two worker processes (one thread each):
every round's statistics are pickled bytes crossing processes, and the ``ShardModel``
travels by its ``__reduce__``.
"""

import itertools
import pickle

import dask
import dask.array as da
import numpy as np
import pytest

from conftest import counts, two_regimes
from mdem import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor, _core
import mdem.dask as mdask

distributed = pytest.importorskip("distributed")

#: Both fits stop at this relative change of L, so both reach the optimum to ~1e-12.
TIGHT = dict(tol=1e-12, max_iter=5000, random_state=0)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def gated_classes(n=3000, seed=1):
    """Binary labels from two logistic experts (logits +-(2 x0 + 1)) under a sharp gate
    sigmoid(8 x1): overlapping classes, a finite optimum, and EM that converges in a few
    SQUAREM iterations (each some 30 Dask rounds: the gate's and the experts' Newton
    rounds)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    z = rng.uniform(size=n) < 1 / (1 + np.exp(-8 * X[:, 1]))
    logit = np.where(z, 2.0 * X[:, 0] + 1.0, -2.0 * X[:, 0] - 1.0)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def chunked(X, y, rows):
    return da.from_array(X, chunks=(rows, X.shape[1])), da.from_array(y, chunks=rows)


def assert_same_mixture(a, b, X, y, atol=1e-6):
    """The two fits give the same responsibilities, up to a relabelling of the experts
    (a fit from another start may number them otherwise)."""
    ra, rb = a.responsibilities(X, y), b.responsibilities(X, y)
    best = min(
        (np.abs(ra[:, list(p)] - rb).max(), p)
        for p in itertools.permutations(range(ra.shape[1]))
    )
    assert best[0] < atol, best


@pytest.fixture(scope="module")
def linear():
    X, y = two_regimes(n=4000, seed=5)
    mem = MixtureOfExpertsRegressor(n_experts=2, solver="em", **TIGHT).fit(X, y)
    return X, y, mem


def test_gated_linear_over_a_cluster_reaches_the_in_memory_optimum(client, linear):
    X, y, mem = linear
    Xd, yd = dask.persist(*chunked(X, y, 1000))
    est = mdask.fit(
        MixtureOfExpertsRegressor(n_experts=2, solver="em", **TIGHT), Xd, yd, sample_rows=400
    )
    assert est is not None and est.converged_
    assert est.model_.solver == "EM over Dask partitions"
    assert est.log_likelihood_ == pytest.approx(mem.log_likelihood_, rel=1e-10)
    # The same optimum, not only the same value (up to the experts' labels).
    assert_same_mixture(est, mem, X, y)
    np.testing.assert_allclose(est.predict(X), mem.predict(X), rtol=0, atol=1e-6)
    assert est.score(X, y) == pytest.approx(mem.score(X, y), abs=1e-8)
    assert est.n_features_in_ == 2
    assert len(est.trajectory_) == est.n_iter_ >= 1
    # The certificate re-runs EM in memory from the start the Dask fit ran from.
    with pytest.raises(ValueError, match="Dask-fitted estimator: pass X and y"):
        est.certificate()
    cert = est.certificate(X, y)
    assert cert["rerun"]["converged"]
    assert cert["rerun"]["log_likelihood"] == pytest.approx(mem.log_likelihood_, rel=1e-10)
    assert cert["rerun"]["relative_distance_to_fit"] < 1e-5
    # The fitted estimator pickles with its start.
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(X[:50]), est.predict(X[:50]))
    assert again.certificate(X, y)["rerun"]["iterations"] == cert["rerun"]["iterations"]


def test_gated_logistic_over_a_cluster_reaches_the_in_memory_optimum(client):
    X, y = gated_classes()
    labels = np.array(["no", "yes"])[y]
    mem = MixtureOfExpertsClassifier(n_experts=2, solver="squarem", **TIGHT).fit(X, labels)
    Xd, yd = dask.persist(*chunked(X, labels, 700))
    est = mdask.fit(
        MixtureOfExpertsClassifier(n_experts=2, solver="squarem", **TIGHT),
        Xd,
        yd,
        sample_rows=600,
    )
    assert est.converged_ and est.expert_ == "logistic"
    assert est.model_.solver == "EM accelerated by squarem over Dask partitions"
    np.testing.assert_array_equal(est.classes_, ["no", "yes"])
    assert est.log_likelihood_ == pytest.approx(mem.log_likelihood_, rel=1e-10)
    assert_same_mixture(est, mem, X, labels)
    np.testing.assert_allclose(est.predict_proba(X), mem.predict_proba(X), rtol=0, atol=1e-5)
    assert est.score(X, labels) == pytest.approx(mem.score(X, labels))


def test_a_ridged_fit_over_a_cluster_reaches_the_in_memory_ridged_optimum(client):
    # The same penalised objective over partitions as in memory (the ridge travels with
    # the ShardModel to the workers).
    X, y = gated_classes(n=2000)
    mem = MixtureOfExpertsClassifier(n_experts=2, solver="squarem", ridge=3.0, **TIGHT)
    mem.fit(X, y)
    est = mdask.fit(
        MixtureOfExpertsClassifier(n_experts=2, solver="squarem", ridge=3.0, **TIGHT),
        *chunked(X, y, 500),
        sample_rows=500,
    )
    assert est.converged_
    assert est.log_likelihood_ == pytest.approx(mem.log_likelihood_, rel=1e-9)
    assert est.trajectory_[-1] == pytest.approx(mem.trajectory_[-1], rel=1e-9)
    assert_same_mixture(est, mem, X, y, atol=1e-5)
    free = MixtureOfExpertsClassifier(n_experts=2, solver="squarem", **TIGHT).fit(X, y)
    # The ridge is really applied: the penalised optimum is another point.
    assert free.log_likelihood_ > mem.log_likelihood_ + 1e-6


def test_a_fit_is_the_same_bits_on_a_cluster_and_on_threads(client):
    X, y = two_regimes(n=2000, seed=7)
    est = MixtureOfExpertsRegressor(n_experts=2, solver="squarem", random_state=3)
    on_cluster = mdask.fit(est, *chunked(X, y, 300), sample_rows=200).theta_.copy()
    # Another scheduler, another merge tree shape would change the bits; the same tree
    # over the same partitions must not.
    on_threads = mdask.fit(
        MixtureOfExpertsRegressor(n_experts=2, solver="squarem", random_state=3),
        *chunked(X, y, 300),
        sample_rows=200,
        scheduler="threads",
    ).theta_
    np.testing.assert_array_equal(on_cluster, on_threads)


def test_shard_bytes_round_trip_and_merge(linear):
    X, y, mem = linear
    sc = X.mean(axis=0), X.var(axis=0)
    model = _core.ShardModel("linear", 2, 2, True, None, *sc)
    r = model.e_round(mem.theta_)
    whole = model.accumulate(r, X, y)
    # L at the in-memory optimum, in the data's units mapped to the standardised design.
    n = len(y)
    assert _core.ShardModel.objective(whole) == pytest.approx(-mem.log_likelihood_ / n, rel=1e-12)
    assert _core.ShardModel.rows(whole) == n
    # Three partitions merged in order: the same sums (to round-off), all rows.
    cuts = [0, 1000, 2500, n]
    parts = [model.accumulate(r, X[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:])]
    merged = model.merge(parts)
    assert _core.ShardModel.rows(merged) == n
    assert _core.ShardModel.objective(merged) == pytest.approx(
        _core.ShardModel.objective(whole), rel=1e-13
    )
    # Bytes read back and written again are the same bytes.
    assert model.merge([whole]) == whole
    assert model.merge(parts) == merged
    # A model rebuilt by pickling (as a worker process gets it) computes the same bytes.
    clone = pickle.loads(pickle.dumps(model))
    assert repr(clone) == repr(model)
    assert clone.accumulate(r, X, y) == whole
    rows, ll, entropy = model.summaries(r, X, y)
    assert rows == n and ll == pytest.approx(mem.log_likelihood_, rel=1e-12) and entropy > 0


def test_a_mismatched_round_or_partition_is_refused_clearly(linear):
    X, y, mem = linear
    two = _core.ShardModel("linear", 2, 2)
    three = _core.ShardModel("linear", 3, 2)
    r2 = two.e_round(mem.theta_)
    with pytest.raises(ValueError, match="round is for a model of 11 parameters, this model has 18"):
        three.accumulate(r2, X, y)
    with pytest.raises(ValueError, match="not mdem-shard bytes"):
        two.accumulate(b"not a round", X, y)
    with pytest.raises(ValueError, match="X has 3 features, but the model has 2"):
        two.accumulate(r2, np.ascontiguousarray(np.c_[X, X[:, 0]]), y)
    r3 = three.e_round(MixtureOfExpertsRegressor(n_experts=3).fit(X[:500], y[:500]).theta_)
    s2, s3 = two.accumulate(r2, X, y), three.accumulate(r3, X, y)
    with pytest.raises(ValueError, match="cannot be merged"):
        two.merge([s2, s3])
    with pytest.raises(ValueError, match="no statistics to merge"):
        two.merge([])
    with pytest.raises(ValueError, match="not mdem-shard bytes"):
        _core.ShardModel.objective(b"\xa0")
    with pytest.raises(ValueError, match="theta has 3 values, the model has 11 parameters"):
        two.e_round(np.zeros(3))
    with pytest.raises(ValueError, match="classes applies to expert='multinomial' only"):
        _core.ShardModel("linear", 2, 2, classes=3)
    with pytest.raises(ValueError, match="give both mean and var"):
        _core.ShardModel("linear", 2, 2, mean=[0.0, 0.0])


def test_the_driver_runs_em_on_any_round_callable_and_reraises(linear):
    X, y, mem = linear
    model = _core.ShardModel("linear", 2, 2, True, None, X.mean(axis=0), X.var(axis=0))

    def whole(r):
        return model.accumulate(r, X, y)

    def summarise(r):
        return model.summaries(r, X, y)

    # One "partition" holding every row, called in process: the in-memory optimum.
    fit = model.fit(whole, summarise, mem.theta_, solver="em", tol=1e-12)
    assert fit.converged and fit.solver == "EM over Dask partitions"
    assert fit.log_likelihood == pytest.approx(mem.log_likelihood_, rel=1e-12)

    class Unreachable(Exception):
        pass

    def boom(r):
        raise Unreachable("the cluster went away")

    # A callback's exception arrives as itself, not wrapped.
    with pytest.raises(Unreachable, match="the cluster went away"):
        model.fit(boom, summarise, mem.theta_)
    with pytest.raises(TypeError, match="run_round must return the merged statistics as bytes, not str"):
        model.fit(lambda r: "stats", summarise, mem.theta_)
    calls = []

    def shrinking(r):
        calls.append(r)
        k = len(y) - len(calls)
        return model.accumulate(r, X[:k], y[:k])

    with pytest.raises(ValueError, match="the partitions changed during the fit"):
        model.fit(shrinking, summarise, mem.theta_)
    with pytest.raises(ValueError, match="solver='gd' needs the rows in memory"):
        model.fit(whole, summarise, mem.theta_, solver="gd")
    with pytest.raises(ValueError, match="theta has 2 values"):
        model.fit(whole, summarise, np.zeros(2))
    with pytest.raises(TypeError, match="summarise must return"):
        model.fit(whole, lambda r: 1.0, mem.theta_)


def test_a_given_start_is_used_and_checked(linear):
    X, y, mem = linear
    Xd, yd = chunked(X, y, 1000)
    est = MixtureOfExpertsRegressor(n_experts=2, solver="em", **TIGHT)
    warm = mdask.fit(est, Xd, yd, start=mem, scheduler="threads")
    # From the optimum, EM over the partitions stops at once, where it started.
    assert warm.n_iter_ <= 2
    assert warm.log_likelihood_ == pytest.approx(mem.log_likelihood_, rel=1e-12)
    with pytest.raises(TypeError, match="start must be a fitted MixtureOfExpertsRegressor"):
        mdask.fit(est, Xd, yd, start=MixtureOfExpertsClassifier(), scheduler="threads")
    three = MixtureOfExpertsRegressor(n_experts=3).fit(X[:500], y[:500])
    with pytest.raises(ValueError, match="theta has 18 values, the model has 11 parameters"):
        mdask.fit(est, Xd, yd, start=three, scheduler="threads")


def test_a_bad_row_names_its_partition(client):
    X, y = counts(n=1200, seed=4)
    sample = mdask._sample_index(len(y), 300, 0)
    bad = next(i for i in range(900, 1200) if i not in set(sample))
    y = y.copy()
    y[bad] = -1.0  # not a count: outside the Poisson expert's support
    est = MixtureOfExpertsRegressor(n_experts=2, expert="poisson", solver="em", random_state=0)
    with pytest.raises(ValueError, match=r"partition 3 \(rows 900\.\.1199\): .*row"):
        mdask.fit(est, *chunked(X, y, 300), sample_rows=300)


def test_inputs_and_settings_are_checked():
    X, y = two_regimes(n=400, seed=1)
    Xd, yd = chunked(X, y, 100)
    with pytest.raises(ValueError, match="solver='md' needs the rows in memory"):
        mdask.fit(MixtureOfExpertsRegressor(solver="md"), Xd, yd, scheduler="threads")
    with pytest.raises(TypeError, match="X must be a dask array"):
        mdask.fit(MixtureOfExpertsRegressor(), X, yd, scheduler="threads")
    with pytest.raises(TypeError, match="estimator must be"):
        mdask.fit(object(), Xd, yd)
    with pytest.raises(ValueError, match="X has 400 rows but y has 399"):
        mdask.fit(MixtureOfExpertsRegressor(), Xd, yd[:399], scheduler="threads")
    with pytest.raises(ValueError, match="8 samples but the model has 11 parameters"):
        mdask.fit(MixtureOfExpertsRegressor(), *chunked(X[:8], y[:8], 4), scheduler="threads")
    Xn = X.copy()
    Xn[250, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity: row 250, column 1"):
        mdask.fit(MixtureOfExpertsRegressor(), *chunked(Xn, y, 100), scheduler="threads")
    with pytest.raises(ValueError, match="the target is constant"):
        mdask.fit(MixtureOfExpertsRegressor(), Xd, da.ones(400, chunks=100), scheduler="threads")
    # Three classes with a 2-class expert, and a sample missing a class.
    y3 = np.arange(400) % 3
    with pytest.raises(ValueError, match="needs exactly 2 classes"):
        mdask.fit(MixtureOfExpertsClassifier(expert="logistic"), *chunked(X, y3, 100),
                  scheduler="threads")
    y3 = np.zeros(400, dtype=int)
    y3[:200] = 1
    y3[399] = 2
    with pytest.raises(ValueError, match="holds 2 of the 3 classes of y"):
        mdask.fit(MixtureOfExpertsClassifier(), *chunked(X, y3, 100), sample_rows=50,
                  scheduler="threads")


def test_a_dask_dataframe_gives_feature_names():
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    X, y = two_regimes(n=600, seed=2)
    frame = pd.DataFrame(X, columns=["a", "b"])
    Xd = dd.from_pandas(frame, npartitions=3)
    yd = dd.from_pandas(pd.Series(y, name="y"), npartitions=3)
    est = mdask.fit(MixtureOfExpertsRegressor(solver="em"), Xd, yd, scheduler="threads")
    np.testing.assert_array_equal(est.feature_names_in_, ["a", "b"])
    mem = MixtureOfExpertsRegressor(solver="em").fit(frame, y)
    assert est.log_likelihood_ == pytest.approx(mem.log_likelihood_, rel=1e-6)
    assert est.predict(frame).shape == (600,)
