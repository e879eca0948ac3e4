"""The Gram pass on the CPU: sufficient statistics of least squares in one read of X and Y.

Shapes (as in ``kernels.cpu``)::

    X (n_samples, n_features), Y (n_samples, n_outputs)   float32 or float64, any layout
    rows (n_rows,) int64        row indices; empty means rows 0..n_samples-1 in order
    weights (n_samples,) f64    sample weights s; empty means all 1
    M = [X 1 Y]                 the augmented rows, K = n_features + 1 + n_outputs columns
    shift (K,) float64          c = [c_x 0 c_y]: the statistics are accumulated for M - 1 c^T
    Gm (Kp, Kp) float64         (M - 1 c^T)^T S (M - 1 c^T), its upper block triangle; Kp = K rounded up to TILE

Formula: with A = [X 1] and S = diag(s),
``M^T S M = [[A^T S A, A^T S Y], [., Y^T S Y]]``, so one product gives
``G = A^T S A``, ``C = A^T S Y`` and ``yy = diag(Y^T S Y)``.

Centring: the sums are taken about a shift c (the mean of the first rows),
i.e. for the rows of X - c_x and Y - c_y, whose column means are near 0. For
data far from the origin (features around 1000) the uncentred normal equations
lose about log10(cond) more digits in the solve; the centred ones do not, and
``centred_gram`` returns them for the exact solver. ``gram`` adds the shift
back exactly in closed form: with u = 1^T S (M - 1 c^T) (the ones row),
``M^T S M = Gm + c u^T + u c^T + (sum s) c c^T``.

Method: per block of BLOCK_ROWS rows, the rows of M are converted to float64
once into a transposed scratch block (one contiguous column of the block per
feature, the ones column and each output, zero rows up to Kp), and the block's
contribution to the upper block triangle of M^T S M is computed TILE x TILE
entries at a time: 16 float64 accumulators over the block's rows, eight
contiguous loads per 16 multiply-adds, so the loop runs at the FMA units' rate
instead of reloading and storing G per row (the block stays in L1). That is
Kp(Kp+4)/2 multiply-adds per row (720 for 32 features and 1 output, against the
595 of the exact triangle: computing only the triangle of the diagonal tiles and
strips for the last columns was measured slower, see benchmarks/README.md).
float32 products are exact in float64 and every sum is float64.

Parallel strategy and determinism: the rows are cut into the fixed chunks of
``kernels.cpu.chunking`` (independent of the thread count); each chunk writes
only its own partial matrix and scratch block, and the partials are combined by
one thread in chunk order, so results are bit-identical for any thread count.
Small problems walk the same chunks serially (same result).

Non-finite input propagates into the statistics (NaN * anything and Inf - Inf
are NaN, Inf * 0 weight is NaN): the caller checks the small result instead of
scanning X a second time, and only then looks for the first bad entry.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cpu

#: Rows per scratch block: (K x BLOCK_ROWS) float64 (two with weights) stays in L1 for up to ~40-80 columns.
BLOCK_ROWS = 64
#: Side of the register tile of M^T S M (TILE * TILE float64 accumulators; the tile loop is written for 4).
TILE = 4

_FASTMATH = {"reassoc", "contract"}


@njit(cache=True, fastmath=_FASTMATH)
def _load_block(X, Y, rows, weights, shift, i0, m, block, weighted_block):
    """block[:, :m] = (M - 1 shift^T)^T of the m rows at positions i0.. (float64); weighted: s * that too."""
    n_features = X.shape[1]
    n_outputs = Y.shape[1]
    ones = n_features
    for k in range(m):
        p = i0 + k
        i = rows[p] if rows.shape[0] > 0 else p
        for f in range(n_features):
            block[f, k] = np.float64(X[i, f]) - shift[f]
        block[ones, k] = 1.0
        for o in range(n_outputs):
            block[ones + 1 + o, k] = np.float64(Y[i, o]) - shift[ones + 1 + o]
        if weights.shape[0] > 0:
            s = weights[i]
            for f in range(block.shape[0]):
                weighted_block[f, k] = s * block[f, k]


@njit(cache=True, fastmath=_FASTMATH)
def _gram_block_rows(X, Y, rows, weights, shift, start, stop, block, weighted_block, part):
    """part = upper block triangle of (M - 1 shift^T)^T S (M - 1 shift^T) over positions [start, stop).

    ``block`` and ``weighted_block`` are (Kp, BLOCK_ROWS) float64 scratch whose padding rows
    K..Kp-1 are zero; ``weighted_block`` holds s * M when there are weights (else it is
    unused and ``block`` is both sides). The tile loop is written out here, at one call
    site: as a separate function LLVM did not always inline it, and it then ran 2-4x slower.
    """
    padded, block_rows = block.shape
    right = weighted_block if weights.shape[0] > 0 else block
    for f in range(padded):
        for g in range(padded):
            part[f, g] = 0.0
    for i0 in range(start, stop, block_rows):
        m = min(block_rows, stop - i0)
        _load_block(X, Y, rows, weights, shift, i0, m, block, weighted_block)
        for f0 in range(0, padded, TILE):
            a0 = block[f0, :m]
            a1 = block[f0 + 1, :m]
            a2 = block[f0 + 2, :m]
            a3 = block[f0 + 3, :m]
            for g0 in range(f0, padded, TILE):
                b0 = right[g0, :m]
                b1 = right[g0 + 1, :m]
                b2 = right[g0 + 2, :m]
                b3 = right[g0 + 3, :m]
                s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = 0.0
                s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = 0.0
                for k in range(m):
                    x0 = a0[k]
                    x1 = a1[k]
                    x2 = a2[k]
                    x3 = a3[k]
                    y0 = b0[k]
                    y1 = b1[k]
                    y2 = b2[k]
                    y3 = b3[k]
                    s00 += x0 * y0
                    s01 += x0 * y1
                    s02 += x0 * y2
                    s03 += x0 * y3
                    s10 += x1 * y0
                    s11 += x1 * y1
                    s12 += x1 * y2
                    s13 += x1 * y3
                    s20 += x2 * y0
                    s21 += x2 * y1
                    s22 += x2 * y2
                    s23 += x2 * y3
                    s30 += x3 * y0
                    s31 += x3 * y1
                    s32 += x3 * y2
                    s33 += x3 * y3
                part[f0, g0] += s00
                part[f0, g0 + 1] += s01
                part[f0, g0 + 2] += s02
                part[f0, g0 + 3] += s03
                part[f0 + 1, g0] += s10
                part[f0 + 1, g0 + 1] += s11
                part[f0 + 1, g0 + 2] += s12
                part[f0 + 1, g0 + 3] += s13
                part[f0 + 2, g0] += s20
                part[f0 + 2, g0 + 1] += s21
                part[f0 + 2, g0 + 2] += s22
                part[f0 + 2, g0 + 3] += s23
                part[f0 + 3, g0] += s30
                part[f0 + 3, g0 + 1] += s31
                part[f0 + 3, g0 + 2] += s32
                part[f0 + 3, g0 + 3] += s33


@njit(parallel=True, cache=True)
def _gram_chunks(X, Y, rows, weights, shift, n_rows, parallel, chunk_rows, n_chunks, blocks, weighted_blocks, parts):
    """Per-chunk partials of M^T S M over the first n_rows positions (chunk c owns parts[c] and its blocks)."""
    if parallel:
        for c in prange(n_chunks):
            lo = c * chunk_rows
            hi = min(lo + chunk_rows, n_rows)
            _gram_block_rows(X, Y, rows, weights, shift, lo, hi, blocks[c], weighted_blocks[c], parts[c])
    else:
        for c in range(n_chunks):
            lo = c * chunk_rows
            hi = min(lo + chunk_rows, n_rows)
            _gram_block_rows(X, Y, rows, weights, shift, lo, hi, blocks[c], weighted_blocks[c], parts[c])


@njit(cache=True)
def _combine(parts, n_features, n_outputs, G, C, yy):
    """Sum the chunk partials in chunk order into G (symmetric), C and yy."""
    n_chunks = parts.shape[0]
    size = n_features + 1
    for f in range(size):
        for g in range(f, size):
            acc = 0.0
            for c in range(n_chunks):
                acc += parts[c, f, g]
            G[f, g] = acc
            G[g, f] = acc
        for o in range(n_outputs):
            acc = 0.0
            for c in range(n_chunks):
                acc += parts[c, f, size + o]
            C[f, o] = acc
    for o in range(n_outputs):
        acc = 0.0
        for c in range(n_chunks):
            acc += parts[c, size + o, size + o]
        yy[o] = acc


def padded_columns(n_features: int, n_outputs: int) -> int:
    """Kp: the K = n_features + 1 + n_outputs columns of M rounded up to a multiple of TILE."""
    columns = n_features + 1 + n_outputs
    return (columns + TILE - 1) // TILE * TILE


def _shift(X: np.ndarray, Y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """c = [mean of the first BLOCK_ROWS rows of X, 0, the same of Y] (float64): near the column means."""
    first = rows[:BLOCK_ROWS] if rows.shape[0] else slice(0, BLOCK_ROWS)
    n_features = X.shape[1]
    shift = np.zeros(n_features + 1 + Y.shape[1])
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf input: the caller's check of the result tells
        shift[:n_features] = X[first].mean(axis=0, dtype=np.float64)
        shift[n_features + 1:] = Y[first].mean(axis=0, dtype=np.float64)
    return shift


def centred_gram(X: np.ndarray, Y: np.ndarray, rows: np.ndarray | None = None,
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                              np.ndarray]:
    """``(G, C, yy, shift_x, shift_y)``: the Gram statistics of ``[X - shift_x, 1]`` and ``Y - shift_y``.

    One pass over ``rows`` (default all) of X and Y, float64, sample ``weights`` (default 1).
    The least-squares solution of the shifted problem has the same W, and intercept
    ``b = b_shifted + shift_y - W @ shift_x``; residuals, hence the loss, are the same.
    """
    rows = np.empty(0, np.int64) if rows is None else rows
    weights = np.empty(0, np.float64) if weights is None else weights
    n_rows = rows.shape[0] if rows.shape[0] else X.shape[0]
    n_features, n_outputs = X.shape[1], Y.shape[1]
    shift = _shift(X, Y, rows)
    padded = padded_columns(n_features, n_outputs)
    chunk_rows, n_chunks = cpu.chunking(n_rows)
    parallel = n_rows * padded * padded // 2 >= cpu.PARALLEL_MIN_WORK
    block_rows = min(BLOCK_ROWS, chunk_rows)
    # Zeros: the padding rows of the blocks must read as 0 (np.zeros maps lazily: only touched pages cost).
    blocks = np.zeros((n_chunks, padded, block_rows))
    weighted_blocks = np.zeros((n_chunks, padded, block_rows)) if weights.shape[0] else np.zeros((n_chunks, 1, 1))
    parts = np.empty((n_chunks, padded, padded))
    _gram_chunks(X, Y, rows, weights, shift, n_rows, parallel, chunk_rows, n_chunks, blocks, weighted_blocks, parts)
    size = n_features + 1
    G, C, yy = np.empty((size, size)), np.empty((size, n_outputs)), np.empty(n_outputs)
    _combine(parts, n_features, n_outputs, G, C, yy)
    return G, C, yy, shift[:n_features].copy(), shift[size:].copy()


def uncentre(G: np.ndarray, C: np.ndarray, yy: np.ndarray, shift_x: np.ndarray,
             shift_y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The statistics of ``[X 1]`` and ``Y`` from those of the shifted data (``centred_gram``), in closed form."""
    n_features = shift_x.shape[0]
    cx = np.append(shift_x, 0.0)  # the ones column is not shifted
    ux = G[n_features]  # 1^T S [X - c_x, 1]; its last entry is sum s
    uy = C[n_features]  # 1^T S (Y - c_y)
    weight_total = G[n_features, n_features]
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite statistics stay non-finite, silently
        G_raw = G + np.outer(cx, ux) + np.outer(ux, cx) + weight_total * np.outer(cx, cx)
        C_raw = C + np.outer(cx, uy) + np.outer(ux, shift_y) + weight_total * np.outer(cx, shift_y)
        yy_raw = yy + 2.0 * shift_y * uy + weight_total * shift_y * shift_y
    return G_raw, C_raw, yy_raw


def gram(X: np.ndarray, Y: np.ndarray, rows: np.ndarray | None = None,
         weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 ``(G, C, yy)`` of ``A = [X 1]`` over ``rows`` (default all) with sample ``weights``, one pass."""
    return uncentre(*centred_gram(X, Y, rows, weights))
