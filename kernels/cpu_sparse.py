"""Kernels for sparse X: loss and gradients, predictions, column moments, Gram statistics, Hessian products.

Shapes (as in ``kernels.cpu``; X is never densified)::

    X  (n_samples, n_features)  a ``SparseRows``: the same matrix twice,
         CSR: indptr (n_samples + 1,), indices (nnz,), data (nnz,)   rows, for residuals and predictions
         CSC: col_ptr (n_features + 1,), row_idx (nnz,), col_data (nnz,)   columns, for the gradient
         (indices int32 or int64; data float32 or float64; column indices within a row in any order,
         duplicates add up, explicit zeros are zeros; the CSC's row indices ascending in each column)
    Y  (n_samples, n_outputs)   dense targets, X's dtype
    W  (n_outputs, n_features), b (n_outputs,)   parameters in X's dtype
    order (n_positions,) int64  row of each batch position (empty: row = position); weights (n_samples,) float64
    residual (n_samples, n_outputs) float64   scratch: s_i r_i of the batch's rows
    G (F+1, F+1), C (F+1, O), yy (O,)         Gram statistics of A = [X 1], as ``kernels.cpu_train``

Formulas, for a batch B with weights s (1 if none), r_i = x_i W^T + b - y_i::

    loss = sum_{i in B} s_i ||r_i||^2 / (n_outputs * S),   S = sum_{i in B} s_i
    dW   = 2 / (n_outputs * S) * sum_i s_i r_i^T x_i,     db = 2 / (n_outputs * S) * sum_i s_i r_i
    P    = X W^T + b
    mean_f = sum_i s_i x_if / S
    var_f  = (sum_{x_if != 0} s_i (x_if - mean_f)^2 + mean_f^2 (S - sum_{x_if != 0} s_i)) / S   (zeros implicit)
    G    = A^T S A,  C = A^T S Y,  yy = diag(Y^T S Y)
    Hessian product (one output, standardised coordinates (mu, sigma)):
         u = X (w / sigma) - mu . (w / sigma) + c
         H [w c] = 2 / (n_outputs * S) * [(X^T s u - mu sum s u) / sigma, sum s u]

Parallel strategy, deterministic for any thread count, with scratch bounded by O(n_samples + n_features), never
(chunks x features) partials:

* Residuals by rows: the batch's positions are cut into the chunks of ``kernels.cpu.chunking`` (a layout that
  depends on the batch length only); a chunk writes the residuals of its own rows (distinct rows: no race)
  and its own loss, weight and db partials, combined afterwards in chunk order.
* The gradient by columns: dW[:, j] is the sum over column j of the CSC view, in ascending row order, of
  x_ij * s_i r_i. Each column is written by one prange iteration: no race, and the order of every sum is
  fixed by the matrix alone. Rows outside the batch have residual 0 (the residual array is zeroed first).
* Small batches (a mini-batch, well under a quarter of the rows) instead scatter their rows' CSR entries
  into dW serially, in batch order: O(batch non-zeros + n_features), not a pass over all of X.
* Column moments, the Gram statistics and the Hessian's column half go by columns in the same way; the Gram
  row j of column j's pass is G[j, :] = sum_{i: x_ij != 0} s_i x_ij x_i (the CSR row i), so G stays exactly
  symmetric (x_ij x_if is commutative; both halves add in ascending row order).

Accumulation is in float64 whatever the dtype, as in ``kernels.cpu``. Small passes (fewer than
``min_work`` multiply-adds) walk the same chunks and columns in a plain loop: same result.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit, prange

from . import cpu

_FASTMATH = {"reassoc", "contract"}

#: A batch that covers at least this share of the rows takes the gradient by columns (a pass over all
#: non-zeros); a smaller one scatters its own rows' entries (``_scatter_gradient``).
COLUMN_PASS_MIN_SHARE = 0.25


class SparseRows(namedtuple("SparseRows", ["shape", "indptr", "indices", "data", "col_ptr", "row_idx", "col_data"])):
    """A sparse X as the kernels take it: its CSR arrays and a CSC view of the same entries (module doc).

    A namedtuple (numba compiles it as a struct of arrays); ``shape`` is (n_samples, n_features) int64.
    """

    __slots__ = ()

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def nnz(self) -> int:
        return int(self.data.shape[0])


def sparse_rows(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, col_ptr: np.ndarray,
                row_idx: np.ndarray, col_data: np.ndarray, shape: tuple[int, int]) -> SparseRows:
    """A ``SparseRows`` of the given CSR and CSC arrays (not copied), with a typed shape."""
    if data.dtype not in (np.float32, np.float64) or col_data.dtype != data.dtype:
        raise TypeError(f"sparse data must be float32 or float64 in both views, got {data.dtype} and "
                        f"{col_data.dtype}")
    return SparseRows((np.int64(shape[0]), np.int64(shape[1])), indptr, indices, data, col_ptr, row_idx, col_data)


# --------------------------------------------------------------------------- rows: residuals and predictions


@njit(cache=True, fastmath=_FASTMATH)
def _residual_rows(indptr, indices, data, Y, W, b, order, weights, start, stop, residual, db_part):
    """Positions [start, stop) of the CSR rows: residual[i] = s_i r_i, db_part = sum s r; returns
    (sum s ||r||^2, sum s)."""
    n_outputs = W.shape[0]
    for o in range(n_outputs):
        db_part[o] = 0.0
    total = 0.0
    weight_total = 0.0
    for p in range(start, stop):
        i = order[p] if order.shape[0] > 0 else p
        s = weights[i] if weights.shape[0] > 0 else 1.0
        weight_total += s
        for o in range(n_outputs):
            r = np.float64(b[o]) - np.float64(Y[i, o])
            for k in range(indptr[i], indptr[i + 1]):
                r += np.float64(data[k]) * np.float64(W[o, indices[k]])
            total += s * r * r
            residual[i, o] = s * r
            db_part[o] += s * r
    return total, weight_total


@njit(parallel=True, cache=True)
def _residuals(X, Y, W, b, order, weights, start, stop, residual, parallel, chunk_rows, n_chunks, db_parts,
               loss_parts, weight_parts, db):
    """Residuals of positions [start, stop) (``_residual_rows``) by chunks; db = sum s r. Returns (loss sum, S).

    (The parallel drivers unpack X's arrays first: numba's parallel regions cannot take the namedtuple.)"""
    indptr, indices, data = X.indptr, X.indices, X.data
    if parallel:
        for c in prange(n_chunks):
            lo = start + c * chunk_rows
            loss_parts[c], weight_parts[c] = _residual_rows(indptr, indices, data, Y, W, b, order, weights, lo,
                                                            min(lo + chunk_rows, stop), residual, db_parts[c])
    else:
        for c in range(n_chunks):
            lo = start + c * chunk_rows
            loss_parts[c], weight_parts[c] = _residual_rows(indptr, indices, data, Y, W, b, order, weights, lo,
                                                            min(lo + chunk_rows, stop), residual, db_parts[c])
    total = 0.0
    weight_total = 0.0
    for o in range(db.shape[0]):
        db[o] = 0.0
    for c in range(n_chunks):  # chunk order: the same sums for any thread count
        total += loss_parts[c]
        weight_total += weight_parts[c]
        for o in range(db.shape[0]):
            db[o] += db_parts[c, o]
    return total, weight_total


@njit(cache=True, fastmath=_FASTMATH)
def _predict_rows(indptr, indices, data, W, b, out, start, stop):
    n_outputs = W.shape[0]
    for i in range(start, stop):
        for o in range(n_outputs):
            acc = np.float64(b[o])
            for k in range(indptr[i], indptr[i + 1]):
                acc += np.float64(data[k]) * np.float64(W[o, indices[k]])
            out[i, o] = acc


@njit(parallel=True, cache=True)
def _predict(X, W, b, out, parallel, chunk_rows, n_chunks):
    n_samples = X.shape[0]
    indptr, indices, data = X.indptr, X.indices, X.data
    if parallel:
        for c in prange(n_chunks):
            _predict_rows(indptr, indices, data, W, b, out, c * chunk_rows, min((c + 1) * chunk_rows, n_samples))
    else:
        for c in range(n_chunks):
            _predict_rows(indptr, indices, data, W, b, out, c * chunk_rows, min((c + 1) * chunk_rows, n_samples))


# --------------------------------------------------------------------------- columns: the gradient


@njit(cache=True, fastmath=_FASTMATH)
def _column_sums(col_ptr, row_idx, col_data, residual, dW, scale, j):
    """dW[:, j] = scale * sum over column j (ascending rows) of x_ij * residual[i]."""
    for o in range(dW.shape[0]):
        acc = 0.0
        for k in range(col_ptr[j], col_ptr[j + 1]):
            acc += np.float64(col_data[k]) * residual[row_idx[k], o]
        dW[o, j] = scale * acc


@njit(parallel=True, cache=True)
def _column_gradient(X, residual, dW, scale, parallel):
    """dW = scale * residual^T X by columns of the CSC view (module doc): each column one iteration's own."""
    n_features = dW.shape[1]
    col_ptr, row_idx, col_data = X.col_ptr, X.row_idx, X.col_data
    if parallel:
        for j in prange(n_features):
            _column_sums(col_ptr, row_idx, col_data, residual, dW, scale, j)
    else:
        for j in range(n_features):
            _column_sums(col_ptr, row_idx, col_data, residual, dW, scale, j)


