"""Mini-batch loss and gradients over rows in a random order, with many row fetches in flight.

Shapes (as in ``kernels.cpu``)::

    X (n_samples, n_features), Y (n_samples, n_outputs)   data, float32 or float64
    W (n_outputs, n_features), b (n_outputs,)            parameters in the data's dtype
    rows (n_positions,) int64     the epoch's row order (``kernels.cpu_train._shuffle_rows``);
                                  positions [start, stop) are this batch; empty means row = position
    weights (n_samples,) float64  sample weights s; empty means all 1

Formula, for the batch B and residual r_i = W x_i + b - y_i::

    loss  = sum_{i in B} s_i ||r_i||^2,   weight = sum_{i in B} s_i
    dW    = sum_i s_i r_i x_i^T,           db = sum_i s_i r_i         (sums: the caller normalises)

Why a separate kernel: the rows of a shuffled batch are scattered over X, so each
costs one or two cache misses from memory. Walked one at a time (load a row,
compute on it, the next row's address only then needed), a core keeps about one
miss in flight: ~100 ns per row. Here each block of rows is first copied into a
contiguous float64 block (independent loads the core overlaps), and while it
copies, the rows ``PREFETCH_DISTANCE`` positions ahead in the epoch order are
prefetched (``llvm.prefetch``: never faults). The order array holds the whole
epoch, so the prefetches run past the end of the batch into the next one while
the optimiser step runs. The arithmetic then runs on the block as in
``kernels.cpu._blocked_rows``: 4 rows per pass over a weight row, float64.

Determinism: the block layout and the summation order depend only on
(start, stop); chunks of a large batch (``kernels.cpu.chunking``) write their
own partials, combined by the caller in chunk order: bit-identical for any
thread count. Prefetches change no value.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import register_jitable

from . import cpu

#: Positions ahead of the row being copied whose rows are prefetched: 32 rows of 32 float32
#: features are ~70 cache lines requested ahead (8 to 64 measured; see benchmarks/README.md).
PREFETCH_DISTANCE = 32

_FASTMATH = {"reassoc", "contract"}


@register_jitable
def _scratch_size(n_features, n_outputs):
    """float64 elements of ``_gather_block_rows``'s scratch: W, and the residuals of 4 rows."""
    return n_outputs * n_features + 4 * n_outputs


