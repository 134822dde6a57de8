"""The extras: certificate, EM = MD(eta = 1) harness, trajectory, solvers, GIL release."""

import threading
import time

import numpy as np
import pytest

from conftest import counts, three_classes, two_regimes
from mdem import GaussianMixture, MixtureOfExpertsClassifier, MixtureOfExpertsRegressor


@pytest.fixture(scope="module")
def fitted():
    X, y = two_regimes(n=400, seed=5)
    return MixtureOfExpertsRegressor(solver="em", random_state=1).fit(X, y), X, y


def test_em_trajectory_is_monotone_and_ends_at_the_log_likelihood(fitted):
    est, _, _ = fitted
    traj = est.trajectory_
    assert len(traj) == est.n_iter_ >= 2
    assert np.all(np.diff(traj) >= -1e-9 * np.abs(traj[:-1]))
    assert traj[-1] == pytest.approx(est.log_likelihood_, rel=1e-12)
    assert est.converged_ and est.termination_.startswith("converged")


def test_certificate_is_a_dict_with_the_measured_constants(fitted):
    est, X, y = fitted
    cert = est.certificate()
    assert cert["verdict"] in ("Certified", "Inconclusive", "Violated")
    assert cert["l_hat"] <= 1.0 + 1e-6  # relative smoothness: L-hat <= 1 always
    assert cert["pairs_used"] >= 10
    assert cert["rerun"]["converged"]
    # The re-run retraces the fit and ends where it ended.
    assert cert["rerun"]["relative_distance_to_fit"] < 1e-4
    assert cert["rerun"]["log_likelihood"] >= est.log_likelihood_ - 1e-6
    assert cert["summary"].startswith("Convergence certificate")
    # Given data explicitly: the same certificate on the same data.
    again = est.certificate(X, y)
    assert again["l_hat"] == cert["l_hat"] and again["alpha_hat"] == cert["alpha_hat"]


def test_em_is_mirror_descent_with_unit_step(fitted):
    est, X, y = fitted
    gap = est.em_md_gap()
    assert gap["eta"] == 1.0
    assert gap["em_step"] > 1e-3  # the start is not a fixed point: the test means something
    assert gap["theta_gap"] < 1e-6 and gap["objective_gap"] < 1e-6
    assert gap["em_inner"]["converged"] and gap["md_inner"]["converged"]
    half = est.em_md_gap(eta=0.5)
    assert half["theta_gap"] > 1e-3  # a damped step lands elsewhere
    # From a given theta (data units): at the fitted optimum EM barely moves.
    at_opt = est.em_md_gap(X, y, eta=1.0, theta=est.theta_)
    assert at_opt["em_step"] < 1e-4 and at_opt["theta_gap"] < 1e-6
    with pytest.raises(ValueError, match="theta must have shape"):
        est.em_md_gap(theta=np.zeros(3))


@pytest.mark.parametrize(
    "solver,eta,name",
    [
        ("em", None, "EM"),
        ("squarem", None, "squarem"),
        ("md", None, "md"),
        ("newton", None, "newton"),
        ("md", 0.7, "MD(η=0.7)"),
        ("gd", None, "GD"),
    ],
)
def test_every_solver_runs_and_the_em_family_reaches_the_em_optimum(solver, eta, name):
    X, y = two_regimes(n=300, seed=9)
    ref = MixtureOfExpertsRegressor(solver="em", random_state=2, tol=1e-10).fit(X, y)
    est = MixtureOfExpertsRegressor(solver=solver, eta=eta, random_state=2, max_iter=3000).fit(X, y)
    assert name in est.model_.solver
    assert np.isfinite(est.log_likelihood_) and len(est.trajectory_) == est.n_iter_
    if solver == "gd":
        # Gradient descent from the same starts: never above EM's optimum here.
        assert est.log_likelihood_ <= ref.log_likelihood_ + 1e-6
    else:
        assert est.log_likelihood_ == pytest.approx(ref.log_likelihood_, rel=1e-6)


