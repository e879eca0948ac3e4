"""Input validation shared by the estimator and the CLI: every check runs before any work.

Errors say what was wrong, what was expected and what was given. Nothing the
caller passed is modified: arrays are only read, converted copies are new.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

#: The dtypes the kernels compute in. Integer and boolean data become float32, as the seeds do.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(value: Any, name: str) -> np.ndarray:
    """``value`` as a float32/float64 ndarray without copying when it already is one."""
    if hasattr(value, "__cuda_array_interface__") and not isinstance(value, np.ndarray):
        raise TypeError(f"{name} is a GPU array ({type(value).__name__}); this backend needs host data")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be array-like of numbers, got {type(value).__name__}: {error}") from None
    kind = array.dtype.kind
    if kind in "iub":
        return array.astype(np.float32)
    if kind == "f":
        if array.dtype in FLOAT_DTYPES:
            return array
        if array.dtype.itemsize < 4:  # float16: widen, nothing is lost
            return array.astype(np.float32)
        raise TypeError(f"{name} must be float32 or float64 (or integer), got {array.dtype}")
    if kind == "O":
        try:
            return as_float_array(array.astype(np.float64), name)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"{name} must hold numbers (integer or float dtype), got dtype {array.dtype}")


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise ValueError naming the first non-finite entry (row, column)."""
    if not np.isfinite(array).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        value = array[where]
        position = f"row {where[0]}" + (f", column {where[1]}" if len(where) > 1 else "")
        raise ValueError(f"{name} contains {value} at {position}; remove or impute non-finite values")


def check_X(X: Any, *, name: str = "X", finite: bool = True) -> np.ndarray:
    array = as_float_array(X, name)
    if array.ndim != 2:
        hint = " (use X.reshape(-1, 1) for a single feature)" if array.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {array.shape}{hint}")
    if array.shape[0] < 1:
        raise ValueError(f"{name} is empty: need at least 1 sample, got shape {array.shape}")
    if array.shape[1] < 1:
        raise ValueError(f"{name} has no features: need at least 1 column, got shape {array.shape}")
    if finite:
        check_finite(array, name)
    return array


def check_X_y(X: Any, y: Any, *, finite: bool = True) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validated (X, Y2d, y_was_1d): X and Y in one float dtype (float64 if either is), C-contiguous.

    ``finite=False`` skips the scan for NaN/Inf (a full pass over X): for callers whose own
    pass over the data propagates non-finite values into a small result (the Gram
    statistics) and that call ``check_X_y_finite`` only when that result is not finite.
    """
    X = check_X(X, finite=finite)
    y = as_float_array(y, "y")
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D (n_samples,) or 2-D (n_samples, n_outputs), got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X and y must have the same number of samples, got X {X.shape} and y {y.shape}")
    if y.ndim == 2 and y.shape[1] < 1:
        raise ValueError(f"y has no outputs: need at least 1 column, got shape {y.shape}")
    if finite:
        check_finite(y, "y")
    dtype = np.promote_types(X.dtype, y.dtype)
    Y = y.reshape(-1, 1) if y.ndim == 1 else y
    return np.ascontiguousarray(X, dtype=dtype), np.ascontiguousarray(Y, dtype=dtype), y.ndim == 1


def check_X_y_finite(X: np.ndarray, Y: np.ndarray, y_was_1d: bool) -> None:
    """The finiteness checks ``check_X_y(finite=False)`` skipped, with the same errors (X first, then y)."""
    check_finite(X, "X")
    check_finite(Y[:, 0] if y_was_1d else Y, "y")


def check_positive(value: Any, name: str, *, integer: bool = False) -> Any:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if integer else "a real number"
        raise TypeError(f"{name} must be {expected} > 0, got {value!r} ({type(value).__name__})")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be > 0 and finite, got {value!r}")
    return value


def check_choice(value: Any, name: str, choices: tuple) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray | None:
    """None, or float64 (n_samples,) weights: finite, non-negative, not all zero."""
    if sample_weight is None:
        return None
    weights = as_float_array(sample_weight, "sample_weight")
    if weights.ndim == 0:
        weights = np.full(n_samples, float(weights))
    if weights.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got {weights.shape}")
    check_finite(weights, "sample_weight")
    if (weights < 0).any():
        first = int(np.argmax(weights < 0))
        raise ValueError(f"sample_weight must be non-negative, got {weights[first]} at row {first}")
    if not weights.sum() > 0:
        raise ValueError("sample_weight sums to 0: at least one sample must have a positive weight")
    return np.ascontiguousarray(weights, dtype=np.float64)
