"""The Python fit equals `mdem fit --json` on the same CSV, to 1e-10.

The CSV holds the arrays written with 17 significant digits, so the command line parses
exactly the doubles Python fitted; both standardise the columns, run the same seeded
starts and map the parameters back, so the log-likelihood and every parameter agree.
"""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

from conftest import counts, three_classes, two_classes, two_regimes
from mdem import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor

REPO = pathlib.Path(__file__).resolve().parents[3]


def mdem_bin():
    """The `mdem` binary: $MDEM_BIN, else the workspace's debug or release build."""
    env = os.environ.get("MDEM_BIN")
    if env:
        return env
    for profile in ("debug", "release"):
        path = REPO / "target" / profile / "mdem"
        if path.exists():
            return str(path)
    pytest.fail("no mdem binary: build it with `cargo build --bin mdem` or set MDEM_BIN")


def cli_fit(tmp_path, X, y, args):
    path = tmp_path / "data.csv"
    cols = [f"x{j}" for j in range(X.shape[1])]
    with open(path, "w") as f:
        f.write(",".join(cols + ["y"]) + "\n")
        for row, t in zip(X, y):
            f.write(",".join(repr(float(v)) for v in row) + f",{float(t)!r}\n")
    out = subprocess.run(
        [mdem_bin(), "fit", str(path), "--target", "y", "--json", "--quiet", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def assert_close(a, b, tol=1e-10):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    scale = np.maximum(1.0, np.abs(b))
    assert np.max(np.abs(a - b) / scale) <= tol, (a, b)


CASES = [
    ("linear-em", MixtureOfExpertsRegressor, two_regimes, "linear", "em", "none", True, 2),
    ("linear-squarem", MixtureOfExpertsRegressor, two_regimes, "linear", "squarem", "squarem", True, 3),
    ("linear-ungated", MixtureOfExpertsRegressor, two_regimes, "linear", "em", "none", False, 2),
    ("poisson", MixtureOfExpertsRegressor, counts, "poisson", "squarem", "squarem", True, 2),
    ("logistic", MixtureOfExpertsClassifier, two_classes, "logistic", "em", "none", True, 2),
    ("linear-md", MixtureOfExpertsRegressor, two_regimes, "linear", "md", "md", True, 2),
    ("multinomial", MixtureOfExpertsClassifier, three_classes, "multinomial", "squarem", "squarem", True, 2),
]


@pytest.mark.parametrize(
    "cls,data,expert,solver,accel,gating,n_init",
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_python_fit_equals_cli_fit(tmp_path, cls, data, expert, solver, accel, gating, n_init):
    X, y = data()
    est = cls(
        n_experts=2,
        expert=expert,
        gating=gating,
        n_init=n_init,
        solver=solver,
        max_iter=300,
        random_state=7,
    ).fit(X, y)
    args = [
        "--experts", "2", "--expert", expert, "--n-init", str(n_init), "--seed", "7",
        "--accel", accel, "--max-iter", "300",
    ]
    if not gating:
        args.append("--no-gate")
    cli = cli_fit(tmp_path, X, y, args)
    assert cli["iterations"] == est.n_iter_
    assert cli["termination"] == est.termination_
    assert_close(est.log_likelihood_, cli["log_likelihood"])
    assert_close(est.theta_, cli["parameters"]["theta"])
    assert est.summary()["log_likelihood"] == est.log_likelihood_
