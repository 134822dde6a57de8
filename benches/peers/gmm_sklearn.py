#!/usr/bin/env python3
"""Gaussian mixture: `mdem fit --expert gaussian` against scikit-learn's GaussianMixture.

Generates n rows of a K = 3 component, d = 5 Gaussian mixture (seeded), writes them to a
CSV file, fits both on that file with a full covariance, reg_covar = 1e-6, one k-means
start each and the same tolerance, and prints one table: times, their ratio, iterations,
and the relative difference of the total log-likelihoods.

Tolerance. mdem stops when the relative change of the average negative log-likelihood
L is below --tol (default 1e-8); scikit-learn stops when the absolute change of the mean
log-likelihood (its lower bound, which equals the log-likelihood for a mixture without
priors) is below its `tol`. The script gives scikit-learn tol = --tol * |L| with L measured
by mdem's run, so both stop at the same change of the same quantity.

Starts. mdem's `--init kmeans` (k-means++ seeding and Lloyd iterations on standardised
columns) and scikit-learn's `init_params="kmeans"` (its KMeans, n_init = 1): different
implementations of the same strategy, so the iteration counts differ a little; the
log-likelihoods agree when both reach the same optimum, which the table checks.

Times. scikit-learn: `fit` only (the CSV read by numpy is timed apart); mdem: the JSON's
`seconds` (EM with its start, no reading) and the wall time of the whole process (reading,
checks, start, EM, report). mdem is run with its default acceleration (SQUAREM) and with
`--accel none` (plain EM, the same algorithm as scikit-learn).

Usage: python3 benches/peers/gmm_sklearn.py --n 100000 [--n 1000000] [--mdem PATH]
(build first: cargo build --release).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def generate(n, d, k, seed, path):
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.5, size=(k, d))
    weights = np.array([0.5, 0.3, 0.2])[:k]
    weights = weights / weights.sum()
    z = rng.choice(k, size=n, p=weights)
    x = np.empty((n, d))
    for c in range(k):
        a = rng.normal(0.0, 1.0, size=(d, d)) / np.sqrt(d)
        cov = a @ a.T + 0.5 * np.eye(d)
        idx = np.flatnonzero(z == c)
        x[idx] = rng.multivariate_normal(means[c], cov, size=idx.size)
    header = ",".join(f"x{j}" for j in range(d))
    np.savetxt(path, x, delimiter=",", header=header, comments="", fmt="%.17g")
    return x


def run_mdem(binary, path, k, tol, seed, accel, threads):
    cmd = [binary, "fit", path, "--experts", str(k), "--expert", "gaussian",
           "--covariance", "full", "--init", "kmeans", "--n-init", "1", "--seed", str(seed),
           "--tol", repr(tol), "--max-iter", "1000", "--accel", accel, "--json", "--quiet"]
    t0 = time.perf_counter()
    env = dict(os.environ)
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    return json.loads(out.stdout), wall


def fit_sklearn(path, k, tol, seed, threads):
    """Reads `path` with numpy and fits scikit-learn's GaussianMixture (full covariance,
    reg_covar 1e-6, one k-means start, absolute tolerance `tol` on the mean log-likelihood
    per row); `threads` > 0 limits its thread pools (threadpoolctl). Returns the fit's
    seconds, the read's seconds, iterations, the total log-likelihood and `converged`."""
    from contextlib import nullcontext
    from sklearn.mixture import GaussianMixture
    t0 = time.perf_counter()
    x = np.loadtxt(path, delimiter=",", skiprows=1)
    read_s = time.perf_counter() - t0
    gm = GaussianMixture(n_components=k, covariance_type="full", tol=tol, reg_covar=1e-6,
                         max_iter=1000, n_init=1, init_params="kmeans", random_state=seed)
    try:
        from threadpoolctl import threadpool_limits
        limit = threadpool_limits(threads) if threads else nullcontext()
    except ImportError:
        limit = nullcontext()
    with limit:
        t0 = time.perf_counter()
        gm.fit(x)
        fit_s = time.perf_counter() - t0
    return {"fit_s": fit_s, "read_s": read_s, "iters": int(gm.n_iter_),
            "ll": float(gm.score(x)) * x.shape[0], "converged": bool(gm.converged_)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, action="append", help="rows (repeatable)")
    ap.add_argument("--d", type=int, default=5)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for both (RAYON_NUM_THREADS for mdem, threadpoolctl for "
                         "scikit-learn's BLAS/OpenMP); default: each tool's own default")
    ap.add_argument("--mdem", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                   "target", "release", "mdem"))
    args = ap.parse_args()
    ns = args.n or [100_000]
    try:
        from sklearn import __version__ as skv
        from sklearn.mixture import GaussianMixture
    except ImportError:
        GaussianMixture = None
        skv = None
    print(f"# d = {args.d}, K = {args.k}, full covariance, reg_covar = 1e-6, tol = {args.tol} "
          f"(relative, on L), one k-means start; scikit-learn {skv}, numpy {np.__version__}, "
          f"{os.cpu_count()} cores, threads: {args.threads or 'default'}, "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in ns:
            path = os.path.join(tmp, f"gmm_{n}.csv")
            generate(n, args.d, args.k, args.seed, path)
            size = os.path.getsize(path) / 1e6
            res = {}
            for accel in ["none", "squarem"]:
                js, wall = run_mdem(args.mdem, path, args.k, args.tol, args.seed, accel,
                                    args.threads)
                res[accel] = (js, wall)
            avg_nll = res["none"][0]["average_negative_log_likelihood"]
            line = {"n": n, "csv_mb": size}
            for accel, (js, wall) in res.items():
                line[f"mdem_{accel}"] = {"fit_s": js["seconds"], "wall_s": wall,
                                         "iters": js["iterations"], "ll": js["log_likelihood"],
                                         "converged": js["converged"]}
            if GaussianMixture is not None:
                line["sklearn"] = fit_sklearn(path, args.k, args.tol * abs(avg_nll),
                                              args.seed, args.threads)
            rows.append(line)
    hdr = ("| n | CSV MB | scikit-learn fit s (iters) | mdem EM fit s (iters) | ratio | "
           "mdem EM wall s | mdem SQUAREM fit s (iters) | ratio | rel. Δ log-lik EM | "
           "rel. Δ log-lik SQUAREM |")
    print(hdr)
    print("|---" * (hdr.count("|") - 1) + "|")
    for r in rows:
        em, sq = r["mdem_none"], r["mdem_squarem"]
        sk = r.get("sklearn")
        if sk:
            rel = lambda a: abs(a["ll"] - sk["ll"]) / abs(sk["ll"])
            print(f"| {r['n']} | {r['csv_mb']:.1f} | {sk['fit_s']:.3f} ({sk['iters']}) | "
                  f"{em['fit_s']:.3f} ({em['iters']}) | {sk['fit_s'] / em['fit_s']:.1f}× | "
                  f"{em['wall_s']:.3f} | {sq['fit_s']:.3f} ({sq['iters']}) | "
                  f"{sk['fit_s'] / sq['fit_s']:.1f}× | {rel(em):.1e} | {rel(sq):.1e} |")
        else:
            print(f"| {r['n']} | {r['csv_mb']:.1f} | (scikit-learn not installed) | "
                  f"{em['fit_s']:.3f} ({em['iters']}) | – | {em['wall_s']:.3f} | "
                  f"{sq['fit_s']:.3f} ({sq['iters']}) | – | – | – |")
    print(json.dumps(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
