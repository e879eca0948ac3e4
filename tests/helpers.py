"""Reference computations shared by the tests: NumPy in float64, written once."""

import numpy as np


def reference_loss_grad(X, Y, W, b):
    """Loss, dW, db of DESIGN.md section 1 in float64 NumPy."""
    X, Y, W, b = (np.asarray(a, dtype=np.float64) for a in (X, Y, W, b))
    R = X @ W.T + b - Y
    n_elements = R.size
    return (R * R).sum() / n_elements, 2.0 / n_elements * R.T @ X, 2.0 / n_elements * R.sum(axis=0)


def random_problem(n_samples, n_features, n_outputs, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)).astype(dtype)
    Y = rng.standard_normal((n_samples, n_outputs)).astype(dtype)
    W = rng.standard_normal((n_outputs, n_features)).astype(dtype)
    b = rng.standard_normal(n_outputs).astype(dtype)
    return X, Y, W, b
