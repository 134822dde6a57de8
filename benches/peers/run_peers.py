#!/usr/bin/env python3
"""mdem against its peers (R flexmix, R mixtools, scikit-learn) on the same files, in one run.

    python3 benches/peers/run_peers.py [--quick] [--mdem PATH] [--tol 1e-8] [--threads 1]
                                       [--workdir /tmp/peers] [--keep] [--json OUT.json]

Cases (full run; `--quick` divides every n by 10, about a minute on 2 cores):

| case | data | peer | mdem |
|---|---|---|---|
| gated linear | gen_moe.py, n 20 000, d 10, K 2 | flexmix FLXMRglm() + FLXPmultinom(~ x) | --expert linear |
| linear mixture | the same file | mixtools regmixEM | --expert linear --no-gate |
| gated logistic | gen_moe.py --expert logistic, n 20 000, d 10, K 2 | flexmix FLXMRglm(binomial) + FLXPmultinom | --expert logistic |
| gated linear | gen_moe.py, n 200 000, d 10, K 3 | flexmix | --expert linear |
| Gaussian mixture | gmm_sklearn.generate, n 10^6, d 5, K 3 | scikit-learn GaussianMixture | --expert gaussian |

Starts: one start each, each tool's own random start of the same kind where mdem has one:
flexmix starts from a random hard partition (mdem `--init random`, the same strategy, not the
same partition), mixtools from fits on random subsets (mdem `--init subset`), scikit-learn
and mdem from k-means (`--init kmeans`). A gated mdem fit also runs, inside the same command
and timed with it, one extra start from its ungated optimum (the CLI always does).

Tolerance. mdem stops when |L_t - L_{t-1}| / max(|L_{t-1}|, 1) < --tol, L the average
negative log-likelihood. Each peer gets the tolerance that stops it at the same change of
the same quantity, computed from L of mdem's run on that file (run first):
flexmix `tolerance` (|l_t - l_{t-1}| / (|l_t| + 0.1), l = -nL the total log-likelihood)
= tol * max(|L|, 1) / |L|; mixtools `epsilon` (absolute change of l) = tol * max(|L|, 1) * n;
scikit-learn `tol` (absolute change of the mean log-likelihood per row) = tol * max(|L|, 1).

Order and load. For each case: mdem (default SQUAREM acceleration), the peer, mdem with
`--accel none` (plain EM, the peers' algorithm) and, with `--newton`, mdem with
`--accel newton` (not on the Gaussian mixture, see `with_newton`) and, with `--presample
ROWS|FRACTION`, mdem with `--presample ROWS|FRACTION --accel none` (files with more rows
than the sample; a fraction such as 0.1 applies to every file), one after another, so
the peer and mdem see the same load; the load average is recorded per case. `--repeats N`
runs that sequence N times and shows median times. `--threads 1` (default) runs every
tool on one thread (RAYON_NUM_THREADS for mdem, OPENBLAS/OMP_NUM_THREADS for R, threadpoolctl
for scikit-learn); `--threads 0` leaves each tool its default.

Times. Peer: its fit call (R: `system.time` around flexmix()/regmixEM(); scikit-learn:
`fit`) and its whole process (R: Rscript start, packages, read.csv, fit; scikit-learn: a
Python child reading with numpy and fitting). mdem: `seconds_by_phase.fit` of its JSON (all
starts and EM, no reading), `fit_em_iterations` (EM iterations alone) and the wall time of
the whole command. ratio = peer fit call / mdem fit; wall ratio = peer process / mdem wall.

Data files are written (seeded) under --workdir and deleted at the end unless --keep.

A row is flagged `MDEM BELOW` when mdem's log-likelihood is below the peer's by more than
1e-6 relative (a bug for mdem, or a worse local optimum: reported, never hidden). A peer that
is not installed (no Rscript, no flexmix/mixtools, no scikit-learn) is skipped with a message
and its rows show mdem alone.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The mdem runs of every case: (key, label); `--newton` adds ("mdem_newton", "Newton").
MDEM_RUNS = [("mdem", "SQUAREM"), ("mdem_none", "plain EM")]
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FLAG = 1e-6


def with_newton(c, a):
    """Whether `--newton` times Newton on case `c`: not on the Gaussian mixture, whose expert
    has no one-pass observed sums (Newton's generic per-row pass ran over 8 minutes at
    10^6 rows; docs/performance.md)."""
    return a.newton and c["gen"] != "gmm"


def presample_rows(c, a):
    """The sample of `--presample` for case `c`: ROWS, or ceil(FRACTION * n) for a fraction."""
    p = float(a.presample)
    if p >= 1:
        return p
    x = p * c["n"]  # as mdem's Presample::rows: within a few ulps of an integer is it
    return round(x) if abs(x - round(x)) <= 4 * sys.float_info.epsilon * x else math.ceil(x)


def with_presample(c, a):
    """Whether `--presample ROWS|FRACTION` times `mdem fit --presample ... --accel none` on
    case `c`: only where the file has more rows than the sample."""
    return a.presample is not None and c["n"] > presample_rows(c, a)


def mdem_runs(c, a):
    """The mdem runs of case `c`: MDEM_RUNS, Newton when `with_newton`, the presampled
    plain EM when `with_presample`."""
    return (MDEM_RUNS + ([("mdem_newton", "Newton")] if with_newton(c, a) else [])
            + ([("mdem_presample", f"presample {a.presample}, plain EM")]
               if with_presample(c, a) else []))


def run_keys(c, a):
    """Every run of case `c` in the order they are made: mdem, the peer, the other mdem runs."""
    first, *rest = [key for key, _ in mdem_runs(c, a)]
    return [first, "peer"] + rest


def default_mdem():
    p = os.path.join(ROOT, "target", "release", "mdem")
    if os.path.exists(p):
        return p
    return shutil.which("mdem") or p


def cases(quick):
    f = 10 if quick else 1
    return [
        dict(name="gated linear", file="lin_n{n}_k2", n=20_000 // f, d=10, k=2, gen="linear",
             seed=3, peer="flexmix", family="gaussian", gated=True, init="random"),
        dict(name="linear mixture (ungated)", file="lin_n{n}_k2", n=20_000 // f, d=10, k=2,
             gen="linear", seed=3, peer="mixtools", family="gaussian", gated=False,
             init="subset"),
        dict(name="gated logistic", file="logit_n{n}_k2", n=20_000 // f, d=10, k=2,
             gen="logistic", seed=3, peer="flexmix", family="binomial", gated=True,
             init="random"),
        dict(name="gated linear", file="lin_n{n}_k3", n=200_000 // f, d=10, k=3, gen="linear",
             seed=5, peer="flexmix", family="gaussian", gated=True, init="random"),
        dict(name="Gaussian mixture", file="gmm_n{n}", n=1_000_000 // f, d=5, k=3, gen="gmm",
             seed=0, peer="scikit-learn", family="", gated=False, init="kmeans"),
    ]


def threads_env(threads):
    env = dict(os.environ)
    if threads:
        for v in ["RAYON_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                  "MKL_NUM_THREADS"]:
            env[v] = str(threads)
    return env


def generate(c, workdir):
    path = os.path.join(workdir, c["file"].format(n=c["n"]) + ".csv")
    if os.path.exists(path):
        return path
    if c["gen"] == "gmm":
        sys.path.insert(0, HERE)
        import gmm_sklearn
        gmm_sklearn.generate(c["n"], c["d"], c["k"], c["seed"], path)
    else:
        subprocess.run([sys.executable, os.path.join(HERE, "gen_moe.py"), str(c["n"]), path,
                        "--d", str(c["d"]), "--k", str(c["k"]), "--seed", str(c["seed"]),
                        "--expert", c["gen"]], check=True)
    return path


def run_mdem(binary, c, path, a, accel, extra=()):
    cmd = [binary, "fit", path, "--experts", str(c["k"]), "--init", c["init"], "--n-init", "1",
           "--seed", str(a.seed), "--tol", repr(a.tol), "--max-iter", str(a.max_iter),
           "--accel", accel, "--json", "--quiet", *extra]
    if c["gen"] == "gmm":
        cmd += ["--expert", "gaussian", "--covariance", "full"]
    else:
        cmd += ["--target", "y", "--expert", "logistic" if c["gen"] == "logistic" else "linear"]
        if not c["gated"]:
            cmd += ["--no-gate"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=threads_env(a.threads))
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        return {"error": out.stderr.strip(), "cmd": " ".join(cmd)}
    js = json.loads(out.stdout)
    ph = js["seconds_by_phase"]
    return {"cmd": " ".join(cmd), "wall_s": wall, "fit_s": ph["fit"],
            "em_s": ph["fit_em_iterations"], "phases": ph, "ll": js["log_likelihood"],
            "avg_nll": js["average_negative_log_likelihood"], "iters": js["iterations"],
            "converged": js["converged"], "termination": js.get("termination"),
            "best_start_init": js.get("best_start_init"),
            "start_lls": js.get("start_log_likelihoods")}


def r_available(pkg):
    if not shutil.which("Rscript"):
        return "Rscript not found (install r-base-core)"
    p = subprocess.run(["Rscript", "-e", f"suppressMessages(library({pkg}))"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return f"R package {pkg} not installed (install r-cran-{pkg})"
    return None


def sklearn_available():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return "scikit-learn not installed (pip install scikit-learn)"
    return None


def run_r(c, path, a, tol, start=None):
    cmd = ["Rscript", os.path.join(HERE, "peers.R"), c["peer"], path, str(c["k"]),
           c["family"], "1" if c["gated"] else "0", repr(tol), str(a.max_iter), str(a.seed)]
    if start:
        cmd.append(start)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=threads_env(a.threads))
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-2000:], "cmd": " ".join(cmd)}
    js = json.loads(out.stdout.strip().splitlines()[-1])
    js["process_s"] = wall
    js["ll"] = js.pop("loglik")
    js["cmd"] = " ".join(cmd)
    js["tol"] = tol
    return js


def run_sklearn(c, path, a, tol):
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); import gmm_sklearn, sklearn, "
            "numpy; r = gmm_sklearn.fit_sklearn(sys.argv[2], int(sys.argv[3]), "
            "float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])); "
            "r['version'] = sklearn.__version__; r['numpy'] = numpy.__version__; "
            "print(json.dumps(r))")
    cmd = [sys.executable, "-c", code, HERE, path, str(c["k"]), repr(tol), str(a.seed),
           str(a.threads)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=threads_env(a.threads))
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-2000:]}
    js = json.loads(out.stdout.strip().splitlines()[-1])
    js["process_s"] = wall
    js["package"] = "scikit-learn"
    js["tol"] = tol
    return js


def peer_tol(c, avg_nll, tol):
    scale = max(abs(avg_nll), 1.0)
    if c["peer"] == "flexmix":
        return tol * scale / abs(avg_nll)
    if c["peer"] == "mixtools":
        return tol * scale * c["n"]
    return tol * scale


def summarise(runs):
    """The first run, with its times replaced by the median over the repeats (the fits are
    seeded, so every repeat ends at the same log-likelihood; a difference is reported)."""
    first = dict(runs[0])
    if "ll" not in first:
        return first
    for key in ["fit_s", "em_s", "wall_s", "process_s"]:
        if key in first:
            first[key] = statistics.median(r[key] for r in runs)
    lls = {r.get("ll") for r in runs}
    if len(lls) > 1:
        first["ll_spread"] = sorted(lls)
        print(f"# repeats ended at different log-likelihoods: {sorted(lls)}", file=sys.stderr)
    return first


def fmt_s(x):
    return "–" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--quick", action="store_true", help="every n divided by 10")
    ap.add_argument("--mdem", default=default_mdem(),
                    help="mdem binary (default: target/release/mdem, else mdem on PATH)")
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1, help="seed of every tool's start")
    ap.add_argument("--threads", type=int, default=1, help="threads per tool (0: defaults)")
    ap.add_argument("--workdir", default="/tmp/peers", help="where the data files go")
    ap.add_argument("--keep", action="store_true", help="keep the data files")
    ap.add_argument("--only", help="comma-separated case numbers (1-based) to run")
    ap.add_argument("--repeats", type=int, default=1,
                    help="repeat each case's (mdem, peer, mdem plain EM) sequence; the "
                         "table shows median times")
    ap.add_argument("--json", help="also write every measurement here")
    ap.add_argument("--newton", action="store_true",
                    help="also time mdem with --accel newton (after plain EM, same load)")
    ap.add_argument("--presample", metavar="ROWS|FRACTION",
                    help="also time mdem --presample ROWS|FRACTION --accel none (a number "
                         "of rows, or a fraction of them in (0, 1)) on files with more rows "
                         "than the sample (starts fitted on a sample; after the other runs, "
                         "same load)")
    a = ap.parse_args()
    if not (os.path.exists(a.mdem) or shutil.which(a.mdem)):
        sys.exit(f"mdem binary not found: {a.mdem} (cargo build --release, or --mdem PATH)")
    os.makedirs(a.workdir, exist_ok=True)
    made = set(os.listdir(a.workdir))

    missing = {"flexmix": r_available("flexmix"), "mixtools": r_available("mixtools"),
               "scikit-learn": sklearn_available()}
    for peer, why in missing.items():
        if why:
            print(f"# skipping {peer}: {why}", file=sys.stderr)
    version = subprocess.run([a.mdem, "--version"], capture_output=True, text=True).stdout
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    all_cases = cases(a.quick)
    chosen = ([all_cases[int(i) - 1] for i in a.only.split(",")] if a.only else all_cases)
    results = []
    for c in chosen:
        t0 = time.perf_counter()
        path = generate(c, a.workdir)
        gen_s = time.perf_counter() - t0
        load = os.getloadavg()[0]
        print(f"# {c['name']}, n {c['n']}, d {c['d']}, K {c['k']}: {os.path.basename(path)} "
              f"({os.path.getsize(path) / 1e6:.1f} MB, written in {gen_s:.1f} s), "
              f"load average {load:.1f}", file=sys.stderr, flush=True)
        r = {"case": c, "file": path, "load_before": load, "runs": []}
        for rep in range(a.repeats):
            run = {"mdem": run_mdem(a.mdem, c, path, a, "squarem")}
            if "error" in run["mdem"]:
                print(f"# mdem failed: {run['mdem']['error']}", file=sys.stderr)
            if missing[c["peer"]] or "error" in run["mdem"]:
                run["peer"] = {"skipped": missing[c["peer"]] or "mdem failed"}
            else:
                tol = peer_tol(c, run["mdem"]["avg_nll"], a.tol)
                run["peer"] = (run_sklearn(c, path, a, tol) if c["peer"] == "scikit-learn"
                               else run_r(c, path, a, tol))
                if "error" in run["peer"]:
                    print(f"# {c['peer']} failed: {run['peer']['error']}", file=sys.stderr)
            run["mdem_none"] = run_mdem(a.mdem, c, path, a, "none")
            if with_newton(c, a):
                run["mdem_newton"] = run_mdem(a.mdem, c, path, a, "newton")
            if with_presample(c, a):
                run["mdem_presample"] = run_mdem(a.mdem, c, path, a, "none",
                                                 ["--presample", str(a.presample)])
            for key in run_keys(c, a):
                v = run[key]
                print(f"#   {rep + 1}/{a.repeats} {key}: " + ", ".join(
                      f"{x}={v[x]}" for x in ["fit_s", "process_s", "wall_s", "em_s", "ll",
                                              "iters", "iterations", "converged", "tol",
                                              "best_start_init"] if x in v),
                      file=sys.stderr, flush=True)
            r["runs"].append(run)
        r["load_after"] = os.getloadavg()[0]
        for key in run_keys(c, a):
            r[key] = summarise([run[key] for run in r["runs"]])
        results.append(r)

    peers_v = {}
    for r in results:
        p = r["peer"]
        if "version" in p:
            peers_v[p["package"]] = p["version"]
            if "r" in p:
                peers_v["R"] = p["r"]
            if "numpy" in p:
                peers_v["numpy"] = p["numpy"]
    print(f"{version.strip()} (commit {commit}, {a.mdem}); "
          + "".join(f"{k} {v}; " for k, v in peers_v.items())
          + f"{os.cpu_count()} cores, threads per tool: {a.threads or 'default'}; "
          f"tol {a.tol} (relative, on L), one start each; "
          f"{'quick' if a.quick else 'full'} run, {a.repeats} repeat(s), median times")
    print()
    print("| case | n | K | peer | peer fit s (iters) | peer process s | mdem | mdem fit s "
          "(iters) | mdem EM s | mdem wall s | ratio | wall ratio | peer log-lik | "
          "mdem log-lik | rel. diff | load |")
    print("|---" * 16 + "|")
    flagged = []
    for r in results:
        c, p = r["case"], r["peer"]
        for key, label in mdem_runs(c, a):
            m = r[key]
            if "error" in m:
                print(f"| {c['name']} | {c['n']} | {c['k']} | {c['peer']} | | | {label} | "
                      f"failed: {m['error'][:80]} | | | | | | | | |")
                continue
            won = m.get("best_start_init")
            won = f", {won} start won" if won and won != c["init"] else ""
            mfit = f"{fmt_s(m['fit_s'])} ({m['iters']}{won})"
            if "ll" in p:
                ratio = p["fit_s"] / m["fit_s"]
                wratio = p["process_s"] / m["wall_s"]
                rel = (m["ll"] - p["ll"]) / abs(p["ll"])
                mark = ""
                if rel < -FLAG:
                    mark = " **MDEM BELOW**"
                    flagged.append((c, label, m, p, rel))
                piters = p.get("iterations", p.get("iters"))
                pconv = "" if p.get("converged", True) else ", not converged"
                print(f"| {c['name']} | {c['n']} | {c['k']} | {c['peer']} | "
                      f"{fmt_s(p['fit_s'])} ({piters}{pconv}) | {fmt_s(p['process_s'])} | "
                      f"{label} | {mfit} | {fmt_s(m['em_s'])} | {fmt_s(m['wall_s'])} | "
                      f"{ratio:.1f}× | {wratio:.1f}× | {p['ll']:.6f} | {m['ll']:.6f} | "
                      f"{rel:+.1e}{mark} | {r['load_before']:.1f}–{r['load_after']:.1f} |")
            else:
                why = p.get("skipped") or "failed: " + p.get("error", "")[:60]
                print(f"| {c['name']} | {c['n']} | {c['k']} | {c['peer']} | ({why}) | | "
                      f"{label} | {mfit} | {fmt_s(m['em_s'])} | {fmt_s(m['wall_s'])} | – | – "
                      f"| – | {m['ll']:.6f} | – | {r['load_before']:.1f}–{r['load_after']:.1f} |")
    print()
    print("rel. diff = (mdem − peer) / |peer| of the total log-likelihoods; ratio = peer fit "
          "call / mdem fit (starts + EM); wall ratio = peer process / mdem command.")
    print()
    print("mdem per phase (seconds_by_phase of the first repeat, s):")
    print()
    print("| case | n | mdem | read | check | fit | EM iterations | starts | output | total |")
    print("|---" * 10 + "|")
    for r in results:
        c = r["case"]
        for key, label in mdem_runs(c, a):
            m = r[key]
            if "phases" not in m:
                continue
            ph = m["phases"]
            print(f"| {c['name']} | {c['n']} | {label} | " + " | ".join(
                fmt_s(ph.get(x)) for x in ["read", "check", "fit", "fit_em_iterations",
                                           "fit_starts", "output", "total"]) + " |")
    for c, label, m, p, rel in flagged:
        print(f"\nMDEM BELOW {c['peer']} on {c['name']} (n {c['n']}, {label}): mdem "
              f"{m['ll']:.6f} < peer {p['ll']:.6f} (rel. {rel:+.2e}). Reproduce:\n"
              f"  {m['cmd']}\n  {p.get('cmd', '')}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    if not a.keep:
        for name in os.listdir(a.workdir):
            if name not in made and name.endswith(".csv"):
                os.remove(os.path.join(a.workdir, name))


if __name__ == "__main__":
    main()
