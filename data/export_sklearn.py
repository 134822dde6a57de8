#!/usr/bin/env python3
"""One-time exporter of scikit-learn's bundled real data sets to CSV for mdem.

Run once from the repository root (needs `pip install scikit-learn`):

    python3 data/export_sklearn.py

It writes data/diabetes.csv, data/breast_cancer.csv and data/digits.csv, each with a
header row and the target in the last column `y`. The CSVs are committed; neither CI nor
the Rust code needs Python.

Numbers are written exactly: a value that is an integer is written as an integer
("59", not "59.0"), every other value with Python's shortest round-trip representation
(repr), which reproduces the decimal text of scikit-learn's own bundled files (e.g.
"4.8598", "0.1184"), with no float noise. The script checks that every written cell
parses back to the identical float64.
"""

import csv
import os
import re
import sys

import numpy as np
import sklearn
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

OUT = os.path.dirname(os.path.abspath(__file__))


def fmt(v: float) -> str:
    """Exact text of a float64: integers without a decimal point, else shortest repr."""
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"non-finite value {v}")
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    s = repr(v)
    if "e" in s or "E" in s:
        # Scientific notation parses fine, but keep the files plain decimal for humans;
        # format with enough digits and check the round trip below.
        s = np.format_float_positional(v, unique=True, trim="-")
    return s


def snake(name: str) -> str:
    """'mean radius' -> 'mean_radius' (column names usable on a command line)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name.strip()).strip("_").lower()


def write(path: str, names, x: np.ndarray, y: np.ndarray) -> None:
    assert x.shape[0] == y.shape[0] and x.shape[1] == len(names)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(list(names) + ["y"])
        for row, t in zip(x, y):
            cells = [fmt(v) for v in row] + [fmt(t)]
            for c, v in zip(cells, list(row) + [t]):
                if float(c) != float(v):
                    raise AssertionError(f"round trip failed: {c!r} vs {v!r}")
            w.writerow(cells)
    print(f"wrote {path}: {x.shape[0]} rows x {x.shape[1]} features + y")


def main() -> int:
    print(f"scikit-learn {sklearn.__version__}, numpy {np.__version__}")

    # Diabetes: the unscaled (original) values, not the mean-centred, norm-1 columns that
    # load_diabetes() returns by default.
    try:
        d = load_diabetes(scaled=False)
    except TypeError:  # scikit-learn < 1.1 has no `scaled`; refuse rather than export scaled
        print("this scikit-learn has no load_diabetes(scaled=False); upgrade", file=sys.stderr)
        return 1
    write(os.path.join(OUT, "diabetes.csv"), d.feature_names, d.data, d.target)

    b = load_breast_cancer()
    write(
        os.path.join(OUT, "breast_cancer.csv"),
        [snake(n) for n in b.feature_names],
        b.data,
        b.target,
    )

    g = load_digits()
    assert g.data.min() >= 0 and g.data.max() <= 16
    write(
        os.path.join(OUT, "digits.csv"),
        [f"p{j}" for j in range(g.data.shape[1])],
        g.data,
        g.target,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
