"""The seeds' data sets, reproduced exactly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Seed 000's true coefficients and bias.
SEED_COEF = (2.0, 8.0, 1.0, 3.0, 6.0)
SEED_BIAS = 4.0
#: Seed 000's training settings: ``LinearRegressor(**SEED_000_SETTINGS)`` reproduces the notebook's loop
#: (500 epochs of full-batch gradient descent at lr 1e-5 from weights of ones, raw features).
SEED_000_SETTINGS = {"epochs": 500, "lr": 1e-5, "init": "ones", "standardize": False}


def seed_linear(n_samples: int = 5000, n_features: int = 5, coef: Sequence[float] = SEED_COEF,
                bias: float = SEED_BIAS, random_state: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seed 000's problem: integer features 10..99 as float32, ``y = X @ coef + bias`` in float32.

    With ``random_state=s`` the features equal the notebook's
    ``np.random.seed(s); np.random.randint(10, 100, size=(n_samples, n_features))``
    (the legacy generator the notebook used). Returns ``(X, y)`` with y 1-D.
    """
    coef = np.asarray(coef, dtype=np.float32)
    if coef.shape != (n_features,):
        raise ValueError(f"coef must have n_features={n_features} entries, got shape {coef.shape}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    rng = np.random.RandomState(random_state)
    X = rng.randint(10, 100, size=(n_samples, n_features)).astype("float32")
    # Integer features, integer coefficients: every sum here is exact in float32,
    # so this equals the notebook's torch.matmul(inputs, coefficients) + bias.
    y = (X @ coef + np.float32(bias)).astype(np.float32)
    return X, y


def crops() -> tuple[np.ndarray, np.ndarray]:
    """Seed 003's data: 5 samples of 3 inputs (temperature, rainfall, humidity), 2 targets (apples, oranges)."""
    inputs = np.array([[73, 67, 43], [91, 88, 64], [87, 134, 58], [102, 43, 37], [69, 96, 70]], dtype="float32")
    targets = np.array([[57, 70], [81, 101], [119, 133], [22, 37], [103, 119]], dtype="float32")
    return inputs, targets
