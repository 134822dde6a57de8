"""Times ``mdem.dask.fit`` with two worker processes on a 10⁷-row array that does not fit
in one worker's memory limit (issue 15's timing).

The array (10⁷ rows × 4 features, 320 MB of features and 80 MB of targets) is generated
lazily, chunk by chunk, on the workers from a seeded gated linear mixture: it is never
held by the client, and each worker's memory limit (default 250 MB) is below the
array's 400 MB. Every round regenerates the chunks it reads (nothing is persisted), as
``mdem fit --stream`` re-reads its file.

    python crates/python/examples/dask_1e7.py [rows] [worker_memory_limit]
"""

import sys
import time

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

import mdem
import mdem.dask


def chunk(block_id, rows, d):
    """Rows of one chunk of a two-expert gated linear mixture, seeded by its index."""
    rng = np.random.default_rng(1000 + block_id)
    x = rng.standard_normal((rows, d))
    gate = 1.0 / (1.0 + np.exp(-(0.3 + 1.5 * x[:, 0])))
    z = rng.random(rows) < gate
    y = np.where(z, 1.0 + x @ np.linspace(1, -1, d), -1.0 + x @ np.linspace(-0.5, 0.5, d))
    return np.hstack([x, (y + 0.5 * rng.standard_normal(rows))[:, None]])


def main():
    n = int(float(sys.argv[1])) if len(sys.argv) > 1 else 10_000_000
    limit = sys.argv[2] if len(sys.argv) > 2 else "250MB"
    d, rows = 4, 250_000
    parts = n // rows
    blocks = [da.from_delayed(_delayed_chunk(i, rows, d), shape=(rows, d + 1), dtype=float)
              for i in range(parts)]
    xy = da.concatenate(blocks, axis=0)
    X, y = xy[:, :d], xy[:, d]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      memory_limit=limit) as cluster, Client(cluster):
        est = mdem.MixtureOfExpertsRegressor(n_experts=2, solver="squarem", random_state=0)
        clock = time.perf_counter()
        mdem.dask.fit(est, X, y)
        seconds = time.perf_counter() - clock
    print(f"rows {n}, partitions {parts}, worker memory limit {limit}, array "
          f"{n * (d + 1) * 8 / 1e6:.0f} MB")
    print(f"log-likelihood {est.log_likelihood_:.6f}, iterations {est.n_iter_}, "
          f"converged {est.converged_}, {seconds:.1f} s")


def _delayed_chunk(i, rows, d):
    import dask
    return dask.delayed(chunk)(i, rows, d)


if __name__ == "__main__":
    main()
