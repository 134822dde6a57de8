#!/usr/bin/env python3
"""Writes a gated mixture-of-experts data set as CSV (header x1..xd, y).

    gen_moe.py ROWS OUT.csv [--d 20] [--k 3] [--seed 0] [--chunk 1000000]
               [--expert linear|logistic] [--labels Z.csv]

Rows are drawn in chunks of numpy arrays, so a 10^7-row file needs no more memory than a
chunk. The gate is a softmax of linear logits (coefficients N(0, 1), intercept included).
`--expert linear` (default): each expert a linear regression (coefficients N(0, 2^2)) with
its own noise scale U(0.5, 1.5), the model `mdem fit --expert linear --experts K` fits.
`--expert logistic`: y in {0, 1} with P(y = 1 | x, z = k) = sigmoid(b_k'x), coefficients
N(0, 1), the model `mdem fit --expert logistic --experts K` fits. `--labels` also writes
each row's expert z (0-based, one per line, header z), e.g. to start a peer from the truth.
The linear files are the same, byte for byte, as before `--expert` existed.
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
    ap.add_argument("--expert", choices=["linear", "logistic"], default="linear")
    ap.add_argument("--labels", help="also write each row's expert z here")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    logistic = a.expert == "logistic"
    gate = rng.normal(0.0, 1.0, (a.d + 1, a.k))
    beta = rng.normal(0.0, 1.0 if logistic else 2.0, (a.d + 1, a.k))
    sigma = rng.uniform(0.5, 1.5, a.k)
    zf = open(a.labels, "w") if a.labels else None
    if zf:
        zf.write("z\n")
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
            eta = (xi * beta[:, z].T).sum(axis=1)
            if logistic:
                y = (rng.random(m) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
            else:
                y = eta + sigma[z] * rng.normal(0.0, 1.0, m)
            np.savetxt(f, np.hstack([x, y[:, None]]), delimiter=",", fmt="%.6g")
            if zf:
                np.savetxt(zf, z, fmt="%d")
            left -= m
    if zf:
        zf.close()


if __name__ == "__main__":
    main()