@njit(cache=True, fastmath=_FASTMATH)
def _gather_block_rows(X, Y, W, b, rows, weights, start, stop, scratch, dW_part, db_part):
    """Weighted squared-residual sum and weight sum of positions [start, stop); sum s r x^T, sum s r into the parts.

    ``scratch``: float64, ``_scratch_size(n_features, n_outputs)`` long or more (allocated
    here if shorter): W in float64, the residuals of 4 rows.

    Four rows at a time, straight from X: their rows are in cache by then (prefetched
    PREFETCH_DISTANCE positions ahead, with their targets and weights), so there is no
    copy of the batch; the four dot products per output are independent chains, and
    the gradient takes the four rows in one pass over dW_part's row.
    """
    n_outputs, n_features = W.shape
    need = _scratch_size(n_features, n_outputs)
    buf = scratch if scratch.shape[0] >= need else np.empty(need)
    w_at = 0  # buf: W | residuals of 4 rows
    r_at = w_at + n_outputs * n_features
    for o in range(n_outputs):
        db_part[o] = 0.0
        for f in range(n_features):
            dW_part[o, f] = 0.0
            buf[w_at + o * n_features + f] = W[o, f]
    shuffled = rows.shape[0] > 0
    weighted = weights.shape[0] > 0
    # Prefetch only shuffled rows of C-contiguous data (in order, the hardware prefetchers do it).
    x = cpu._flat(X)
    y = cpu._flat(Y)
    line = 64 // x.itemsize  # elements per cache line
    prefetch_end = rows.shape[0] - PREFETCH_DISTANCE if x.shape[0] > 0 and y.shape[0] > 0 else 0
    total = 0.0
    weight_total = 0.0
    for p0 in range(start, stop, 4):
        m = min(4, stop - p0)
        for k in range(m):
            p = p0 + k
            if p < prefetch_end:  # written out here: as a function (even inlined) it cost ~30 ns per row
                ahead = rows[p + PREFETCH_DISTANCE]
                first = ahead * n_features
                e = first
                while e < first + n_features:
                    cpu._prefetch(x, e)
                    e += line
                cpu._prefetch(x, first + n_features - 1)  # a row not aligned to lines ends on one more
                cpu._prefetch(y, ahead * n_outputs)
                if weighted:
                    cpu._prefetch(weights, ahead)
        # A short tail repeats its first row with weight 0: one code path for 1 to 4 rows.
        i0 = rows[p0] if shuffled else p0
        i1 = (rows[p0 + 1] if shuffled else p0 + 1) if m > 1 else i0
        i2 = (rows[p0 + 2] if shuffled else p0 + 2) if m > 2 else i0
        i3 = (rows[p0 + 3] if shuffled else p0 + 3) if m > 3 else i0
        s0 = weights[i0] if weighted else 1.0
        s1 = (weights[i1] if weighted else 1.0) if m > 1 else 0.0
        s2 = (weights[i2] if weighted else 1.0) if m > 2 else 0.0
        s3 = (weights[i3] if weighted else 1.0) if m > 3 else 0.0
        weight_total += (s0 + s1) + (s2 + s3)
        x0 = X[i0]
        x1 = X[i1]
        x2 = X[i2]
        x3 = X[i3]
        for o in range(n_outputs):
            wo = w_at + o * n_features
            a0 = 0.0
            a1 = 0.0
            a2 = 0.0
            a3 = 0.0
            for f in range(n_features):
                wf = buf[wo + f]
                a0 += np.float64(x0[f]) * wf
                a1 += np.float64(x1[f]) * wf
                a2 += np.float64(x2[f]) * wf
                a3 += np.float64(x3[f]) * wf
            bo = np.float64(b[o])
            r0 = (bo - np.float64(Y[i0, o])) + a0
            r1 = (bo - np.float64(Y[i1, o])) + a1
            r2 = (bo - np.float64(Y[i2, o])) + a2
            r3 = (bo - np.float64(Y[i3, o])) + a3
            total += (s0 * r0 * r0 + s1 * r1 * r1) + (s2 * r2 * r2 + s3 * r3 * r3)
            buf[r_at + o] = s0 * r0
            buf[r_at + n_outputs + o] = s1 * r1
            buf[r_at + 2 * n_outputs + o] = s2 * r2
            buf[r_at + 3 * n_outputs + o] = s3 * r3
        # The rank-4 accumulation, after every output's residuals: the loop above reads W, this one writes dW.
        for o in range(n_outputs):
            q0 = buf[r_at + o]
            q1 = buf[r_at + n_outputs + o]
            q2 = buf[r_at + 2 * n_outputs + o]
            q3 = buf[r_at + 3 * n_outputs + o]
            db_part[o] += (q0 + q1) + (q2 + q3)
            for f in range(n_features):
                dW_part[o, f] += ((q0 * np.float64(x0[f]) + q1 * np.float64(x1[f]))
                                  + (q2 * np.float64(x2[f]) + q3 * np.float64(x3[f])))
    return total, weight_total


# --------------------------------------------------------------------------- the random-gather roofline


@njit(cache=True, fastmath=_FASTMATH)
def _gather_sum(X, Y, rows, prefetch):
    """Sum of every element of the rows of X and Y in the order ``rows``: reads them, no other arithmetic.

    ``prefetch``: also prefetch the rows PREFETCH_DISTANCE positions ahead (as the
    training kernel does); without, only the core's own overlap of independent loads.
    """
    n_features = X.shape[1]
    n_outputs = Y.shape[1]
    x = cpu._flat(X)
    y = cpu._flat(Y)
    line = 64 // x.itemsize
    prefetch_end = rows.shape[0] - PREFETCH_DISTANCE if prefetch and x.shape[0] > 0 and y.shape[0] > 0 else 0
    total = 0.0
    for p in range(rows.shape[0]):
        if p < prefetch_end:
            first = rows[p + PREFETCH_DISTANCE] * n_features
            e = first
            while e < first + n_features:
                cpu._prefetch(x, e)
                e += line
            cpu._prefetch(x, first + n_features - 1)
            cpu._prefetch(y, rows[p + PREFETCH_DISTANCE] * n_outputs)
        i = rows[p]
        src = X[i]
        part = 0.0
        for f in range(n_features):
            part += src[f]
        for o in range(n_outputs):
            part += Y[i, o]
        total += part
    return total


def gather_sum(X: np.ndarray, Y: np.ndarray, rows: np.ndarray, prefetch: bool = True) -> float:
    """The random-gather roofline's workload: read rows ``rows`` of X and Y in that order, one thread."""
    return float(_gather_sum(X, Y, np.ascontiguousarray(rows, np.int64), prefetch))
