"""Times the Python fit against `mdem fit` (EM, no acceleration) on the same data.

Run: python crates/python/examples/timing.py path/to/release/mdem [n] [repeats]

Writes a CSV of n rows (two gated linear experts on 4 features, 17 significant digits),
fits it with `mdem fit --accel none --json` and with MixtureOfExpertsRegressor(solver="em")
on the same arrays, checks that both did the same work (iterations, log-likelihood), and
prints the CLI's fit time (its report's `seconds`, CSV parsing excluded), the Python fit's
wall time (validation, the copy into the design and the fit) and their ratio. Each side
runs `repeats` times; the minimum is reported.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from mdem import MixtureOfExpertsRegressor


def main():
    binary = sys.argv[1]
    n = int(float(sys.argv[2])) if len(sys.argv) > 2 else 1_000_000
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 4))
    z = rng.uniform(size=n) < 1 / (1 + np.exp(-2 * X[:, 1]))
    y = np.where(z, 2 * X[:, 0] + X[:, 2], -2 * X[:, 0]) + 0.3 * rng.normal(size=n)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.csv")
        np.savetxt(path, np.column_stack([X, y]), delimiter=",", fmt="%.17g",
                   header="x0,x1,x2,x3,y", comments="")
        cli = []
        for _ in range(repeats):
            out = subprocess.run(
                [binary, "fit", path, "--target", "y", "--experts", "2", "--expert", "linear",
                 "--accel", "none", "--seed", "0", "--json", "--quiet"],
                check=True, capture_output=True, text=True)
            cli.append(json.loads(out.stdout))
    py, walls = None, []
    for _ in range(repeats):
        est = MixtureOfExpertsRegressor(n_experts=2, solver="em", random_state=0)
        t = time.perf_counter()
        est.fit(X, y)
        walls.append(time.perf_counter() - t)
        py = est
    c = cli[0]
    assert c["iterations"] == py.n_iter_, (c["iterations"], py.n_iter_)
    assert abs(c["log_likelihood"] - py.log_likelihood_) <= 1e-10 * abs(c["log_likelihood"])
    cli_s = min(r["seconds"] for r in cli)
    py_s = min(walls)
    print(f"n = {n}, d = 4 (+ intercept), K = 2 gated linear experts, EM: "
          f"{py.n_iter_} iterations, log-likelihood {py.log_likelihood_:.6f}")
    print(f"CLI fit (report seconds, min of {repeats}): {cli_s:.3f} s")
    print(f"Python fit wall time (min of {repeats}):    {py_s:.3f} s "
          f"(library report {py.model_.seconds:.3f} s)")
    print(f"ratio Python / CLI: {py_s / cli_s:.3f}")


if __name__ == "__main__":
    main()
