"""Kernels for sparse X: loss and gradients, predictions, column moments, Gram statistics, Hessian products.

Shapes (as in ``kernels.cpu``; X is never densified)::

    X  (n_samples, n_features)  a ``SparseRows``: the same matrix twice,
         CSR: indptr (n_samples + 1,), indices (nnz,), data (nnz,)   rows, for residuals and predictions
         blocked CSC: col_ptr (n_blocks * n_features + 1,), row_idx (nnz,), col_data (nnz,)   columns, for the
         gradient: the CSC of each block of ``block_rows`` rows in turn; block b's column j is the entries
         [col_ptr[b * n_features + j], col_ptr[b * n_features + j + 1]) (one block: the plain CSC)
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
  x_ij * s_i r_i. Each column is written by one prange iteration (a chunk of columns): no race, and the
  order of every sum is fixed by the matrix alone. Rows outside the batch have residual 0 (the residual
  array is zeroed first). Why blocks: a column's rows are spread over all of X, so its residual reads are
  random; the pass goes block after block (``block_rows`` rows, whose residuals fit the cache), all
  columns of a block before the next, and dW carries each column's running sum from block to block, so
  the sums are the plain CSC's, in the same order, whatever the blocking.
* Small batches (a mini-batch, well under a quarter of the rows) instead scatter their rows' CSR entries
  into dW serially, in batch order, listing the features they touch (``_scatter_gradient``): O(batch
  non-zeros), plus zeroing dW (O(n_features)) unless the run takes lazy steps (``engine_work(lazy=True)``,
  ``kernels.cpu_train._apply_step_at``), whose step reads dW at the listed features only.
* The robust "meat" of inference is the Gram matrix with row weights u_i (section at the end).
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

# "contract" (FMA) only, not "reassoc": with it LLVM vectorises the short index-driven loops with gather
# instructions, which here made the column pass 2x slower than a plain scalar loop (and cost per-loop
# set-up for the many columns with one or two entries).
_FASTMATH = {"contract"}

#: A batch that covers at least this share of the rows takes the gradient by columns (a pass over all
#: non-zeros); a smaller one scatters its own rows' entries (``_scatter_gradient``).
COLUMN_PASS_MIN_SHARE = 0.25

#: The residuals of one block of the blocked CSC stay within this (a share of the last-level cache): 1 Mi rows
#: for one output. Measured at 1,000,000 x 100,000 (10 non-zeros a row): one block 22-37 ms a column pass,
#: 16 blocks that fit L2 39-49 ms (the per-block, per-column overhead costs more than the misses it saves
#: while the residuals fit the 32 MiB L3). Blocks are meant for residuals beyond the L3 (not measured here).
BLOCK_RESIDUAL_BYTES = 8 << 20
#: Rows per block at least (many outputs).
MIN_BLOCK_ROWS = 1024
#: The blocks' column pointers stay within this share of the number of non-zeros.
MAX_POINTER_SHARE = 0.25
#: Columns per prange iteration of the column passes.
COLUMN_CHUNK = 512


class SparseRows(namedtuple("SparseRows", ["shape", "indptr", "indices", "data", "col_ptr", "row_idx", "col_data",
                                           "block_rows"])):
    """A sparse X as the kernels take it: its CSR arrays and a blocked CSC copy of the same entries (module doc).

    A namedtuple (numba compiles it as a struct of arrays); ``shape`` is (n_samples, n_features) int64.
    """

    __slots__ = ()

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def nnz(self) -> int:
        return int(self.data.shape[0])


def block_layout(n_samples: int, n_features: int, nnz: int, n_outputs: int) -> tuple[int, int]:
    """(block_rows, n_blocks) of the blocked CSC: blocks whose residuals fit L2, pointers within
    MAX_POINTER_SHARE of nnz. Depends on the shapes only (so do the results: never on the thread count)."""
    block_rows = max(MIN_BLOCK_ROWS, BLOCK_RESIDUAL_BYTES // (8 * n_outputs))
    n_blocks = -(-n_samples // block_rows)
    n_blocks = max(1, min(n_blocks, int(MAX_POINTER_SHARE * nnz) // (n_features + 1)))
    return -(-n_samples // n_blocks), n_blocks


def sparse_rows(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int], *,
                n_outputs: int = 1, columns: bool = True) -> SparseRows:
    """The ``SparseRows`` of CSR arrays (kept, not copied) and, with ``columns``, their blocked CSC copy
    (``block_layout``); without, a view for the row kernels only (predictions)."""
    if data.dtype not in (np.float32, np.float64):
        raise TypeError(f"sparse data must be float32 or float64, got {data.dtype}")
    n_samples, n_features = int(shape[0]), int(shape[1])
    nnz = int(data.shape[0])
    pointer = np.int32 if nnz < 2**31 - 1 else np.int64
    if columns:
        block_rows, n_blocks = block_layout(n_samples, n_features, nnz, n_outputs)
        col_ptr = np.zeros(n_blocks * n_features + 1, pointer)
        row_idx = np.empty(nnz, np.int32 if n_samples < 2**31 else np.int64)
        col_data = np.empty(nnz, data.dtype)
        _blocked_csc(indptr, indices, data, n_features, block_rows, col_ptr, row_idx, col_data)
    else:
        block_rows, col_ptr = max(n_samples, 1), np.zeros(n_features + 1, pointer)
        row_idx, col_data = np.empty(0, np.int32), np.empty(0, data.dtype)
    return SparseRows((np.int64(n_samples), np.int64(n_features)), indptr, indices, data, col_ptr, row_idx, col_data,
                      np.int64(block_rows))


@njit(cache=True)
def _blocked_csc(indptr, indices, data, n_features, block_rows, col_ptr, row_idx, col_data):
    """Fill the blocked CSC of the CSR arrays (a counting sort by (block, column), rows ascending; no scratch)."""
    n_samples = indptr.shape[0] - 1
    for i in range(n_samples):  # counts, shifted by one
        base = (i // block_rows) * n_features + 1
        for k in range(indptr[i], indptr[i + 1]):
            col_ptr[base + indices[k]] += 1
    for t in range(1, col_ptr.shape[0]):  # starts of (block, column) t - 1 at t
        col_ptr[t] += col_ptr[t - 1]
    for i in range(n_samples):  # rows ascending: each (block, column) gets its rows in order
        base = (i // block_rows) * n_features
        for k in range(indptr[i], indptr[i + 1]):
            t = base + indices[k]
            position = col_ptr[t]
            row_idx[position] = i
            col_data[position] = data[k]
            col_ptr[t] = position + 1
    for t in range(col_ptr.shape[0] - 1, 0, -1):  # col_ptr[t] now ends t: shift back to starts
        col_ptr[t] = col_ptr[t - 1]
    col_ptr[0] = 0


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
    if not parallel:
        return _residuals_serial(X, Y, W, b, order, weights, start, stop, residual, chunk_rows, n_chunks, db_parts,
                                 loss_parts, weight_parts, db)
    indptr, indices, data = X.indptr, X.indices, X.data
    for c in prange(n_chunks):
        lo = start + c * chunk_rows
        loss_parts[c], weight_parts[c] = _residual_rows(indptr, indices, data, Y, W, b, order, weights, lo,
                                                        min(lo + chunk_rows, stop), residual, db_parts[c])
    return _combine_rows(n_chunks, db_parts, loss_parts, weight_parts, db)


# The mini-batch path's row kernels, compiled inline into the training loop: a call passes each array argument
# with two atomic reference-count updates, which cost a batch of one row ~10x its arithmetic. (Inlined code
# takes the caller's flags: no "contract" there, so these sums may round differently from the parallel pass's.)
_residual_rows_inline = njit(cache=True, inline="always")(_residual_rows.py_func)


@njit(cache=True, inline="always")
def _residuals_serial(X, Y, W, b, order, weights, start, stop, residual, chunk_rows, n_chunks, db_parts, loss_parts,
                      weight_parts, db):
    """``_residuals`` in one thread: the same chunks and combine (the same bits), without a call of the parallel
    function (~0.25 us, which a mini-batch step of a few rows would pay every step)."""
    for c in range(n_chunks):
        lo = start + c * chunk_rows
        loss_parts[c], weight_parts[c] = _residual_rows_inline(X.indptr, X.indices, X.data, Y, W, b, order,
                                                               weights, lo, min(lo + chunk_rows, stop), residual,
                                                               db_parts[c])
    return _combine_rows(n_chunks, db_parts, loss_parts, weight_parts, db)


@njit(cache=True, inline="always")
def _combine_rows(n_chunks, db_parts, loss_parts, weight_parts, db):
    """(loss sum, S) and db of the chunks' partials, in chunk order: the same sums for any thread count."""
    total = 0.0
    weight_total = 0.0
    for o in range(db.shape[0]):
        db[o] = 0.0
    for c in range(n_chunks):
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
def _column_sums(col_ptr, row_idx, col_data, residual, dW, block, lo, hi):
    """dW[:, lo:hi] += the sums over block ``block``'s columns lo..hi-1 (ascending rows) of x_ij * residual[i]:
    dW carries each column's running sum from one block to the next (module doc)."""
    n_outputs, n_features = dW.shape
    base = block * n_features
    for j in range(lo, hi):
        for o in range(n_outputs):
            acc = dW[o, j]
            for k in range(col_ptr[base + j], col_ptr[base + j + 1]):
                acc += np.float64(col_data[k]) * residual[row_idx[k], o]
            dW[o, j] = acc


