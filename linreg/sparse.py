"""Sparse X (``scipy.sparse`` matrices and arrays): validation, the in-memory sparse source, predictions.

X stays sparse from the call to the kernels (``linreg.kernels.cpu_sparse``): never densified. The source
keeps X's CSR arrays and one CSC copy of its entries (the gradient goes by columns: deterministic for any
thread count with O(n_samples + n_features) scratch), so a fit holds about twice the matrix.

What differs from dense X, and why:

* ``standardize=True`` never centres X (that would make every entry non-zero). It is the engine's
  reparametrisation, as for dense X: the kernels see the original X with ``W / sigma`` and the intercept
  ``b - (W / sigma) @ mu``, so the mean lives in the intercept, as scikit-learn advises for sparse data
  (``StandardScaler(with_mean=False)`` plus a fitted intercept) - and the fit equals the dense one.
* The Gram statistics ((n_features + 1)^2 dense) are formed only up to ``GRAM_MAX_FEATURES`` features:
  beyond, ``solver="normal"``/``"gram"`` raise (use ``solver="gd"``) and ``lr="auto"`` takes the Hessian's
  largest eigenvalue by the Lanczos iteration through the sparse kernels.
* Only ``backend="cpu"`` trains on sparse X.
* Plain-SGD mini-batches on raw features (no momentum, penalty or weight decay) step only the batch's
  features, O(its non-zeros) a step, with the dense rule's bits (``kernels.cpu_train.lazy_steps_exact``);
  other option sets update every weight each step.
* Inference (``inference_rows``: every ``cov_type``) and ``linreg train --dataset X.npz --target-file y.npy``
  (``load_file``, a ``scipy.sparse.save_npz`` file) take sparse X too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from linreg import _validation as check
from linreg import driver
from linreg.options import Spec
from linreg.runs import GDRun
from linreg.training import Statistics

#: Up to this many features the sparse source forms the dense Gram statistics ((F+1)^2 float64: 128 MiB at
#: 4096) for solver="normal"/"gram" and lr="auto"; beyond, lr="auto" uses the Lanczos iteration.
GRAM_MAX_FEATURES = 4096

def check_gram_size(n_features: int, what: str, advice: str) -> None:
    """The error of ``what`` (which needs the dense Gram matrix) on sparse X beyond ``GRAM_MAX_FEATURES``."""
    if n_features > GRAM_MAX_FEATURES:
        size = (n_features + 1) ** 2 * 8 / 2**30
        raise ValueError(f"{what} needs the dense (n_features + 1)^2 Gram matrix: sparse X has {n_features} "
                         f"features ({size:.1f} GiB; the sparse limit is {GRAM_MAX_FEATURES} features). {advice}")


def _float_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """The dtype the kernels compute a sparse matrix of ``dtype`` in (the dense rules of ``as_float_array``)."""
    kind = dtype.kind
    if kind in "iub" or (kind == "f" and dtype.itemsize < 4):
        return np.dtype(np.float32)
    if dtype in check.FLOAT_DTYPES:
        return dtype
    if kind == "c":
        raise check.ComplexDataError(f"{name} must hold real numbers (integer or float dtype), got dtype {dtype}: "
                                     "Complex data not supported")
    raise TypeError(f"{name} must be a sparse matrix of numbers (integer or float dtype), got dtype {dtype}")


def as_csr(X: Any, name: str = "X", *, dtype: np.dtype | None = None, finite: bool = True):
    """``X`` as a CSR matrix of float32/float64 (``dtype`` if given), copying only what must change.

    CSC and the other formats (COO, DOK, LIL, BSR, DIA) are converted (a sparse copy, never dense). The
    caller's matrix is never modified. ``finite``: a NaN or inf entry is an error naming its row and column.
    """
    import scipy.sparse as sp

    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got a sparse array of shape {X.shape}")
    check.check_X_shape(X.shape, name)
    target = _float_dtype(np.dtype(X.dtype), name) if dtype is None else np.dtype(dtype)
    csr = X if X.format == "csr" else X.tocsr()
    if csr.dtype != target:
        csr = sp.csr_matrix((csr.data.astype(target), csr.indices, csr.indptr), shape=csr.shape)
    elif not isinstance(csr, sp.csr_matrix):  # a sparse array or a subclass: the same buffers as csr_matrix
        csr = sp.csr_matrix((csr.data, csr.indices, csr.indptr), shape=csr.shape, copy=False)
    if finite and not np.isfinite(csr.data).all():
        k = int(np.argmax(~np.isfinite(csr.data)))
        row = int(np.searchsorted(csr.indptr, k, side="right") - 1)
        raise ValueError(f"{name} contains {csr.data[k]} at row {row}, column {int(csr.indices[k])}; remove or "
                         "impute non-finite values (NaN or inf)")
    return csr


def kernel_view(csr, n_outputs: int = 1) -> Any:
    """The kernels' ``SparseRows`` of a CSR matrix: its arrays and a (blocked) CSC copy of its entries."""
    from linreg.kernels import cpu_sparse

    return cpu_sparse.sparse_rows(csr.indptr, csr.indices, csr.data, csr.shape, n_outputs=n_outputs)


