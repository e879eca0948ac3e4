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


class ComplexDataError(TypeError, ValueError):
    """Complex numbers were given: not a dtype the kernels take (TypeError), nor values a least-squares fit of
    real numbers can use (ValueError, as scikit-learn raises it)."""


def is_sparse(value: Any) -> bool:
    """A scipy.sparse matrix or array (without importing scipy)."""
    return type(value).__module__.startswith("scipy.sparse") and hasattr(value, "nnz")


def _library(value: Any) -> str:
    return type(value).__module__.split(".", 1)[0]


def _frame_columns(value: Any) -> list[tuple[str, Any, bool]] | None:
    """(name, dtype, numeric) of each column of a pandas / polars DataFrame or a pyarrow Table, else None."""
    library = _library(value)
    if library == "pandas" and hasattr(value, "dtypes") and hasattr(value, "columns"):
        from pandas.api.types import is_complex_dtype, is_numeric_dtype

        return [(str(column), dtype, is_numeric_dtype(dtype) and not is_complex_dtype(dtype))
                for column, dtype in value.dtypes.items()]
    if library == "polars" and hasattr(value, "schema") and hasattr(value, "columns"):
        return [(column, dtype, dtype.is_numeric() or str(dtype) == "Boolean")
                for column, dtype in value.schema.items()]
    if library == "pyarrow" and hasattr(value, "column_names") and hasattr(value, "schema"):
        import pyarrow as pa

        return [(field.name, field.type, pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
                 or pa.types.is_boolean(field.type)) for field in value.schema]
    return None


def _from_dataframe(value: Any, name: str) -> np.ndarray | None:
    """A DataFrame-like's numeric columns as one ndarray, converted by its own library (no detour through
    pandas); a non-numeric column is an error that names it. None for anything else."""
    columns = _frame_columns(value)
    library = _library(value)
    if columns is not None:
        for column, dtype, numeric in columns:
            if not numeric:
                raise TypeError(f"{name} column {column!r} holds {dtype}, not numbers: encode it (for example "
                                "one-hot) or drop it")
        if library == "pyarrow":
            if not columns:
                return np.empty((value.num_rows, 0))
            return np.column_stack([value.column(i).to_numpy() for i in range(value.num_columns)])
        return value.to_numpy()
    if library in ("polars", "pyarrow") and hasattr(value, "to_numpy"):  # a Series, Array or ChunkedArray
        return value.to_numpy()
    return None


def as_float_array(value: Any, name: str) -> np.ndarray:
    """``value`` as a float32/float64 ndarray without copying when it already is one."""
    frame = _from_dataframe(value, name)
    if frame is not None:
        value = frame
    if is_sparse(value):
        raise TypeError(f"{name} is a sparse matrix ({type(value).__name__}): only X may be sparse (in fit, "
                        "partial_fit, predict and score), and linreg never densifies it silently; pass "
                        f"{name} as a dense array, e.g. {name}.toarray()")
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
    if kind == "c":
        raise ComplexDataError(f"{name} must hold real numbers (integer or float dtype), got dtype {array.dtype}: "
                               "Complex data not supported")
    reason = ""
    if kind == "O":
        try:
            return as_float_array(array.astype(np.float64), name)
        except (TypeError, ValueError) as error:
            reason = f" ({error})"
    raise TypeError(f"{name} must hold numbers (integer or float dtype), got dtype {array.dtype}{reason}")


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise ValueError naming the first non-finite entry (row, column)."""
    if not np.isfinite(array).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        value = array[where]
        position = f"row {where[0]}" + (f", column {where[1]}" if len(where) > 1 else "")
        raise ValueError(f"{name} contains {value} at {position}; remove or impute non-finite values (NaN or inf)")


def check_X_shape(shape: tuple[int, ...], name: str = "X") -> None:
    """X must be 2-D with at least one sample and one feature (host or device arrays alike)."""
    if len(shape) != 2:
        hint = (". Reshape your data: X.reshape(-1, 1) if it has a single feature, X.reshape(1, -1) if it is a "
                "single sample") if len(shape) == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {shape}{hint}")
    if shape[0] < 1:
        raise ValueError(f"{name} is empty: 0 sample(s) (shape={shape}) while a minimum of 1 is required.")
    if shape[1] < 1:
        raise ValueError(f"{name} has no features: 0 feature(s) (shape={shape}) while a minimum of 1 is required.")


def check_y_shape(shape: tuple[int, ...], X_shape: tuple[int, ...]) -> None:
    """y must be 1-D or 2-D with X's rows and at least one output (host or device arrays alike)."""
    if len(shape) not in (1, 2):
        raise ValueError(f"y must be 1-D (n_samples,) or 2-D (n_samples, n_outputs), got shape {shape}")
    if shape[0] != X_shape[0]:
        raise ValueError(f"X and y must have the same number of samples, got X {X_shape} and y {shape}")
    if len(shape) == 2 and shape[1] < 1:
        raise ValueError(f"y has no outputs: need at least 1 column, got shape {shape}")


def check_weight_total(total: float) -> None:
    """Sample weights that are all zero carry no information."""
    if not total > 0:
        raise ValueError("sample_weight sums to 0 (every sample weight is zero): at least one sample must have a "
                         "positive weight")


def check_X(X: Any, *, name: str = "X", finite: bool = True) -> np.ndarray:
    array = as_float_array(X, name)
    check_X_shape(array.shape, name)
    if finite:
        check_finite(array, name)
    return array


def check_X_y(X: Any, y: Any, *, finite: bool = True) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validated (X, Y2d, y_was_1d): X and Y in one float dtype (float64 if either is), C-contiguous.

    ``finite=False`` skips the scan for NaN/Inf (a full pass over X): for callers whose own
    pass over the data propagates non-finite values into a small result (the Gram
    statistics) and that call ``check_X_y_finite`` only when that result is not finite.
    """
    if y is None:
        raise ValueError("LinearRegressor requires y to be passed, but the target y is None")
    X = check_X(X, finite=finite)
    y = as_float_array(y, "y")
    check_y_shape(y.shape, X.shape)
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
    check_weight_total(weights.sum())
    return np.ascontiguousarray(weights, dtype=np.float64)


def feature_names(X: Any) -> np.ndarray | None:
    """The column names of a DataFrame-like X (all strings), else None: what ``feature_names_in_`` records."""
    columns = getattr(X, "column_names", None) if _library(X) == "pyarrow" else getattr(X, "columns", None)
    if columns is None:
        return None
    names = np.asarray(list(columns), dtype=object)
    return names if all(isinstance(name, str) for name in names) else None