@njit(parallel=True, cache=True)
def _column_gradient(X, residual, dW, scale, parallel):
    """dW = scale * residual^T X by columns of the blocked CSC (module doc). Block after block (whose residuals
    then stay in cache), each chunk of columns one prange iteration's own."""
    n_outputs, n_features = dW.shape
    col_ptr, row_idx, col_data = X.col_ptr, X.row_idx, X.col_data
    n_blocks = (col_ptr.shape[0] - 1) // n_features
    n_chunks = (n_features + COLUMN_CHUNK - 1) // COLUMN_CHUNK
    for o in range(n_outputs):
        for j in range(n_features):
            dW[o, j] = 0.0
    for block in range(n_blocks):
        if parallel:
            for c in prange(n_chunks):
                _column_sums(col_ptr, row_idx, col_data, residual, dW, block, c * COLUMN_CHUNK,
                             min((c + 1) * COLUMN_CHUNK, n_features))
        else:
            for c in range(n_chunks):
                _column_sums(col_ptr, row_idx, col_data, residual, dW, block, c * COLUMN_CHUNK,
                             min((c + 1) * COLUMN_CHUNK, n_features))
    for o in range(n_outputs):
        for j in range(n_features):
            dW[o, j] *= scale


@njit(cache=True, inline="always")  # the mini-batch path: see _residual_rows_inline
def _scatter_gradient(X, residual, order, start, stop, dW, scale, touched, mark, stamp):
    """dW[:, f] = scale * sum over positions [start, stop), in order, of residual[i] x_if (the CSR rows), serial,
    for the features f the batch's rows touch, listed once each in ``touched``; returns how many. O(batch
    non-zeros): dW elsewhere is left as it was. ``mark[f] == stamp`` marks f listed (``stamp`` new each call)."""
    n_outputs = dW.shape[0]
    indptr, indices, data = X.indptr, X.indices, X.data
    n_touched = 0
    for p in range(start, stop):
        i = order[p] if order.shape[0] > 0 else p
        for k in range(indptr[i], indptr[i + 1]):
            f = indices[k]
            if mark[f] != stamp:
                mark[f] = stamp
                touched[n_touched] = f
                n_touched += 1
                for o in range(n_outputs):
                    dW[o, f] = 0.0
            x = np.float64(data[k])
            for o in range(n_outputs):
                dW[o, f] += x * residual[i, o]
    for t in range(n_touched):
        f = touched[t]
        for o in range(n_outputs):
            dW[o, f] *= scale
    return n_touched