def check_X_y(X: Any, y: Any, *, finite: bool = True):
    """(CSR X, Y 2-D, y_was_1d) in one float dtype (float64 if either is), as ``_validation.check_X_y``."""
    if y is None:
        raise ValueError("LinearRegressor requires y to be passed, but the target y is None")
    y = check.as_float_array(y, "y")
    check.check_X_shape(X.shape)
    check.check_y_shape(y.shape, X.shape)
    if finite:
        check.check_finite(y, "y")
    dtype = np.promote_types(_float_dtype(np.dtype(X.dtype), "X"), y.dtype)
    csr = as_csr(X, dtype=dtype, finite=finite)
    Y = y.reshape(-1, 1) if y.ndim == 1 else y
    return csr, np.ascontiguousarray(Y, dtype=dtype), y.ndim == 1


class SparseSource(driver.InMemory):
    """Sparse rows in memory (a source for ``driver.fit``): X a CSR matrix, Y (n_samples, n_outputs), weights.

    ``X`` is the kernels' view (``kernels.cpu_sparse.SparseRows``: the CSR arrays and a CSC copy), what the
    compiled engine trains on; ``matrix`` the validated CSR matrix.
    """

    sparse = True

    def __init__(self, matrix, Y: np.ndarray, weights: np.ndarray | None, *, y_was_1d: bool = False) -> None:
        super().__init__(kernel_view(matrix, Y.shape[1]), Y, weights, checked_finite=True, y_was_1d=y_was_1d)
        self.matrix = matrix

    def _weights_of(self, rows: np.ndarray | None) -> np.ndarray:
        from linreg.kernels import cpu_sparse

        return cpu_sparse.effective_weights(self.n_samples, rows, self.weights)

    def statistics(self, rows: np.ndarray | None, *, gram: bool, moments: bool, centred: bool = False) -> Statistics:
        """Column moments and/or the Gram statistics of ``rows`` (all if None), uncentred (``centred`` is ignored:
        sparse data is near 0). Beyond ``GRAM_MAX_FEATURES`` features the Gram statistics are replaced by the
        Hessian's largest eigenvalue (``Statistics.hessian_eigenvalue``, what lr="auto" needs), in the
        coordinates the fit trains in: standardised by these moments when ``moments`` (the driver asks for them
        exactly when it standardises)."""
        from linreg import training
        from linreg.kernels import cpu_sparse

        s = self._weights_of(rows)
        stats = Statistics()
        if moments:
            stats.mean, stats.std = cpu_sparse.column_moments(self.X, s)
        if gram and self.n_features <= GRAM_MAX_FEATURES:
            stats.G, stats.C, stats.yy = cpu_sparse.gram(self.X, self.Y, s)
        elif gram:
            mu, sigma = training.standardization(stats, moments, self.n_features)
            stats.hessian_eigenvalue = cpu_sparse.hessian_largest_eigenvalue(self.X, s, self.n_outputs, mu, sigma)
        if rows is None:
            stats.n_samples, stats.weighted = self.n_samples, self.weighted
        return stats

    def check_spec(self, spec: Spec, params: dict[str, Any]) -> None:
        """The options sparse X cannot take, as errors before any work."""
        if params["backend"] != "cpu":
            raise ValueError(f"sparse X trains on backend='cpu' (its own kernels), got backend={params['backend']!r}; "
                             "pass backend='cpu', or X.toarray() if the dense matrix fits on the device")
        if spec.solver in ("normal", "gram"):
            check_gram_size(self.n_features, f"solver={spec.solver!r}",
                            "Use solver='gd' (the default), which trains on the sparse rows")

    def start_gd(self, spec: Spec, state, lr: float, rows, val_rows, seed: int) -> GDRun:
        from linreg._engine import EngineRun

        return EngineRun(self.X, self.Y, spec, state, lr, spec.epochs, weights=self.weights, rows=rows,
                         val_rows=val_rows, seed=seed)

    def fingerprint(self) -> str:
        import hashlib

        digest = hashlib.blake2b(digest_size=16)
        m = self.matrix
        digest.update(f"sparse{m.shape}{m.dtype}{m.nnz}".encode())
        for array in (m.indptr, m.indices, m.data, self.Y) + ((self.weights,) if self.weights is not None else ()):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def source(X: Any, y: Any, sample_weight: Any, spec: Spec, params: dict[str, Any]) -> tuple[SparseSource, bool]:
    """The validated sparse source of (X, y, sample_weight) for ``spec``, and whether y was 1-D."""
    matrix, Y, one_output = check_X_y(X, y)
    weights = check.check_sample_weight(sample_weight, matrix.shape[0])
    data = SparseSource(matrix, Y, weights, y_was_1d=one_output)
    data.check_spec(spec, params)
    return data, one_output