@njit(cache=True, fastmath=_FASTMATH)
def _scatter_gradient(X, residual, order, start, stop, dW, scale):
    """dW = scale * sum over positions [start, stop), in order, of residual[i]^T x_i (the CSR rows): serial."""
    n_outputs, n_features = dW.shape
    indptr, indices, data = X.indptr, X.indices, X.data
    for o in range(n_outputs):
        for f in range(n_features):
            dW[o, f] = 0.0
    for p in range(start, stop):
        i = order[p] if order.shape[0] > 0 else p
        for k in range(indptr[i], indptr[i + 1]):
            x = np.float64(data[k])
            f = indices[k]
            for o in range(n_outputs):
                dW[o, f] += x * residual[i, o]
    for o in range(n_outputs):
        for f in range(n_features):
            dW[o, f] *= scale


@njit(cache=True)
def _zero_rows(residual):
    for i in range(residual.shape[0]):
        for o in range(residual.shape[1]):
            residual[i, o] = 0.0


@njit(cache=True)
def _batch_loss_grad(X, Y, W, b, order, weights, start, stop, dW, db, chunk_rows, n_chunks, work):
    """Loss (weighted mean, module doc) and float64 dW, db of positions [start, stop); returns (loss, S).

    ``work`` = (residual, db_parts, loss_parts, weight_parts, min_work) (``engine_work``). A batch whose
    weights are all 0 returns (0, 0) and zero gradients: the training loop skips its step.
    """
    residual, db_parts, loss_parts, weight_parts, min_work = work
    n_samples = X.shape[0]
    n_outputs = W.shape[0]
    n = stop - start
    nnz = X.data.shape[0]
    batch_work = (n * (nnz // max(n_samples, 1) + 1)) * n_outputs
    by_columns = n >= COLUMN_PASS_MIN_SHARE * n_samples
    whole = order.shape[0] == 0 and start == 0 and n == n_samples
    if by_columns and not whole:  # rows outside the batch must add nothing to the column sums
        _zero_rows(residual)
    loss, weight_total = _residuals(X, Y, W, b, order, weights, start, stop, residual, batch_work >= min_work,
                                    chunk_rows, n_chunks, db_parts, loss_parts, weight_parts, db)
    if weight_total == 0.0:
        dW[:] = 0.0
        db[:] = 0.0
        return 0.0, 0.0
    n_elements = n_outputs * weight_total
    scale = 2.0 / n_elements
    for o in range(n_outputs):
        db[o] *= scale
    if by_columns:
        _column_gradient(X, residual, dW, scale, (nnz + X.shape[1]) * n_outputs >= min_work)
    else:
        _scatter_gradient(X, residual, order, start, stop, dW, scale)
    return loss / n_elements, weight_total


def engine_work(X: SparseRows, n_outputs: int, max_chunks: int) -> tuple:
    """The scratch ``_batch_loss_grad`` takes, for batches of up to ``max_chunks`` chunks: O(n_samples * n_outputs)."""
    return (np.zeros((int(X.shape[0]), n_outputs)), np.zeros((max_chunks, n_outputs)), np.zeros(max_chunks),
            np.zeros(max_chunks), np.int64(cpu.PARALLEL_MIN_WORK))


# --------------------------------------------------------------------------- statistics (by columns)


@njit(cache=True, fastmath=_FASTMATH)
def _column_moments_of(col_ptr, row_idx, col_data, s, weight_total, mean, variance, j):
    first = 0.0
    for k in range(col_ptr[j], col_ptr[j + 1]):
        first += s[row_idx[k]] * np.float64(col_data[k])
    m = first / weight_total
    second = 0.0
    covered = 0.0
    for k in range(col_ptr[j], col_ptr[j + 1]):
        d = np.float64(col_data[k]) - m
        second += s[row_idx[k]] * d * d
        covered += s[row_idx[k]]
    mean[j] = m
    variance[j] = (second + m * m * (weight_total - covered)) / weight_total


@njit(parallel=True, cache=True)
def _column_moments(X, s, weight_total, mean, variance, parallel):
    """Weighted mean and variance of every column (module doc), two passes over each column's entries."""
    col_ptr, row_idx, col_data = X.col_ptr, X.row_idx, X.col_data
    if parallel:
        for j in prange(mean.shape[0]):
            _column_moments_of(col_ptr, row_idx, col_data, s, weight_total, mean, variance, j)
    else:
        for j in range(mean.shape[0]):
            _column_moments_of(col_ptr, row_idx, col_data, s, weight_total, mean, variance, j)


# No "reassoc" here: it would let LLVM hoist s_i * x_ij out of the row loop, and G would lose its exact symmetry.
@njit(cache=True, fastmath={"contract"})
def _gram_column(indptr, indices, data, col_ptr, row_idx, col_data, Y, s, G, C, j):
    """Row j of G (all of [X 1]) and of C from column j's entries and their CSR rows."""
    n_features = G.shape[0] - 1
    n_outputs = Y.shape[1]
    for f in range(n_features + 1):
        G[j, f] = 0.0
    for o in range(n_outputs):
        C[j, o] = 0.0
    for k in range(col_ptr[j], col_ptr[j + 1]):
        i = row_idx[k]
        si = s[i]
        if si == 0.0:
            continue
        x = np.float64(col_data[k])
        for q in range(indptr[i], indptr[i + 1]):
            G[j, indices[q]] += si * (x * np.float64(data[q]))
        G[j, n_features] += si * x
        for o in range(n_outputs):
            C[j, o] += si * (x * np.float64(Y[i, o]))


@njit(parallel=True, cache=True)
def _gram(X, Y, s, G, C, yy, parallel):
    """Gram statistics (G, C, yy) of A = [X 1] with weights s (module doc)."""
    n_features = G.shape[0] - 1
    n_outputs = Y.shape[1]
    indptr, indices, data = X.indptr, X.indices, X.data
    col_ptr, row_idx, col_data = X.col_ptr, X.row_idx, X.col_data
    if parallel:
        for j in prange(n_features):
            _gram_column(indptr, indices, data, col_ptr, row_idx, col_data, Y, s, G, C, j)
    else:
        for j in range(n_features):
            _gram_column(indptr, indices, data, col_ptr, row_idx, col_data, Y, s, G, C, j)
    total = 0.0
    for o in range(n_outputs):
        C[n_features, o] = 0.0
        yy[o] = 0.0
    for i in range(Y.shape[0]):
        si = s[i]
        total += si
        for o in range(n_outputs):
            y = np.float64(Y[i, o])
            C[n_features, o] += si * y
            yy[o] += si * y * y
    for f in range(n_features):
        G[n_features, f] = G[f, n_features]
    G[n_features, n_features] = total


@njit(parallel=True, cache=True)
def _rows_times(X, v, offset, s, out, parallel, chunk_rows, n_chunks):
    """out[i] = s_i * (x_i . v + offset): the row half of a Hessian product (module doc)."""
    n_samples = out.shape[0]
    indptr, indices, data = X.indptr, X.indices, X.data
    if parallel:
        for c in prange(n_chunks):
            _rows_times_chunk(indptr, indices, data, v, offset, s, out, c * chunk_rows,
                              min((c + 1) * chunk_rows, n_samples))
    else:
        for c in range(n_chunks):
            _rows_times_chunk(indptr, indices, data, v, offset, s, out, c * chunk_rows,
                              min((c + 1) * chunk_rows, n_samples))


@njit(cache=True, fastmath=_FASTMATH)
def _rows_times_chunk(indptr, indices, data, v, offset, s, out, start, stop):
    for i in range(start, stop):
        acc = offset
        for k in range(indptr[i], indptr[i + 1]):
            acc += np.float64(data[k]) * v[indices[k]]
        out[i, 0] = s[i] * acc


# --------------------------------------------------------------------------- wrappers


def _check(X: SparseRows, Y: np.ndarray | None, W: np.ndarray, b: np.ndarray) -> None:
    if not isinstance(X, SparseRows):
        raise TypeError(f"X must be a kernels.cpu_sparse.SparseRows, got {type(X).__name__}")
    n_samples, n_features = (int(n) for n in X.shape)
    n_outputs = W.shape[0]
    for name, array in (("W", W), ("b", b)) + ((("Y", Y),) if Y is not None else ()):
        if array.dtype != X.dtype:
            raise TypeError(f"{name} must have X's dtype {X.dtype}, got {array.dtype}")
    if W.shape != (n_outputs, n_features) or b.shape != (n_outputs,):
        raise ValueError(f"W must be (n_outputs, {n_features}) and b (n_outputs,), got {W.shape} and {b.shape}")
    if Y is not None and Y.shape != (n_samples, n_outputs):
        raise ValueError(f"Y must have shape ({n_samples}, {n_outputs}), got {Y.shape}")


def parallel_pass(X: SparseRows, n_outputs: int) -> bool:
    """Whether a pass over X's non-zeros walks its chunks (or columns) in parallel (``cpu.PARALLEL_MIN_WORK``)."""
    return (X.nnz + int(X.shape[0]) + int(X.shape[1])) * n_outputs >= cpu.PARALLEL_MIN_WORK


def loss_grad(X: SparseRows, Y: np.ndarray, W: np.ndarray, b: np.ndarray, dW: np.ndarray, db: np.ndarray,
              weights: np.ndarray | None = None, rows: np.ndarray | None = None) -> tuple[float, float]:
    """Loss and float64 gradients (dW, db) of ``rows`` (all if None) of (X, Y) at (W, b); returns (loss, S)."""
    _check(X, Y, W, b)
    rows = np.empty(0, np.int64) if rows is None else np.ascontiguousarray(rows, np.int64)
    weights = np.empty(0) if weights is None else np.ascontiguousarray(weights, np.float64)
    n = rows.shape[0] or int(X.shape[0])
    chunk_rows, n_chunks = cpu.chunking(n)
    work = engine_work(X, W.shape[0], n_chunks)
    loss, weight_total = _batch_loss_grad(X, Y, W, b, rows, weights, np.int64(0), np.int64(n), dW, db,
                                          np.int64(chunk_rows), np.int64(n_chunks), work)
    return float(loss), float(weight_total)


def predict(X: SparseRows, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``X @ W.T + b`` (n_samples, n_outputs) in X's dtype, accumulated in float64."""
    _check(X, None, W, b)
    out = np.empty((int(X.shape[0]), W.shape[0]), X.dtype)
    chunk_rows, n_chunks = cpu.chunking(int(X.shape[0]))
    _predict(X, W, b, out, parallel_pass(X, W.shape[0]), chunk_rows, n_chunks)
    return out


def effective_weights(n_samples: int, rows: np.ndarray | None, weights: np.ndarray | None) -> np.ndarray:
    """float64 (n_samples,) weight of each row in a statistics pass: its sample weight (1), 0 outside ``rows``."""
    base = np.ones(n_samples) if weights is None else np.asarray(weights, np.float64)
    if rows is None:
        return np.ascontiguousarray(base, np.float64)
    s = np.zeros(n_samples)
    s[rows] = base[rows]
    return s


def column_moments(X: SparseRows, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted column means and standard deviations (float64) with row weights ``s`` (``effective_weights``)."""
    n_features = int(X.shape[1])
    mean, variance = np.empty(n_features), np.empty(n_features)
    _column_moments(X, s, float(s.sum()), mean, variance, parallel_pass(X, 1))
    return mean, np.sqrt(np.maximum(variance, 0.0))


def gram(X: SparseRows, Y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gram statistics (G, C, yy) of [X 1] (float64), row weights ``s``: G is (F+1)^2 dense, for small F only."""
    n_features, n_outputs = int(X.shape[1]), Y.shape[1]
    G, C, yy = np.empty((n_features + 1, n_features + 1)), np.empty((n_features + 1, n_outputs)), np.empty(n_outputs)
    _gram(X, Y, s, G, C, yy, parallel_pass(X, n_outputs))
    return G, C, yy


def hessian_largest_eigenvalue(X: SparseRows, s: np.ndarray, n_outputs: int, mu: np.ndarray, sigma: np.ndarray, *,
                               max_iter: int = 200, rtol: float = 1e-6) -> float:
    """The largest eigenvalue of the data term's Hessian 2/(n_outputs S) A_s^T S A_s (module doc), by power iteration.

    A_s = [(X - mu) / sigma, 1], applied through X's rows and columns: never formed. Deterministic (a fixed start
    vector, the kernels' fixed summation order). The Rayleigh quotient approaches the eigenvalue from below;
    it stops when it changes by less than ``rtol`` relative.
    """
    n_samples, n_features = int(X.shape[0]), int(X.shape[1])
    weight_total = float(s.sum())
    scale = 2.0 / (n_outputs * weight_total)
    v = np.random.default_rng(0).standard_normal(n_features + 1) + 1.0
    v /= np.linalg.norm(v)
    u = np.empty((n_samples, 1))
    g = np.empty((1, n_features))
    chunk_rows, n_chunks = cpu.chunking(n_samples)
    parallel = parallel_pass(X, 1)
    estimate = 0.0
    for _ in range(max_iter):
        w = v[:n_features] / sigma
        _rows_times(X, w, float(v[n_features] - w @ mu), s, u, parallel, chunk_rows, n_chunks)
        _column_gradient(X, u, g, 1.0, parallel)
        total = float(u.sum())
        product = np.empty(n_features + 1)
        product[:n_features] = (g[0] - mu * total) / sigma * scale
        product[n_features] = total * scale
        previous, estimate = estimate, float(v @ product)
        norm = float(np.linalg.norm(product))
        if norm == 0.0:
            return 0.0
        v = product / norm
        if abs(estimate - previous) <= rtol * abs(estimate):
            break
    return estimate
