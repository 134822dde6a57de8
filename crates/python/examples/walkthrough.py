"""The walk-through of docs/09-python.md, as one script (its outputs are the chapter's).

Run: python crates/python/examples/walkthrough.py [figure.png]
"""

import sys

import numpy as np

from mdem import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor

# 1. Data: two linear experts y = +-2 x0 + noise, the expert drawn by a soft gate on x1.
rng = np.random.default_rng(0)
n = 2000
X = rng.normal(size=(n, 2))
z = rng.uniform(size=n) < 1 / (1 + np.exp(-2 * X[:, 1]))
y = np.where(z, 2 * X[:, 0], -2 * X[:, 0]) + 0.3 * rng.normal(size=n)

# 2. Fit by EM.
em = MixtureOfExpertsRegressor(n_experts=2, solver="em", random_state=0).fit(X, y)
print(em.model_)
for e in em.summary()["experts"]:
    print("expert", e["expert"], e["coefficients"][0]["values"], e["scalars"])
print("gate", em.summary()["gate"]["coefficients"])
print("R^2", round(em.score(X, y), 4))

# 3. The same starts through gradient descent, SQUAREM and mirror descent.
runs = {"EM": em}
for name, kw in [
    ("SQUAREM", dict(solver="squarem")),
    ("MD(1/L)", dict(solver="md")),
    ("MD(eta=0.5)", dict(solver="md", eta=0.5)),
    ("GD(Armijo)", dict(solver="gd", max_iter=5000)),
]:
    runs[name] = MixtureOfExpertsRegressor(n_experts=2, random_state=0, **kw).fit(X, y)
best = max(r.log_likelihood_ for r in runs.values())
print(f"{'solver':<12} {'iterations':>10} {'log-likelihood':>16} {'gap to best':>12}  termination")
for name, r in runs.items():
    print(
        f"{name:<12} {r.n_iter_:>10} {r.log_likelihood_:>16.8f} "
        f"{best - r.log_likelihood_:>12.2e}  {r.termination_}"
    )

# 4. The certificate of the EM fit and the EM = MD(eta = 1) harness.
cert = em.certificate()
print(cert["summary"])
print({k: cert[k] for k in ("verdict", "l_hat", "alpha_hat", "predicted_rate")})
print(em.em_md_gap()["summary"])
print(em.em_md_gap(eta=0.5)["summary"])

# 5. A classifier with string labels.
labels = np.array(["left", "right"])[(X[:, 0] * np.where(z, 1, -1) > 0).astype(int)]
clf = MixtureOfExpertsClassifier(n_experts=2, random_state=0).fit(X, labels)
print(clf.classes_, clf.expert_, clf.predict_proba(X[:3]).round(3), clf.predict(X[:3]))

# 5b. Separable classes: no finite optimum without a ridge, a finite one with it.
Xs = rng.normal(size=(200, 2))
ys = (Xs[:, 0] > 0).astype(int)  # separable by x0
free = MixtureOfExpertsClassifier(n_experts=2, random_state=0).fit(Xs, ys)
ridged = MixtureOfExpertsClassifier(n_experts=2, ridge=1.0, random_state=0).fit(Xs, ys)
print(free.converged_, np.abs(free.theta_).max().round(1))
print(ridged.converged_, np.abs(ridged.theta_).max().round(3), ridged.termination_)

# 6. The figure: L(theta_t) - L* on a log scale, every solver (matplotlib if installed).
if len(sys.argv) > 1:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure")
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, r in runs.items():
            gap = (best - r.trajectory_) / n
            ax.semilogy(np.arange(1, len(gap) + 1), np.maximum(gap, 1e-16), label=name)
        ax.set_xlabel("iteration t")
        ax.set_ylabel("L(θ_t) − L*")
        ax.set_xscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(sys.argv[1], dpi=110)
        print("figure written to", sys.argv[1])