def test_ungated_start_policy():
    """``ungated_start`` as ``mdem fit --ungated-start``: "always" runs the extra start,
    "off" fits no ungated model, and the default runs it only when needed; a bad value
    is a ValueError naming the parameter."""
    X, y = counts()
    kw = dict(expert="poisson", n_init=2, random_state=0)
    always = MixtureOfExpertsRegressor(ungated_start="always", **kw).fit(X, y).summary()
    assert always["ungated_fit"]["start_ran"] and len(always["start_log_likelihoods"]) == 3
    off = MixtureOfExpertsRegressor(ungated_start="off", **kw).fit(X, y).summary()
    assert off["ungated_fit"] is None and len(off["start_log_likelihoods"]) == 2
    default = MixtureOfExpertsRegressor(**kw).fit(X, y).summary()
    ran = default["ungated_fit"]["start_ran"]
    assert len(default["start_log_likelihoods"]) == 2 + ran
    # The seeded starts are the same runs under every policy.
    assert default["start_log_likelihoods"][:2] == off["start_log_likelihoods"]
    assert always["start_log_likelihoods"][:2] == off["start_log_likelihoods"]
    assert default["log_likelihood"] >= default["ungated_fit"]["log_likelihood"] - 1e-9
    with pytest.raises(ValueError, match="ungated_start"):
        MixtureOfExpertsRegressor(ungated_start="sometimes", **kw).fit(X, y)


def test_presample_fits_the_starts_on_a_sample_then_every_row():
    """``presample`` as ``mdem fit --presample``: one start, the run on every row from the
    sample fit's optimum, at the direct fit's optimum; rows or a fraction of them draw the
    same sample; bad values and solvers without a sample stage are ValueErrors."""
    X, y = two_regimes(n=2000, seed=3)
    kw = dict(solver="em", tol=1e-10, random_state=2)
    full = MixtureOfExpertsRegressor(**kw).fit(X, y)
    pre = MixtureOfExpertsRegressor(presample=0.2, **kw).fit(X, y)
    s = pre.summary()
    assert s["start_inits"] == ["sample fit"] and s["ungated_fit"] is None
    assert s["settings"]["presample"] == 0.2 and pre.converged_
    assert abs(pre.log_likelihood_ - full.log_likelihood_) <= 1e-6 * abs(full.log_likelihood_)
    # ceil(0.2 * 2000) = 400 rows: the same seeded sample, the same fit.
    rows = MixtureOfExpertsRegressor(presample=400, **kw).fit(X, y)
    assert rows.log_likelihood_ == pre.log_likelihood_
    rng = np.random.default_rng(0)
    points = np.vstack([rng.normal(-3, 1, (500, 2)), rng.normal(3, 1, (500, 2))])
    gm = GaussianMixture(n_components=2, presample=0.3, random_state=0).fit(points)
    direct = GaussianMixture(n_components=2, random_state=0).fit(points)
    assert abs(gm.model_.log_likelihood - direct.model_.log_likelihood) <= 1e-6 * abs(
        direct.model_.log_likelihood
    )
    for bad in [0, 1.5, -0.1, True, "x"]:
        with pytest.raises(ValueError, match="presample"):
            MixtureOfExpertsRegressor(presample=bad, **kw).fit(X, y)
    with pytest.raises(ValueError, match="presample"):
        MixtureOfExpertsRegressor(presample=0.5, solver="gd").fit(X, y)


def test_poisson_and_multinomial_summaries():
    X, y = counts()
    est = MixtureOfExpertsRegressor(expert="poisson", random_state=0).fit(X, y)
    s = est.summary()
    assert s["expert"]["name"] == "poisson" and len(s["experts"]) == 2
    # Each start's cost; the kept start's iterations are the fit's.
    n_starts = len(s["start_log_likelihoods"])
    assert len(s["start_iterations"]) == n_starts == len(s["start_em_seconds"])
    assert s["start_iterations"][s["best_start"]] == s["iterations"]
    assert all(t >= 0.0 for t in s["start_em_seconds"])
    # A gated fit's ungated fit: never above the gated one; its start ran only if needed.
    u = s["ungated_fit"]
    assert u["log_likelihood"] <= s["log_likelihood"] + 1e-6 * abs(s["log_likelihood"])
    assert u["start_ran"] == (n_starts == 2)  # one seeded start (n_init=1), maybe the extra
    assert np.all(est.predict(X) > 0)
    X, y = three_classes()
    clf = MixtureOfExpertsClassifier(random_state=0).fit(X, y)
    assert clf.expert_ == "multinomial"
    assert clf.summary()["gate"]["kind"] == "softmax"
    ll = clf.log_likelihood(X, y)
    assert ll == pytest.approx(clf.log_likelihood_, rel=1e-9)


def test_the_gil_is_released_during_a_fit():
    X, y = two_regimes(n=60_000, seed=4)
    est = MixtureOfExpertsRegressor(solver="em", n_init=2, tol=1e-12, random_state=0)
    worker = threading.Thread(target=est.fit, args=(X, y))
    ticks = 0
    start = time.perf_counter()
    worker.start()
    while worker.is_alive():
        ticks += 1
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    worker.join()
    assert hasattr(est, "theta_")
    # The main thread kept running: with the GIL held it would tick only at the start.
    assert elapsed < 0.05 or ticks >= 10, (ticks, elapsed)
