#!/usr/bin/env python3
"""Read speed and peak memory of `mdem fit` against pandas on the same CSV files.

    read_speed.py MDEM_BINARY FILE.csv [FILE.csv ...]

For each file: `mdem fit FILE --target y --experts 2 --expert linear --no-gate
--max-iter 1 --json` (its `seconds_by_phase.read` is the time to read and check the file,
the process's peak RSS is measured by the OS), then pandas' `read_csv` (C engine) into a
float64 array in a child process when pandas is installed. Prints one Markdown table.
"""
import json
import os
import subprocess
import sys

PANDAS = r"""
import sys, time, resource
import pandas as pd
t = time.perf_counter()
x = pd.read_csv(sys.argv[1]).to_numpy(dtype="float64")
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, x.shape[0], x.shape[1])
"""


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binary, files = sys.argv[1], sys.argv[2:]
    print("| file | MB | rows × cols | mdem read s | mdem MB/s | mdem peak RSS / f64 data | pandas s | pandas MB/s | pandas peak RSS / f64 data |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in files:
        mb = os.path.getsize(f) / 1e6
        # Each measurement in its own process pair so ru_maxrss of children is its own.
        out = subprocess.run(
            ["python3", "-c", "import resource,subprocess,sys,json;"
             "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
             "print(p.stdout.strip());print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
             binary, "fit", f, "--target", "y", "--experts", "2", "--expert", "linear",
             "--no-gate", "--max-iter", "1", "--json", "--quiet"],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()
        j, rss = json.loads(out[0]), int(out[1])
        n, p = j["rows"], len(j["features"]) + 1
        data_mb = n * (p + 1) * 8 / 1e6  # design with intercept, and the target
        read = j["seconds_by_phase"]["read"]
        row = f"| {os.path.basename(f)} | {mb:.0f} | {n} × {p} | {read:.2f} | {mb / read:.0f} | {rss / 1e3 / data_mb:.2f} |"
        try:
            import pandas  # noqa: F401
            t, prss, _, _ = subprocess.run(
                ["python3", "-c", PANDAS, f], capture_output=True, text=True, check=True
            ).stdout.split()
            row += f" {float(t):.2f} | {mb / float(t):.0f} | {int(prss) / 1e3 / data_mb:.2f} |"
        except ImportError:
            row += " – | – | – |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
