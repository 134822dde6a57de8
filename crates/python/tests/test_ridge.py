"""`ridge=`: the penalised fit of `mdem fit --ridge`, in memory and over Dask partitions.

The ridge is checked against the command line (same file, same seed: the same penalised
optimum to 1e-10), against the unridged fit (ridge=0 is the default, bit for bit), and on
separable classes, where the unpenalised fit has no finite optimum and the ridged one
has one.
"""

import numpy as np
import pytest
from conftest import three_classes, two_classes, two_regimes
from test_cli_equality import assert_close, cli_fit

from mdem import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor


def separable(n=200, seed=4):
    """Two classes split exactly by the sign of x0 (no finite logistic optimum)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    return X, (X[:, 0] > 0).astype(int)


@pytest.mark.parametrize(
    "cls,data,expert,gating",
    [
        (MixtureOfExpertsRegressor, two_regimes, "linear", True),
        (MixtureOfExpertsRegressor, two_regimes, "linear", False),
        (MixtureOfExpertsClassifier, two_classes, "logistic", True),
        (MixtureOfExpertsClassifier, three_classes, "multinomial", True),
    ],
    ids=["linear", "linear-ungated", "logistic", "multinomial"],
)
def test_a_ridged_fit_equals_the_cli_fit(tmp_path, cls, data, expert, gating):
    X, y = data()
    est = cls(
        n_experts=2, expert=expert, gating=gating, solver="em", ridge=0.5, random_state=3
    ).fit(X, y)
    args = ["--experts", "2", "--expert", expert, "--seed", "3", "--accel", "none"]
    args += ["--ridge", "0.5"] + ([] if gating else ["--no-gate"])
    cli = cli_fit(tmp_path, X, y, args)
    assert cli["ridge"]["lambda"] == 0.5
    assert cli["termination"] == est.termination_
    assert_close(est.log_likelihood_, cli["log_likelihood"])
    assert_close(est.theta_, cli["parameters"]["theta"])
    # The trajectory is the penalised objective: its end lies below the log-likelihood
    # by the penalty the command line reports.
    assert_close(est.trajectory_[-1], cli["ridge"]["penalised_log_likelihood"], tol=1e-8)
    assert est.trajectory_[-1] < est.log_likelihood_
    assert est.summary()["settings"]["ridge"] == 0.5


def test_ridge_zero_is_the_unridged_fit():
    X, y = two_classes()
    plain = MixtureOfExpertsClassifier(n_experts=2, random_state=1).fit(X, y)
    zero = MixtureOfExpertsClassifier(n_experts=2, random_state=1, ridge=0.0).fit(X, y)
    np.testing.assert_array_equal(plain.theta_, zero.theta_)
    assert plain.log_likelihood_ == zero.log_likelihood_


def test_a_ridge_gives_separable_classes_a_finite_optimum():
    X, y = separable()
    free = MixtureOfExpertsClassifier(n_experts=2, expert="logistic", random_state=0)
    free.fit(X, y)
    assert not free.converged_
    ridged = MixtureOfExpertsClassifier(
        n_experts=2, expert="logistic", ridge=1.0, random_state=0
    ).fit(X, y)
    assert ridged.converged_, ridged.termination_
    assert np.all(np.isfinite(ridged.theta_))
    assert np.max(np.abs(ridged.theta_)) < 100.0
    # A penalised optimum does not interpolate the labels.
    assert ridged.log_likelihood_ < -1.0
    assert np.mean(ridged.predict(X) == y) > 0.95


def test_the_certificate_of_a_ridged_fit_reports_the_unpenalised_log_likelihood():
    X, y = two_regimes()
    est = MixtureOfExpertsRegressor(n_experts=2, ridge=1.0, random_state=0).fit(X, y)
    rerun = est.certificate()["rerun"]
    assert rerun["converged"] and rerun["penalty"] > 0
    assert rerun["log_likelihood"] == pytest.approx(est.log_likelihood_, rel=1e-8)
    assert rerun["log_likelihood"] - rerun["penalty"] == pytest.approx(
        est.trajectory_[-1], rel=1e-8
    )


def test_a_ridged_fit_pickles_with_its_ridge():
    import pickle

    X, y = two_regimes()
    est = MixtureOfExpertsRegressor(n_experts=2, ridge=2.0, random_state=0).fit(X, y)
    again = pickle.loads(pickle.dumps(est))
    assert again.ridge == 2.0
    assert again.summary()["settings"]["ridge"] == 2.0
    np.testing.assert_array_equal(again.predict(X[:20]), est.predict(X[:20]))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1", True])
def test_a_bad_ridge_is_refused_by_name(bad):
    X, y = two_regimes(n=50)
    with pytest.raises(ValueError, match="ridge"):
        MixtureOfExpertsRegressor(ridge=bad).fit(X, y)


def test_mirror_descent_refuses_a_ridge_clearly():
    X, y = two_regimes(n=100)
    with pytest.raises(ValueError, match="(?i)penal|ridge"):
        MixtureOfExpertsRegressor(solver="md", eta=0.5, ridge=1.0).fit(X, y)