def inference_rows(X: Any, y: Any, sample_weight: Any, team: Any):
    """``linreg.inference``'s rows of sparse (X, y): one chunk, the kernels' view of X (its Gram statistics and
    robust meat go by columns, never dense); beyond ``GRAM_MAX_FEATURES`` features the error of the Gram solvers."""
    from linreg import inference
    from linreg.kernels import cpu_sparse

    matrix, Y, _ = check_X_y(X, y)
    check_gram_size(matrix.shape[1], "inference (its covariances)",
                    "Fit and infer on a subset of the features, or use another tool for the standard errors")
    weights = check.check_sample_weight(sample_weight, matrix.shape[0])
    view = kernel_view(matrix, Y.shape[1])

    def gram():
        return cpu_sparse.gram(view, Y, cpu_sparse.effective_weights(matrix.shape[0], None, weights))

    return inference._Rows(lambda: iter([(view, Y, weights)]), matrix.shape[0], matrix.shape[1], Y.shape[1],
                           weights is not None, team, gram)


def predict(X: Any, W: np.ndarray, b: np.ndarray, n_features: int) -> np.ndarray:
    """``X @ W.T + b`` (n_samples, n_outputs) for sparse X, in the dtype of X and W promoted."""
    from linreg.kernels import cpu_sparse

    dtype = np.promote_types(_float_dtype(np.dtype(X.dtype), "X"), W.dtype)
    csr = as_csr(X, dtype=dtype)
    if csr.shape[1] != n_features:
        raise ValueError(f"X has {csr.shape[1]} features, but LinearRegressor is expecting {n_features} features "
                         "as input")
    view = cpu_sparse.sparse_rows(csr.indptr, csr.indices, csr.data, csr.shape, columns=False)  # rows only
    return cpu_sparse.predict(view, W.astype(dtype), b.astype(dtype))


# --------------------------------------------------------------------------- files (the CLI)

#: The arrays ``scipy.sparse.save_npz`` writes besides the format's own (``data``, ``indices``, ``indptr``, ...).
_SAVE_NPZ_KEYS = {"format", "shape"}


def is_sparse_file(path: Any) -> bool:
    """Whether ``path`` is a ``.npz`` archive written by ``scipy.sparse.save_npz`` (it holds ``format`` and
    ``shape``), read without loading its arrays."""
    from pathlib import Path

    path = Path(str(path))
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as archive:
            return _SAVE_NPZ_KEYS <= set(archive.keys())
    except (OSError, ValueError):
        return False


def load_file(path: Any, target_file: Any, weight_file: Any = None):
    """(X as CSR, y, sample_weight or None) from a ``scipy.sparse.save_npz`` file and ``.npy`` targets (and
    weights): X loads sparse, never dense. Errors (ValueError) say which file is wrong and how."""
    import scipy.sparse as sp

    if target_file is None:
        raise ValueError(f"{path} is a sparse matrix (scipy.sparse.save_npz), which holds no target column: give "
                         "the targets as --target-file y.npy, (n_samples,) or (n_samples, n_outputs)")
    try:
        X = sp.load_npz(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the sparse matrix {path}: {error}") from None
    arrays = []
    for flag, file in (("--target-file", target_file), ("--weight-file", weight_file)):
        if file is None:
            arrays.append(None)
            continue
        if not str(file).lower().endswith(".npy"):
            raise ValueError(f"{flag} must be a .npy file, got {file}")
        try:
            array = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read {flag} {file}: {error}") from None
        if array.shape[:1] != (X.shape[0],):
            raise ValueError(f"{flag} {file} has shape {array.shape}, but the sparse matrix {path} has "
                             f"{X.shape[0]} rows: expected ({X.shape[0]},)"
                             + (" or (n_samples, n_outputs)" if flag == "--target-file" else ""))
        arrays.append(array)
    return X.tocsr(), arrays[0], arrays[1]
