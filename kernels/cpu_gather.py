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

from . import cpu

#: Positions ahead of the row being copied whose rows are prefetched: 32 rows of 32 float32
#: features are ~70 cache lines requested ahead (8 to 64 measured; see benchmarks/README.md).
PREFETCH_DISTANCE = 32

_FASTMATH = {"reassoc", "contract"}


@njit(cache=True, fastmath=_FASTMATH)
def _gather_block_rows(X, Y, W, b, rows, weights, start, stop, scratch, dW_part, db_part):
    """Weighted squared-residual sum and weight sum of positions [start, stop); sum s r x^T, sum s r into the parts.

    ``scratch``: float64, ``kernels.cpu._scratch_size(n_features, n_outputs)`` long or more
    (allocated here if shorter): a block of gathered rows, W in float64, the block's residuals.
    """
    n_outputs, n_features = W.shape
    block_rows = cpu._block_rows(n_features)
    need = cpu._scratch_size(n_features, n_outputs)
    buf = scratch[:need] if scratch.shape[0] >= need else np.empty(need)
    xb = buf[:block_rows * n_features]
    w64 = buf[block_rows * n_features:(block_rows + n_outputs) * n_features]
    rb = buf[(block_rows + n_outputs) * n_features:need]
    for o in range(n_outputs):
        db_part[o] = 0.0
        for f in range(n_features):
            dW_part[o, f] = 0.0
            w64[o * n_features + f] = W[o, f]
    shuffled = rows.shape[0] > 0
    weighted = weights.shape[0] > 0
    # Prefetch only shuffled rows of C-contiguous data (in order, the hardware prefetchers do it).
    x = cpu._flat(X)
    y = cpu._flat(Y)
    line = 64 // x.itemsize  # elements per cache line
    prefetch_end = rows.shape[0] - PREFETCH_DISTANCE if x.shape[0] > 0 and y.shape[0] > 0 else 0
    total = 0.0
    weight_total = 0.0
    for i0 in range(start, stop, block_rows):
        m = min(block_rows, stop - i0)
        # Gather: the rows' loads do not depend on each other, so the core overlaps their misses.
        for k in range(m):
            p = i0 + k
            if p < prefetch_end:  # written out here: as a function (even inlined) it cost ~30 ns per row
                first = rows[p + PREFETCH_DISTANCE] * n_features
                e = first
                while e < first + n_features:
                    cpu._prefetch(x, e)
                    e += line
                cpu._prefetch(x, first + n_features - 1)  # a row not aligned to lines ends on one more
                cpu._prefetch(y, rows[p + PREFETCH_DISTANCE] * n_outputs)
            i = rows[p] if shuffled else p
            src = X[i]
            dst = xb[k * n_features:(k + 1) * n_features]
            for f in range(n_features):
                dst[f] = src[f]
            for o in range(n_outputs):
                rb[k * n_outputs + o] = np.float64(b[o]) - np.float64(Y[i, o])
        # Residuals r = x . w + b - y, 4 rows per pass over a weight row.
        for o in range(n_outputs):
            wo = w64[o * n_features:(o + 1) * n_features]
            k = 0
            while k + 4 <= m:
                x0 = xb[k * n_features:(k + 1) * n_features]
                x1 = xb[(k + 1) * n_features:(k + 2) * n_features]
                x2 = xb[(k + 2) * n_features:(k + 3) * n_features]
                x3 = xb[(k + 3) * n_features:(k + 4) * n_features]
                a0 = 0.0
                a1 = 0.0
                a2 = 0.0
                a3 = 0.0
                for f in range(n_features):
                    wf = wo[f]
                    a0 += x0[f] * wf
                    a1 += x1[f] * wf
                    a2 += x2[f] * wf
                    a3 += x3[f] * wf
                rb[k * n_outputs + o] += a0
                rb[(k + 1) * n_outputs + o] += a1
                rb[(k + 2) * n_outputs + o] += a2
                rb[(k + 3) * n_outputs + o] += a3
                k += 4
            while k < m:
                x0 = xb[k * n_features:(k + 1) * n_features]
                a0 = 0.0
                for f in range(n_features):
                    a0 += x0[f] * wo[f]
                rb[k * n_outputs + o] += a0
                k += 1
        # Weights (rows recently touched: in cache), loss, and s * r in place for the gradient.
        for k in range(m):
            p = i0 + k
            s = (weights[rows[p] if shuffled else p]) if weighted else 1.0
            weight_total += s
            for o in range(n_outputs):
                r = rb[k * n_outputs + o]
                total += s * r * r
                rb[k * n_outputs + o] = s * r
        # The rank-1 accumulation of kernels.cpu._blocked_rows, written out again on purpose: as a shared
        # function it ran 4.5x slower here (benchmarks/README.md).
        for o in range(n_outputs):
            sums = 0.0
            for k in range(m):
                sums += rb[k * n_outputs + o]
            db_part[o] += sums
            g = dW_part[o]
            k = 0
            while k + 4 <= m:
                r0 = rb[k * n_outputs + o]
                r1 = rb[(k + 1) * n_outputs + o]
                r2 = rb[(k + 2) * n_outputs + o]
                r3 = rb[(k + 3) * n_outputs + o]
                x0 = xb[k * n_features:(k + 1) * n_features]
                x1 = xb[(k + 1) * n_features:(k + 2) * n_features]
                x2 = xb[(k + 2) * n_features:(k + 3) * n_features]
                x3 = xb[(k + 3) * n_features:(k + 4) * n_features]
                for f in range(n_features):
                    g[f] += (r0 * x0[f] + r1 * x1[f]) + (r2 * x2[f] + r3 * x3[f])
                k += 4
            while k < m:
                r0 = rb[k * n_outputs + o]
                x0 = xb[k * n_features:(k + 1) * n_features]
                for f in range(n_features):
                    g[f] += r0 * x0[f]
                k += 1
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
