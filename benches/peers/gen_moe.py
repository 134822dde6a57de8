#!/usr/bin/env python3
"""Writes a gated-linear mixture-of-experts data set as CSV (header x1..xd, y).

    gen_moe.py ROWS OUT.csv [--d 20] [--k 3] [--seed 0] [--chunk 1000000]

Rows are drawn in chunks of numpy arrays, so a 10^7-row file needs no more memory than a
chunk. The gate is a softmax of linear logits, each expert a linear regression with its
own noise scale: the model `mdem fit --expert linear --experts K` fits.
"""
import argparse
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=int)
    ap.add_argument("out")
    ap.add_argument("--d", type=int, default=20)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=1_000_000)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    gate = rng.normal(0.0, 1.0, (a.d + 1, a.k))
    beta = rng.normal(0.0, 2.0, (a.d + 1, a.k))
    sigma = rng.uniform(0.5, 1.5, a.k)
    with open(a.out, "w") as f:
        f.write(",".join([f"x{j + 1}" for j in range(a.d)] + ["y"]) + "\n")
        left = a.rows
        while left > 0:
            m = min(left, a.chunk)
            x = rng.normal(0.0, 1.0, (m, a.d))
            xi = np.hstack([np.ones((m, 1)), x])
            logits = xi @ gate
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            z = (rng.random((m, 1)) > p.cumsum(axis=1)).sum(axis=1)
            mean = (xi * beta[:, z].T).sum(axis=1)
            y = mean + sigma[z] * rng.normal(0.0, 1.0, m)
            np.savetxt(f, np.hstack([x, y[:, None]]), delimiter=",", fmt="%.6g")
            left -= m


if __name__ == "__main__":
    main()