@njit(cache=True)
def _zero_rows(residual):
    for i in range(residual.shape[0]):
        for o in range(residual.shape[1]):
            residual[i, o] = 0.0


@njit(cache=True, inline="always")  # no call per mini-batch step (see kernels.cpu_train._copy_params)
def _batch_loss_grad(X, Y, W, b, order, weights, start, stop, dW, db, chunk_rows, n_chunks, work):
    """Loss (weighted mean, module doc) and float64 dW, db of positions [start, stop); returns (loss, S).

    ``work`` = (residual, db_parts, loss_parts, weight_parts, min_work, steps, lazy) (``engine_work``). The
    features whose gradient was written are ``steps.touched[:steps.counts[0]]``: all of them, except for a
    small batch with ``lazy`` True, whose gradient is written at its own rows' features only (O(batch
    non-zeros); dW keeps stale values elsewhere, which the lazy step ``cpu_train._apply_step_at`` never reads).
    A batch whose weights are all 0 returns (0, 0) and zero gradients (none listed if lazy): the training loop
    skips its step.
    """
    residual, db_parts, loss_parts, weight_parts, min_work, steps, lazy = work
    touched, counts, mark = steps.touched, steps.counts, steps.mark
    n_samples = X.shape[0]
    n_outputs, n_features = W.shape
    n = stop - start
    nnz = X.data.shape[0]
    batch_work = (n * (nnz // max(n_samples, 1) + 1)) * n_outputs
    by_columns = n >= COLUMN_PASS_MIN_SHARE * n_samples
    whole = order.shape[0] == 0 and start == 0 and n == n_samples
    only_touched = lazy is not None and not by_columns  # lazy: True or None, by type (engine_work)
    if by_columns and not whole:  # rows outside the batch must add nothing to the column sums
        _zero_rows(residual)
    if batch_work >= min_work:
        loss, weight_total = _residuals(X, Y, W, b, order, weights, start, stop, residual, True, chunk_rows,
                                        n_chunks, db_parts, loss_parts, weight_parts, db)
    else:  # a mini-batch: no call of the parallel function
        loss, weight_total = _residuals_serial(X, Y, W, b, order, weights, start, stop, residual, chunk_rows,
                                               n_chunks, db_parts, loss_parts, weight_parts, db)
    if weight_total == 0.0:
        db[:] = 0.0
        counts[0] = 0
        if not only_touched:
            dW[:] = 0.0
        return 0.0, 0.0
    n_elements = n_outputs * weight_total
    scale = 2.0 / n_elements
    for o in range(n_outputs):
        db[o] *= scale
    if by_columns:
        _column_gradient(X, residual, dW, scale, (nnz + X.shape[1]) * n_outputs >= min_work)
        for f in range(n_features):
            touched[f] = f
        counts[0] = n_features
    else:
        if not only_touched:
            dW[:] = 0.0
        counts[2] += 1  # a new stamp: no feature is listed yet
        counts[0] = _scatter_gradient(X, residual, order, start, stop, dW, scale, touched, mark, counts[2])
    return loss / n_elements, weight_total


#: The lists of a lazy (sparse) mini-batch step (``cpu_train._apply_step_at``), int64: ``touched`` the features
#: the batch's gradient was written at (``counts[0]`` of them), ``previous`` those of the last step taken
#: (``counts[1]``), ``mark`` (n_features,) the stamp (``counts[2]``) that listed each feature last.
SparseSteps = namedtuple("SparseSteps", ["touched", "previous", "mark", "counts"])


def engine_work(X: SparseRows, n_outputs: int, max_chunks: int, *, lazy: bool = False) -> tuple:
    """The scratch ``_batch_loss_grad`` takes, for batches of up to ``max_chunks`` chunks: O(n_samples * n_outputs
    + n_features). ``lazy``: mini-batch gradients are written at their rows' features only (its type tells the
    compiled loop to take the lazy step: True, or None for the dense step)."""
    n_features = int(X.shape[1])
    steps = SparseSteps(np.zeros(n_features, np.int64), np.zeros(n_features, np.int64),
                        np.full(n_features, -1, np.int64), np.zeros(3, np.int64))
    return (np.zeros((int(X.shape[0]), n_outputs)), np.zeros((max_chunks, n_outputs)), np.zeros(max_chunks),
            np.zeros(max_chunks), np.int64(cpu.PARALLEL_MIN_WORK), steps, True if lazy else None)


# --------------------------------------------------------------------------- statistics (by columns)
#
# Row weights s (``effective_weights``): float64 (n_samples,), or empty for all ones (no n_samples-long array).


@njit(cache=True, inline="always")
def _weight(s, i):
    return s[i] if s.shape[0] > 0 else 1.0


@njit(cache=True, fastmath=_FASTMATH)
def _column_moments_of(col_ptr, row_idx, col_data, s, weight_total, mean, variance, j):
    n_features = mean.shape[0]
    n_blocks = (col_ptr.shape[0] - 1) // n_features
    first = 0.0
    for block in range(n_blocks):  # the column's entries, rows ascending
        for k in range(col_ptr[block * n_features + j], col_ptr[block * n_features + j + 1]):
            first += _weight(s, row_idx[k]) * np.float64(col_data[k])
    m = first / weight_total
    second = 0.0
    covered = 0.0
    for block in range(n_blocks):
        for k in range(col_ptr[block * n_features + j], col_ptr[block * n_features + j + 1]):
            d = np.float64(col_data[k]) - m
            si = _weight(s, row_idx[k])
            second += si * d * d
            covered += si
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


# Never "reassoc" here: it would let LLVM hoist s_i * x_ij out of the row loop, and G would lose its exact symmetry.
@njit(cache=True, fastmath=_FASTMATH)
def _gram_column(indptr, indices, data, col_ptr, row_idx, col_data, Y, s, G, C, j):
    """Row j of G (all of [X 1]) and of C from column j's entries and their CSR rows."""
    n_features = G.shape[0] - 1
    n_outputs = Y.shape[1]
    for f in range(n_features + 1):
        G[j, f] = 0.0
    for o in range(n_outputs):
        C[j, o] = 0.0
    n_blocks = (col_ptr.shape[0] - 1) // n_features
    for block in range(n_blocks):  # the column's entries, rows ascending
        for k in range(col_ptr[block * n_features + j], col_ptr[block * n_features + j + 1]):
            i = row_idx[k]
            si = _weight(s, i)
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
        si = _weight(s, i)
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
        out[i, 0] = _weight(s, i) * acc


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
    """float64 (n_samples,) weight of each row in a statistics pass: its sample weight (1), 0 outside ``rows``;
    empty when every row weighs 1 (the kernels read that as ones: no n_samples-long array)."""
    if rows is None and weights is None:
        return np.empty(0)
    base = np.ones(n_samples) if weights is None else np.asarray(weights, np.float64)
    if rows is None:
        return np.ascontiguousarray(base, np.float64)
    s = np.zeros(n_samples)
    s[rows] = base[rows]
    return s


def _weight_total(X: SparseRows, s: np.ndarray) -> float:
    return float(s.sum()) if s.shape[0] else float(X.shape[0])


def column_moments(X: SparseRows, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted column means and standard deviations (float64) with row weights ``s`` (``effective_weights``)."""
    n_features = int(X.shape[1])
    mean, variance = np.empty(n_features), np.empty(n_features)
    _column_moments(X, s, _weight_total(X, s), mean, variance, parallel_pass(X, 1))
    return mean, np.sqrt(np.maximum(variance, 0.0))


def gram(X: SparseRows, Y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gram statistics (G, C, yy) of [X 1] (float64), row weights ``s``: G is (F+1)^2 dense, for small F only."""
    n_features, n_outputs = int(X.shape[1]), Y.shape[1]
    G, C, yy = np.empty((n_features + 1, n_features + 1)), np.empty((n_features + 1, n_outputs)), np.empty(n_outputs)
    _gram(X, Y, s, G, C, yy, parallel_pass(X, n_outputs))
    return G, C, yy


def hessian_product(X: SparseRows, s: np.ndarray, n_outputs: int, mu: np.ndarray, sigma: np.ndarray):
    """``product(v)``: H v for the data term's Hessian H = 2/(n_outputs S) A_s^T S A_s, A_s = [(X - mu) / sigma, 1]
    (module doc), through X's rows and columns: A_s is never formed. ``v`` and H v have n_features + 1 entries."""
    n_samples, n_features = int(X.shape[0]), int(X.shape[1])
    scale = 2.0 / (n_outputs * _weight_total(X, s))
    u = np.empty((n_samples, 1))
    g = np.empty((1, n_features))
    chunk_rows, n_chunks = cpu.chunking(n_samples)
    parallel = parallel_pass(X, 1)

    def product(v: np.ndarray) -> np.ndarray:
        w = v[:n_features] / sigma
        _rows_times(X, w, float(v[n_features] - w @ mu), s, u, parallel, chunk_rows, n_chunks)
        _column_gradient(X, u, g, 1.0, parallel)
        total = float(u.sum())
        out = np.empty(n_features + 1)
        out[:n_features] = (g[0] - mu * total) / sigma * scale
        out[n_features] = total * scale
        return out

    return product


def hessian_largest_eigenvalue(X: SparseRows, s: np.ndarray, n_outputs: int, mu: np.ndarray, sigma: np.ndarray, *,
                               max_iter: int = 30, rtol: float = 1e-8) -> float:
    """The largest eigenvalue of the data term's Hessian (``hessian_product``), by the Lanczos iteration.

    Lanczos, not power iteration: its top Ritz value converges much faster when the top eigenvalues are close
    (standardised features: power iteration stopped 1.6% low in a test where this is exact), with the same one
    Hessian product per step and O(n_features) memory (no reorthogonalisation: lost orthogonality only repeats
    converged eigenvalues, it never overshoots). Ritz values lie below the largest eigenvalue. Deterministic: a
    fixed start vector and the kernels' fixed summation order. Stops when the top Ritz value changes by less
    than ``rtol`` relative, after ``max_iter`` steps, or when the Krylov space is exhausted (exact then).

    Why 30 steps are enough: the estimate is only the step 1/L of lr="auto", and gradient descent stays stable
    for any L above half the true one (steps below 2/L). Measured on a standardised 1,000,000 x 100,000 random
    CSR (10 non-zeros a row, the dense spectrum edge where Lanczos is slowest): 10 steps 1.5% low, 20 steps
    0.4%, 30 steps 0.17%, 100 steps 0.003%.
    """
    n_features = int(X.shape[1])
    product = hessian_product(X, s, n_outputs, mu, sigma)
    q = np.random.default_rng(0).standard_normal(n_features + 1) + 1.0
    q /= np.linalg.norm(q)
    q_previous = np.zeros_like(q)
    alphas: list[float] = []
    betas: list[float] = []
    beta = 0.0
    top = 0.0
    for _ in range(min(max_iter, n_features + 1)):
        w = product(q)
        alpha = float(q @ w)
        w -= alpha * q + beta * q_previous
        alphas.append(alpha)
        T = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        previous, top = top, float(np.linalg.eigvalsh(T)[-1])
        beta = float(np.linalg.norm(w))
        if abs(top - previous) <= rtol * abs(top) or beta <= 1e-12 * max(abs(top), 1e-300):
            break
        betas.append(beta)
        q_previous, q = q, w / beta
    return top


# --------------------------------------------------------------------------- the robust "meat" (inference)
#
# As ``kernels.cpu_stats`` for dense X: with a_i = [x_i 1], r_io = a_i^T theta_o - y_io and the leverage
# h_i = s_i a_i^T G^+ a_i (here from G^+ itself: (nnz_i + 1)^2 multiply-adds a row, not (F+1)^2 / 2),
#     u_io = (s_i r_io)^2 / (1 - h_i)^power,   M_o = sum_i u_io a_i a_i^T = A^T diag(u_o) A,
# so M_o is the Gram matrix G of [X 1] with row weights u_o (``_gram``: by columns, deterministic, exactly
# symmetric), and no (chunks x (F+1)^2) partials are formed.


# error_model="numpy": a leverage of exactly 1 gives 1 / 0 = inf (then NaN standard errors, as for dense X).
@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _meat_weights_rows(indptr, indices, data, Y, weights, theta, G_pinv, power, u, start, stop, ssr):
    """u[i, o] (module section above) of rows [start, stop) and their ssr; returns their max leverage."""
    n_features = theta.shape[0] - 1
    n_outputs = Y.shape[1]
    for o in range(n_outputs):
        ssr[o] = 0.0
    max_leverage = 0.0
    for i in range(start, stop):
        s = weights[i] if weights.shape[0] > 0 else 1.0
        factor = 1.0
        if power > 0:
            quadratic = G_pinv[n_features, n_features]
            for k in range(indptr[i], indptr[i + 1]):
                x = np.float64(data[k])
                f = indices[k]
                cross = G_pinv[f, n_features]
                for q in range(indptr[i], indptr[i + 1]):
                    cross += 0.5 * G_pinv[f, indices[q]] * np.float64(data[q])
                quadratic += 2.0 * x * cross
            leverage = s * quadratic
            max_leverage = max(max_leverage, leverage)
            factor = 1.0 / (1.0 - leverage)
            if power == 2:
                factor *= factor
        for o in range(n_outputs):
            r = theta[n_features, o] - np.float64(Y[i, o])
            for k in range(indptr[i], indptr[i + 1]):
                r += np.float64(data[k]) * theta[indices[k], o]
            ssr[o] += s * r * r
            u[i, o] = (s * r) * (s * r) * factor
    return max_leverage


@njit(parallel=True, cache=True)
def _meat_weights(X, Y, weights, theta, G_pinv, power, u, parallel, chunk_rows, n_chunks, ssr_parts, leverage_parts,
                  ssr):
    n_samples = X.shape[0]
    indptr, indices, data = X.indptr, X.indices, X.data
    if parallel:
        for c in prange(n_chunks):
            lo = c * chunk_rows
            leverage_parts[c] = _meat_weights_rows(indptr, indices, data, Y, weights, theta, G_pinv, power, u, lo,
                                                   min(lo + chunk_rows, n_samples), ssr_parts[c])
    else:
        for c in range(n_chunks):
            lo = c * chunk_rows
            leverage_parts[c] = _meat_weights_rows(indptr, indices, data, Y, weights, theta, G_pinv, power, u, lo,
                                                   min(lo + chunk_rows, n_samples), ssr_parts[c])
    max_leverage = 0.0
    for o in range(ssr.shape[0]):
        acc = 0.0
        for c in range(n_chunks):  # chunk order: the same sums for any thread count
            acc += ssr_parts[c, o]
        ssr[o] = acc
    for c in range(n_chunks):
        max_leverage = max(max_leverage, leverage_parts[c])
    return max_leverage


def robust_meat(X: SparseRows, Y: np.ndarray, theta: np.ndarray, weights: np.ndarray | None, G_pinv: np.ndarray,
                power: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``(M, ssr, max_leverage)`` of ``kernels.cpu_stats.robust_meat`` for sparse X (the section above): M
    (O, F+1, F+1) dense, so for small F only; ``G_pinv`` the pseudo-inverse of G, read for power 1 or 2."""
    n_samples, n_features = int(X.shape[0]), int(X.shape[1])
    n_outputs = Y.shape[1]
    size = n_features + 1
    if theta.shape != (size, n_outputs) or G_pinv.shape != (size, size):
        raise ValueError(f"theta must be {(size, n_outputs)} and G_pinv {(size, size)}, got {theta.shape} and "
                         f"{G_pinv.shape}")
    if power not in (0, 1, 2):
        raise ValueError(f"power must be 0 (HC0/HC1), 1 (HC2) or 2 (HC3), got {power}")
    weights = np.empty(0) if weights is None else np.ascontiguousarray(weights, np.float64)
    chunk_rows, n_chunks = cpu.chunking(n_samples)
    u = np.empty((n_samples, n_outputs))
    ssr = np.empty(n_outputs)
    max_leverage = _meat_weights(X, Y, weights, np.ascontiguousarray(theta, np.float64),
                                 np.ascontiguousarray(G_pinv, np.float64), np.int64(power), u,
                                 parallel_pass(X, n_outputs), chunk_rows, n_chunks, np.empty((n_chunks, n_outputs)),
                                 np.empty(n_chunks), ssr)
    M = np.empty((n_outputs, size, size))
    for o in range(n_outputs):
        M[o] = gram(X, Y, np.ascontiguousarray(u[:, o]))[0]
    return M, ssr, float(max_leverage)
