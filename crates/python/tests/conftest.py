"""Shared data for the tests: small, seeded, quick to fit."""

import numpy as np
import pytest


def two_regimes(n=300, seed=0):
    """y = +2 x0 or -2 x0 (plus noise), the regime drawn with P = sigmoid(2 x1): two
    linear experts under a soft softmax gate (a finite maximum-likelihood gate)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    z = rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-2.0 * X[:, 1]))
    y = np.where(z, 2.0 * X[:, 0], -2.0 * X[:, 0]) + 0.3 * rng.normal(size=n)
    return X, y


def two_classes(n=300, seed=1):
    """Binary labels from two logistic regimes by the sign of x1."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    logit = np.where(X[:, 1] > 0, 3.0 * X[:, 0], -3.0 * X[:, 0])
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    return X, y


def three_classes(n=300, seed=2):
    """Three classes with overlapping regions (not separable)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    logits = np.stack([X[:, 0], -X[:, 0], 0.5 * X[:, 1]], axis=1) * 1.5
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    return X, y


def counts(n=300, seed=3):
    """Poisson counts from two log-linear regimes."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    rate = np.exp(np.where(X[:, 1] > 0, 1.0 + 0.5 * X[:, 0], 0.2 - 0.5 * X[:, 0]))
    return X, rng.poisson(rate).astype(float)


@pytest.fixture
def regimes():
    return two_regimes()
