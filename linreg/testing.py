"""Tolerances by dtype, in one place, with the reasons; and the comparison helper tests use.

Errors are measured norm-wise: ``max|actual - expected| <= rtol * max|expected|``,
because single gradient entries can be near zero by cancellation while the
gradient as a whole is not.
"""

from __future__ import annotations

import numpy as np

TOLERANCES: dict[np.dtype, dict[str, float]] = {
    np.dtype(np.float32): {
        # Our kernels against a float64 NumPy reference on the same float32 values:
        # everything is accumulated in float64, the only float32 rounding is of the
        # result (2**-24 ~ 6e-8 relative); 1e-6 leaves room for summation order.
        "reference": 1e-6,
        # Against the torch autograd oracle in float32: torch rounds each residual
        # and partial sum to float32 (eps 1.2e-7 times log2(n) ~ 1e-6 at 1e4 rows,
        # more when predictions are much larger than residuals); 1e-4 bounds it.
        "oracle": 1e-4,
        # Whole loss histories against the seeds' float32 torch loop: measured
        # 6e-5 (torch's float32 residuals) and 3e-5 (our float32 parameters) from
        # the float64 trajectory on seed 000's 500 epochs; 2e-4 leaves 3x margin.
        "trajectory": 2e-4,
    },
    np.dtype(np.float64): {
        # Same computation, only summation order differs: ~n * eps64 relative at worst.
        "reference": 1e-12,
        # torch float64 sums in another order; measured ~1e-15, bound generously.
        "oracle": 1e-10,
        # Measured 5e-14 over seed 000's 500 epochs (the loop is contracting).
        "trajectory": 1e-10,
    },
}


def tolerance(dtype: np.dtype | type, kind: str) -> float:
    """The relative tolerance of ``kind`` ("reference", "oracle", "trajectory") for ``dtype``."""
    return TOLERANCES[np.dtype(dtype)][kind]


def assert_close(actual, expected, dtype: np.dtype | type, kind: str, what: str = "") -> None:
    """Norm-wise relative comparison at the documented tolerance."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} != expected {expected.shape}")
    rtol = tolerance(dtype, kind)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), np.finfo(np.float64).tiny)
    error = float(np.max(np.abs(actual - expected), initial=0.0)) / scale
    if not error <= rtol:
        raise AssertionError(f"{what}: relative error {error:.3g} > {kind} tolerance {rtol:g} for {np.dtype(dtype)}")
