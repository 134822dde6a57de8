#!/usr/bin/env python3
"""Start-success table: for each shipped data set, expert and K, how many of 20 seeded
starts of `mdem fit` end with a fit, how many of them converged, and how many needed a
retry from a fresh draw (a failed attempt; see em_as_md::fit::START_RETRIES).

Usage: scripts/start_success.py [path/to/mdem [FILTER]] > table.md
The binary defaults to target/release/mdem; FILTER keeps the rows whose expert column
contains it (e.g. `ridge`). Each cell runs one `mdem fit --n-init 20
--seed 1 --json`; the extra start from the ungated optimum (gated fits) is not counted.
"""
import json
import subprocess
import sys

MDEM = sys.argv[1] if len(sys.argv) > 1 else "target/release/mdem"
FILTER = sys.argv[2] if len(sys.argv) > 2 else ""
CASES = [
    ("data/diabetes.csv", "y", None, "linear"),
    ("data/diabetes.csv", "y", None, "poisson"),
    ("data/tonedata.csv", "tuned", None, "linear"),
    ("data/npreg.csv", "yn", "x,x2", "linear"),
    ("data/npreg.csv", "yp", "x", "poisson"),
    ("data/patent.csv", "Patents", "lgRD", "poisson"),
    ("data/fabricfault.csv", "Faults", "logLength", "poisson"),
    ("data/breast_cancer.csv", "y", None, "logistic"),
    ("tests/data/three_classes.csv", "y", None, "multinomial"),
    # The separated fits above, with the ridge the separation warning suggests.
    ("data/breast_cancer.csv", "y", None, "logistic", ["--ridge", "1"]),
    ("tests/data/three_classes.csv", "y", None, "multinomial", ["--ridge", "1"]),
]
N_INIT = 20


def cell(path, target, features, expert, k, extra):
    cmd = [MDEM, "fit", path, "--target", target, "--experts", str(k), "--expert",
           expert, "--n-init", str(N_INIT), "--seed", "1", "--json", "--quiet", *extra]
    if features:
        cmd += ["--features", features]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        msg = (run.stderr.strip().splitlines() or ["?"])[-1]
        return f"0 (exit {run.returncode}: {msg[:60]})"
    out = json.loads(run.stdout)
    # `unconverged_starts` holds 0-based restart indices.
    unconverged = set(out["unconverged_starts"])
    seeded = [
        (i, ll, retries)
        for i, (ll, init, retries) in enumerate(
            zip(out["start_log_likelihoods"], out["start_inits"], out["start_retry_errors"])
        )
        if init != "ungated"
    ][:N_INIT]
    ok = sum(ll is not None for _, ll, _ in seeded)
    converged = sum(ll is not None and i not in unconverged for i, ll, _ in seeded)
    retried = sum(len(r) > 0 for _, _, r in seeded)
    return f"{ok}/{N_INIT} ({converged} conv., {retried} retried)"


def main():
    ks = [2, 3, 4, 5]
    print("| data | model | expert | " + " | ".join(f"K = {k}" for k in ks) + " |")
    print("|---|---|---|" + "---|" * len(ks))
    for path, target, features, expert, *extra in CASES:
        extra = extra[0] if extra else []
        label = expert + (f" `{' '.join(extra)}`" if extra else "")
        if FILTER not in label:
            continue
        row = [cell(path, target, features, expert, k, extra) for k in ks]
        what = f"`{target}` ~ {features or 'all'}"
        print(f"| `{path}` | {what} | {label} | " + " | ".join(row) + " |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
