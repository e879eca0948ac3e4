"""Fused loss+gradient row kernels, a reference and numbered variants, timed against each other in ONE process.

The llm.c way (issue 15): ``kernels.cpu._blocked_rows`` is variant 0 (the reference); each
numbered variant here is one idea, run through the same chunked parallel driver as
``kernels.cpu._loss_grad`` (same chunks, same serial combine), checked against a float64
NumPy reference, and timed interleaved with the others and with the machine's read
bandwidth measured in the same run. The winners live in ``kernels/cpu.py``; this file
keeps the ideas that lost, so that their figures in benchmarks/README.md can be re-made::

    PYTHONPATH=. python benchmarks/kernel_variants.py                  # the default cases
    PYTHONPATH=. python benchmarks/kernel_variants.py --cases 2000000x32x1:float32 --variants 0,1,2

Shapes and formula as in ``kernels.cpu``: X (n, F), Y (n, O), W (O, F), b (O,);
R = X W^T + b - Y, loss = sum R^2, dW = R^T X, db = R.sum(0) (per chunk, unscaled).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

from linreg.kernels import cpu  # noqa: E402

_FASTMATH = {"reassoc", "contract"}
#: Variant 2: how far ahead of the row being computed X is prefetched.
_PREFETCH_AHEAD = 8192


# --------------------------------------------------------------------------- variants


@njit(cache=True, fastmath=_FASTMATH)
def _v0_reference(X, Y, W, b, start, stop, dW_part, db_part):
    """0: kernels.cpu._blocked_rows, the kernel before issue 15 (float64 copy of each block, float64 gradient)."""
    n_outputs, n_features = W.shape
    scratch = np.empty(cpu._scratch_size(n_features, n_outputs))
    return cpu._blocked_rows(X, Y, W, b, start, stop, scratch, dW_part, db_part)


@njit(cache=True, fastmath=_FASTMATH)
def _v1_short_partials(X, Y, W, b, start, stop, dW_part, db_part):
    """1: no float64 copy of X; float64 residuals (4 rows x 1 output per pass over a weight row, each float32
    element converted as it is used), then the gradient in X's dtype (float32 products, float32 partial sums of
    one block of rows, flushed to float64 dW_part after each block)."""
    n_outputs, n_features = W.shape
    rows = 32
    x = X.reshape(-1)
    w64 = np.empty(n_outputs * n_features)
    for o in range(n_outputs):
        db_part[o] = 0.0
        for f in range(n_features):
            dW_part[o, f] = 0.0
            w64[o * n_features + f] = W[o, f]
    partial = np.zeros(n_outputs * n_features, X.dtype)
    rb = np.empty(rows * n_outputs)
    rs = np.empty(rows * n_outputs, X.dtype)
    total = 0.0
    for i0 in range(start, stop, rows):
        m = min(rows, stop - i0)
        base = i0 * n_features
        for o in range(n_outputs):
            wo = w64[o * n_features:(o + 1) * n_features]
            bo = np.float64(b[o])
            k = 0
            while k + 4 <= m:
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                x1 = x[base + (k + 1) * n_features:base + (k + 2) * n_features]
                x2 = x[base + (k + 2) * n_features:base + (k + 3) * n_features]
                x3 = x[base + (k + 3) * n_features:base + (k + 4) * n_features]
                a0 = bo - np.float64(Y[i0 + k, o])
                a1 = bo - np.float64(Y[i0 + k + 1, o])
                a2 = bo - np.float64(Y[i0 + k + 2, o])
                a3 = bo - np.float64(Y[i0 + k + 3, o])
                for f in range(n_features):
                    wf = wo[f]
                    a0 += np.float64(x0[f]) * wf
                    a1 += np.float64(x1[f]) * wf
                    a2 += np.float64(x2[f]) * wf
                    a3 += np.float64(x3[f]) * wf
                rb[k * n_outputs + o] = a0
                rb[(k + 1) * n_outputs + o] = a1
                rb[(k + 2) * n_outputs + o] = a2
                rb[(k + 3) * n_outputs + o] = a3
                k += 4
            while k < m:
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                a0 = bo - np.float64(Y[i0 + k, o])
                for f in range(n_features):
                    a0 += np.float64(x0[f]) * wo[f]
                rb[k * n_outputs + o] = a0
                k += 1
        for o in range(n_outputs):
            squares = 0.0
            sums = 0.0
            for k in range(m):
                r = rb[k * n_outputs + o]
                squares += r * r
                sums += r
                rs[k * n_outputs + o] = r
            total += squares
            db_part[o] += sums
        for o in range(n_outputs):
            g = partial[o * n_features:(o + 1) * n_features]
            k = 0
            while k + 4 <= m:
                r0 = rs[k * n_outputs + o]
                r1 = rs[(k + 1) * n_outputs + o]
                r2 = rs[(k + 2) * n_outputs + o]
                r3 = rs[(k + 3) * n_outputs + o]
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                x1 = x[base + (k + 1) * n_features:base + (k + 2) * n_features]
                x2 = x[base + (k + 2) * n_features:base + (k + 3) * n_features]
                x3 = x[base + (k + 3) * n_features:base + (k + 4) * n_features]
                for f in range(n_features):
                    g[f] += (r0 * x0[f] + r1 * x1[f]) + (r2 * x2[f] + r3 * x3[f])
                k += 4
            while k < m:
                r0 = rs[k * n_outputs + o]
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                for f in range(n_features):
                    g[f] += r0 * x0[f]
                k += 1
            d = dW_part[o]
            for f in range(n_features):
                d[f] += g[f]
                g[f] = 0
    return total


@njit(cache=True, fastmath=_FASTMATH)
def _v2_short_partials_prefetch(X, Y, W, b, start, stop, dW_part, db_part):
    """2: variant 1 plus software prefetch of X (when it streams from memory) _PREFETCH_AHEAD bytes ahead,
    the lines of 4 rows per 4-row step of the first output's residual pass."""
    n_outputs, n_features = W.shape
    rows = 32
    x = X.reshape(-1)
    line = 64 // x.itemsize
    ahead = _PREFETCH_AHEAD // x.itemsize
    reach = x.shape[0] if x.shape[0] * x.itemsize > cpu._PREFETCH_MIN_BYTES else 0
    w64 = np.empty(n_outputs * n_features)
    for o in range(n_outputs):
        db_part[o] = 0.0
        for f in range(n_features):
            dW_part[o, f] = 0.0
            w64[o * n_features + f] = W[o, f]
    partial = np.zeros(n_outputs * n_features, X.dtype)
    rb = np.empty(rows * n_outputs)
    rs = np.empty(rows * n_outputs, X.dtype)
    total = 0.0
    for i0 in range(start, stop, rows):
        m = min(rows, stop - i0)
        base = i0 * n_features
        for o in range(n_outputs):
            wo = w64[o * n_features:(o + 1) * n_features]
            bo = np.float64(b[o])
            k = 0
            while k + 4 <= m:
                if o == 0:
                    first = base + k * n_features + ahead
                    for j in range(first, min(first + 4 * n_features, reach), line):
                        cpu._prefetch(x, j)
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                x1 = x[base + (k + 1) * n_features:base + (k + 2) * n_features]
                x2 = x[base + (k + 2) * n_features:base + (k + 3) * n_features]
                x3 = x[base + (k + 3) * n_features:base + (k + 4) * n_features]
                a0 = bo - np.float64(Y[i0 + k, o])
                a1 = bo - np.float64(Y[i0 + k + 1, o])
                a2 = bo - np.float64(Y[i0 + k + 2, o])
                a3 = bo - np.float64(Y[i0 + k + 3, o])
                for f in range(n_features):
                    wf = wo[f]
                    a0 += np.float64(x0[f]) * wf
                    a1 += np.float64(x1[f]) * wf
                    a2 += np.float64(x2[f]) * wf
                    a3 += np.float64(x3[f]) * wf
                rb[k * n_outputs + o] = a0
                rb[(k + 1) * n_outputs + o] = a1
                rb[(k + 2) * n_outputs + o] = a2
                rb[(k + 3) * n_outputs + o] = a3
                k += 4
            while k < m:
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                a0 = bo - np.float64(Y[i0 + k, o])
                for f in range(n_features):
                    a0 += np.float64(x0[f]) * wo[f]
                rb[k * n_outputs + o] = a0
                k += 1
        for o in range(n_outputs):
            squares = 0.0
            sums = 0.0
            for k in range(m):
                r = rb[k * n_outputs + o]
                squares += r * r
                sums += r
                rs[k * n_outputs + o] = r
            total += squares
            db_part[o] += sums
        for o in range(n_outputs):
            g = partial[o * n_features:(o + 1) * n_features]
            k = 0
            while k + 4 <= m:
                r0 = rs[k * n_outputs + o]
                r1 = rs[(k + 1) * n_outputs + o]
                r2 = rs[(k + 2) * n_outputs + o]
                r3 = rs[(k + 3) * n_outputs + o]
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                x1 = x[base + (k + 1) * n_features:base + (k + 2) * n_features]
                x2 = x[base + (k + 2) * n_features:base + (k + 3) * n_features]
                x3 = x[base + (k + 3) * n_features:base + (k + 4) * n_features]
                for f in range(n_features):
                    g[f] += (r0 * x0[f] + r1 * x1[f]) + (r2 * x2[f] + r3 * x3[f])
                k += 4
            while k < m:
                r0 = rs[k * n_outputs + o]
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                for f in range(n_features):
                    g[f] += r0 * x0[f]
                k += 1
            d = dW_part[o]
            for f in range(n_features):
                d[f] += g[f]
                g[f] = 0
    return total


def make_tiled(rows: int, ahead_bytes: int, copy64: bool, pair_outputs: bool, burst: bool = False):
    """Variants 3+: one kernel with its tunables as compile-time constants (not cached: a closure).

    rows: rows per block (the float32 partial gradient is flushed to float64 after each block);
    ahead_bytes: prefetch X this far ahead of the 4 rows being computed (0: off); copy64: convert a
    block of X to float64 once (residual pass reads the copy) instead of converting as used;
    pair_outputs: residual and gradient tiles of 4 rows x 2 outputs (x loaded once per 2 outputs);
    burst: the prefetches of a whole block at its start (one check per block) instead of per 4 rows.
    """

    @njit(fastmath=_FASTMATH)
    def kernel(X, Y, W, b, start, stop, dW_part, db_part):
        n_outputs, n_features = W.shape
        x = X.reshape(-1)
        line = 64 // x.itemsize
        ahead = ahead_bytes // x.itemsize
        reach = x.shape[0] if ahead > 0 and x.shape[0] * x.itemsize > cpu._PREFETCH_MIN_BYTES else 0
        spread = 0 if burst else reach  # per-4-row prefetches only when not in bursts
        w64 = np.empty(n_outputs * n_features)
        for o in range(n_outputs):
            db_part[o] = 0.0
            for f in range(n_features):
                dW_part[o, f] = 0.0
                w64[o * n_features + f] = W[o, f]
        partial = np.zeros(n_outputs * n_features, X.dtype)
        rb = np.empty(rows * n_outputs)
        rs = np.empty(rows * n_outputs, X.dtype)
        xb = np.empty(rows * n_features if copy64 else 0)
        pairs = n_outputs // 2 if pair_outputs else 0
        total = 0.0
        for i0 in range(start, stop, rows):
            m = min(rows, stop - i0)
            base = i0 * n_features
            if burst and reach > 0:
                for j in range(base + ahead, min(base + ahead + m * n_features, reach), line):
                    cpu._prefetch(x, j)
            if copy64:
                src = x[base:base + m * n_features]
                for j in range(m * n_features):
                    xb[j] = src[j]
                xs = xb
                xbase = 0
            else:
                xs = x
                xbase = base
            for p in range(pairs):
                o = 2 * p
                wa = w64[o * n_features:(o + 1) * n_features]
                wb = w64[(o + 1) * n_features:(o + 2) * n_features]
                ba = np.float64(b[o])
                bb = np.float64(b[o + 1])
                k = 0
                while k + 4 <= m:
                    if p == 0 and spread > 0:
                        first = base + k * n_features + ahead
                        for j in range(first, min(first + 4 * n_features, reach), line):
                            cpu._prefetch(x, j)
                    x0 = xs[xbase + k * n_features:xbase + (k + 1) * n_features]
                    x1 = xs[xbase + (k + 1) * n_features:xbase + (k + 2) * n_features]
                    x2 = xs[xbase + (k + 2) * n_features:xbase + (k + 3) * n_features]
                    x3 = xs[xbase + (k + 3) * n_features:xbase + (k + 4) * n_features]
                    a0 = ba - np.float64(Y[i0 + k, o])
                    a1 = ba - np.float64(Y[i0 + k + 1, o])
                    a2 = ba - np.float64(Y[i0 + k + 2, o])
                    a3 = ba - np.float64(Y[i0 + k + 3, o])
                    c0 = bb - np.float64(Y[i0 + k, o + 1])
                    c1 = bb - np.float64(Y[i0 + k + 1, o + 1])
                    c2 = bb - np.float64(Y[i0 + k + 2, o + 1])
                    c3 = bb - np.float64(Y[i0 + k + 3, o + 1])
                    for f in range(n_features):
                        v0 = np.float64(x0[f])
                        v1 = np.float64(x1[f])
                        v2 = np.float64(x2[f])
                        v3 = np.float64(x3[f])
                        waf = wa[f]
                        wbf = wb[f]
                        a0 += v0 * waf
                        a1 += v1 * waf
                        a2 += v2 * waf
                        a3 += v3 * waf
                        c0 += v0 * wbf
                        c1 += v1 * wbf
                        c2 += v2 * wbf
                        c3 += v3 * wbf
                    rb[k * n_outputs + o] = a0
                    rb[(k + 1) * n_outputs + o] = a1
                    rb[(k + 2) * n_outputs + o] = a2
                    rb[(k + 3) * n_outputs + o] = a3
                    rb[k * n_outputs + o + 1] = c0
                    rb[(k + 1) * n_outputs + o + 1] = c1
                    rb[(k + 2) * n_outputs + o + 1] = c2
                    rb[(k + 3) * n_outputs + o + 1] = c3
                    k += 4
                while k < m:
                    x0 = xs[xbase + k * n_features:xbase + (k + 1) * n_features]
                    a0 = ba - np.float64(Y[i0 + k, o])
                    c0 = bb - np.float64(Y[i0 + k, o + 1])
                    for f in range(n_features):
                        v0 = np.float64(x0[f])
                        a0 += v0 * wa[f]
                        c0 += v0 * wb[f]
                    rb[k * n_outputs + o] = a0
                    rb[k * n_outputs + o + 1] = c0
                    k += 1
            for o in range(2 * pairs, n_outputs):
                wo = w64[o * n_features:(o + 1) * n_features]
                bo = np.float64(b[o])
                k = 0
                while k + 4 <= m:
                    if o == 0 and spread > 0:
                        first = base + k * n_features + ahead
                        for j in range(first, min(first + 4 * n_features, reach), line):
                            cpu._prefetch(x, j)
                    x0 = xs[xbase + k * n_features:xbase + (k + 1) * n_features]
                    x1 = xs[xbase + (k + 1) * n_features:xbase + (k + 2) * n_features]
                    x2 = xs[xbase + (k + 2) * n_features:xbase + (k + 3) * n_features]
                    x3 = xs[xbase + (k + 3) * n_features:xbase + (k + 4) * n_features]
                    a0 = bo - np.float64(Y[i0 + k, o])
                    a1 = bo - np.float64(Y[i0 + k + 1, o])
                    a2 = bo - np.float64(Y[i0 + k + 2, o])
                    a3 = bo - np.float64(Y[i0 + k + 3, o])
                    for f in range(n_features):
                        wf = wo[f]
                        a0 += np.float64(x0[f]) * wf
                        a1 += np.float64(x1[f]) * wf
                        a2 += np.float64(x2[f]) * wf
                        a3 += np.float64(x3[f]) * wf
                    rb[k * n_outputs + o] = a0
                    rb[(k + 1) * n_outputs + o] = a1
                    rb[(k + 2) * n_outputs + o] = a2
                    rb[(k + 3) * n_outputs + o] = a3
                    k += 4
                while k < m:
                    x0 = xs[xbase + k * n_features:xbase + (k + 1) * n_features]
                    a0 = bo - np.float64(Y[i0 + k, o])
                    for f in range(n_features):
                        a0 += np.float64(x0[f]) * wo[f]
                    rb[k * n_outputs + o] = a0
                    k += 1
            for o in range(n_outputs):
                squares = 0.0
                sums = 0.0
                for k in range(m):
                    r = rb[k * n_outputs + o]
                    squares += r * r
                    sums += r
                    rs[k * n_outputs + o] = r
                total += squares
                db_part[o] += sums
            for p in range(pairs):
                o = 2 * p
                ga = partial[o * n_features:(o + 1) * n_features]
                gb = partial[(o + 1) * n_features:(o + 2) * n_features]
                k = 0
                while k + 4 <= m:
                    r0 = rs[k * n_outputs + o]
                    r1 = rs[(k + 1) * n_outputs + o]
                    r2 = rs[(k + 2) * n_outputs + o]
                    r3 = rs[(k + 3) * n_outputs + o]
                    s0 = rs[k * n_outputs + o + 1]
                    s1 = rs[(k + 1) * n_outputs + o + 1]
                    s2 = rs[(k + 2) * n_outputs + o + 1]
                    s3 = rs[(k + 3) * n_outputs + o + 1]
                    x0 = x[base + k * n_features:base + (k + 1) * n_features]
                    x1 = x[base + (k + 1) * n_features:base + (k + 2) * n_features]
                    x2 = x[base + (k + 2) * n_features:base + (k + 3) * n_features]
                    x3 = x[base + (k + 3) * n_features:base + (k + 4) * n_features]
                    for f in range(n_features):
                        ga[f] += (r0 * x0[f] + r1 * x1[f]) + (r2 * x2[f] + r3 * x3[f])
                        gb[f] += (s0 * x0[f] + s1 * x1[f]) + (s2 * x2[f] + s3 * x3[f])
                    k += 4
                while k < m:
                    r0 = rs[k * n_outputs + o]
                    s0 = rs[k * n_outputs + o + 1]
                    x0 = x[base + k * n_features:base + (k + 1) * n_features]
                    for f in range(n_features):
                        ga[f] += r0 * x0[f]
                        gb[f] += s0 * x0[f]
                    k += 1
            for o in range(2 * pairs, n_outputs):
                g = partial[o * n_features:(o + 1) * n_features]
                k = 0
                while k + 4 <= m:
                    r0 = rs[k * n_outputs + o]
                    r1 = rs[(k + 1) * n_outputs + o]
                    r2 = rs[(k + 2) * n_outputs + o]
                    r3 = rs[(k + 3) * n_outputs + o]
                    x0 = x[base + k * n_features:base + (k + 1) * n_features]
                    x1 = x[base + (k + 1) * n_features:base + (k + 2) * n_features]
                    x2 = x[base + (k + 2) * n_features:base + (k + 3) * n_features]
                    x3 = x[base + (k + 3) * n_features:base + (k + 4) * n_features]
                    for f in range(n_features):
                        g[f] += (r0 * x0[f] + r1 * x1[f]) + (r2 * x2[f] + r3 * x3[f])
                    k += 4
                while k < m:
                    r0 = rs[k * n_outputs + o]
                    x0 = x[base + k * n_features:base + (k + 1) * n_features]
                    for f in range(n_features):
                        g[f] += r0 * x0[f]
                    k += 1
            for o in range(n_outputs):
                g = partial[o * n_features:(o + 1) * n_features]
                d = dW_part[o]
                for f in range(n_features):
                    d[f] += g[f]
                    g[f] = 0
        return total

    return kernel


@njit(cache=True, fastmath=_FASTMATH)
def _v12_outer_product(X, Y, W, b, start, stop, dW_part, db_part):
    """12: outputs innermost (contiguous, vectorised over the outputs), accumulators in memory: per feature,
    the residual rows acc[r, :] += x[r, f] * W^T[f, :] for 4 rows, and the gradient partial[f, :] +=
    sum_r x[r, f] * q[r, :] (q: the residuals in X's dtype); no horizontal sums."""
    n_outputs, n_features = W.shape
    n_out = n_outputs
    x = X.reshape(-1)
    y = Y.reshape(-1)
    wt = np.empty(n_features * n_out)
    for o in range(n_out):
        for f in range(n_features):
            wt[f * n_out + o] = W[o, f]
    partial = np.zeros(n_features * n_out, X.dtype)
    grad = np.zeros(n_features * n_out)
    acc = np.empty(4 * n_out)
    q = np.empty(4 * n_out, X.dtype)
    sums = np.zeros(n_out)
    total = 0.0
    rows = 32
    for i0 in range(start, stop, rows):
        m = min(rows, stop - i0)
        for k in range(0, m, 4):
            count = min(4, m - k)
            for r in range(4):
                i = i0 + k + min(r, count - 1)
                for o in range(n_out):
                    acc[r * n_out + o] = np.float64(b[o]) - np.float64(y[i * n_out + o])
            i1 = i0 + k + min(1, count - 1)
            i2 = i0 + k + min(2, count - 1)
            i3 = i0 + k + min(3, count - 1)
            x0 = x[(i0 + k) * n_features:(i0 + k + 1) * n_features]
            x1 = x[i1 * n_features:(i1 + 1) * n_features]
            x2 = x[i2 * n_features:(i2 + 1) * n_features]
            x3 = x[i3 * n_features:(i3 + 1) * n_features]
            a0 = acc[0:n_out]
            a1 = acc[n_out:2 * n_out]
            a2 = acc[2 * n_out:3 * n_out]
            a3 = acc[3 * n_out:4 * n_out]
            for f in range(n_features):
                v0 = np.float64(x0[f])
                v1 = np.float64(x1[f])
                v2 = np.float64(x2[f])
                v3 = np.float64(x3[f])
                wf = wt[f * n_out:(f + 1) * n_out]
                for o in range(n_out):
                    wo = wf[o]
                    a0[o] += v0 * wo
                    a1[o] += v1 * wo
                    a2[o] += v2 * wo
                    a3[o] += v3 * wo
            for r in range(4):
                for o in range(n_out):
                    a = acc[r * n_out + o] if r < count else 0.0
                    total += a * a
                    sums[o] += a
                    q[r * n_out + o] = a
            q0 = q[0:n_out]
            q1 = q[n_out:2 * n_out]
            q2 = q[2 * n_out:3 * n_out]
            q3 = q[3 * n_out:4 * n_out]
            for f in range(n_features):
                u0 = x0[f]
                u1 = x1[f]
                u2 = x2[f]
                u3 = x3[f]
                g = partial[f * n_out:(f + 1) * n_out]
                for o in range(n_out):
                    g[o] += (u0 * q0[o] + u1 * q1[o]) + (u2 * q2[o] + u3 * q3[o])
        for j in range(n_features * n_out):
            grad[j] += partial[j]
            partial[j] = 0
    for o in range(n_out):
        db_part[o] = sums[o]
        for f in range(n_features):
            dW_part[o, f] = grad[f * n_out + o]
    return total


@njit(cache=True, fastmath=_FASTMATH)
def _v13_shipped(X, Y, W, b, start, stop, dW_part, db_part):
    """13: kernels.cpu._tiled_rows as it runs for X larger than 16 MiB (variant 3's tiles, prefetch 8 KiB
    ahead, 4 rows' lines per 4 rows), whatever the size of X here."""
    n_outputs, n_features = W.shape
    scratch = np.empty(cpu._scratch_size(n_features, n_outputs))
    return cpu._tiled_rows_with(X, Y, W, b, start, stop, scratch, dW_part, db_part, True)


@njit(cache=True, fastmath=_FASTMATH)
def _v17_shipped_in_cache(X, Y, W, b, start, stop, dW_part, db_part):
    """17: kernels.cpu._tiled_rows as it runs for smaller X (no prefetch code), whatever the size of X here."""
    n_outputs, n_features = W.shape
    scratch = np.empty(cpu._scratch_size(n_features, n_outputs))
    return cpu._tiled_rows_with(X, Y, W, b, start, stop, scratch, dW_part, db_part, False)



@njit(cache=True, fastmath=_FASTMATH)
def _v18_shipped(X, Y, W, b, start, stop, dW_part, db_part):
    """18: kernels.cpu._tiled_rows itself: variant 17 or 13 by the size of X (one check per chunk)."""
    n_outputs, n_features = W.shape
    scratch = np.empty(cpu._scratch_size(n_features, n_outputs))
    return cpu._tiled_rows(X, Y, W, b, start, stop, scratch, dW_part, db_part)


@njit(cache=True, fastmath=_FASTMATH)
def _v19_lanes(X, Y, W, b, start, stop, dW_part, db_part):
    """19: kernels.cpu._lanes_rows, the outputs in 8-lane float64 vectors (kernels.simd), float64 throughout."""
    return cpu._lanes_rows(X, Y, W, b, start, stop, dW_part, db_part)


@njit(cache=True)
def _v20_blas(X, Y, W, b, start, stop, dW_part, db_part):
    """20: BLAS from compiled code per block of 256 rows (numba's np.dot calls scipy's BLAS): the block
    converted to float64, P = X_block @ W^T by dgemm, float64 residuals, then R^T (in X's dtype) @ X_block
    by sgemm (dgemm for float64 data) added into the float64 partial."""
    n_outputs, n_features = W.shape
    rows = 256
    wt = np.empty((n_features, n_outputs))
    for o in range(n_outputs):
        db_part[o] = 0.0
        for f in range(n_features):
            wt[f, o] = W[o, f]
            dW_part[o, f] = 0.0
    x = X.reshape(-1)
    y = Y.reshape(-1)
    total = 0.0
    for i0 in range(start, stop, rows):
        m = min(rows, stop - i0)
        block = x[i0 * n_features:(i0 + m) * n_features]
        x64 = np.empty(m * n_features)
        for j in range(m * n_features):
            x64[j] = block[j]
        p = np.empty((m, n_outputs))
        np.dot(x64.reshape(m, n_features), wt, p)
        rt = np.empty((n_outputs, m), X.dtype)
        for k in range(m):
            for o in range(n_outputs):
                r = p[k, o] + (np.float64(b[o]) - np.float64(y[(i0 + k) * n_outputs + o]))
                total += r * r
                db_part[o] += r
                rt[o, k] = r
        g = np.empty((n_outputs, n_features), X.dtype)
        np.dot(rt, block.reshape(m, n_features), g)
        for o in range(n_outputs):
            for f in range(n_features):
                dW_part[o, f] += g[o, f]
    return total


@njit(cache=True, fastmath=_FASTMATH)
def _v21_wide(X, Y, W, b, start, stop, dW_part, db_part):
    """21: kernels.cpu._wide_rows (one output): 8 rows per group, forward and backward back to back in
    8-lane float64 vectors, the 8 horizontal sums by one transpose-reduce; no software prefetch."""
    return cpu._wide_rows(X, Y, W, b, start, stop, dW_part, db_part)


def make_wide(ahead_bytes: int, spread: bool = False, float32_backward: bool = False, into_l2: bool = False):
    """Variants 22+: kernels.cpu._wide_rows_with prefetching X ``ahead_bytes`` ahead (not cached: a closure);
    the lines of a group of 8 rows at its start, or ``spread`` over its forward loop (8 x 8 elements per step);
    ``float32_backward``: float32 data's backward in 16-lane float32 vectors (float32 products, a float32 sum
    over the group's 8 rows, added into the float64 gradient), the feature tail in float64; ``into_l2``: the
    spread prefetches with locality 2 (prefetcht1, into L2) instead of 3."""

    @njit(fastmath=_FASTMATH)
    def kernel(X, Y, W, b, start, stop, dW_part, db_part):
        return cpu._wide_rows_with(X, Y, W, b, start, stop, dW_part, db_part, ahead_bytes, spread,
                                    float32_backward, into_l2)

    return kernel



# --------------------------------------------------------------------------- driver and timing

VARIANTS = {0: _v0_reference, 1: _v1_short_partials, 2: _v2_short_partials_prefetch, 12: _v12_outer_product,
            13: _v13_shipped, 17: _v17_shipped_in_cache, 18: _v18_shipped, 19: _v19_lanes,
            20: _v20_blas, 21: _v21_wide}
#: Variants 22+: (prefetch distance in bytes, spread) of make_wide.
WIDE = {22: (2048,), 23: (8192,), 24: (32768,), 25: (4096,), 26: (16384,), 27: (8192, True), 28: (4096, True),
        29: (16384, True), 30: (0, False, True), 31: (8192, True, True), 32: (8192, True, False, True),
        33: (16384, True, False, True)}
#: Variants 3+: (rows, prefetch ahead bytes, float64 copy, 2-output tiles) of make_tiled.
TILED = {3: (32, 0, False, True), 4: (32, 0, True, True), 5: (64, 0, True, True), 6: (32, 4096, False, True),
         7: (32, 16384, False, True), 8: (64, 8192, True, True), 9: (16, 0, False, True),
         14: (32, 8192, False, True, True), 15: (32, 16384, False, True, True), 16: (32, 4096, False, True, True)}


def variant_kernel(variant: int):
    if variant in VARIANTS:
        return VARIANTS[variant]
    if variant in WIDE:
        VARIANTS[variant] = make_wide(*WIDE[variant])
        return VARIANTS[variant]
    VARIANTS[variant] = make_tiled(*TILED[variant])
    return VARIANTS[variant]


def pick(variant: int, n_outputs: int):
    return variant_kernel(variant)


@njit(parallel=True, cache=True)
def _drive(row_kernel, X, Y, W, b, chunk_rows, n_chunks, dW_parts, db_parts, loss_parts, dW, db, parallel):
    """kernels.cpu._loss_grad with the row kernel as an argument: same chunks, same combine."""
    n_samples = X.shape[0]
    if parallel:
        for c in prange(n_chunks):
            loss_parts[c] = row_kernel(X, Y, W, b, c * chunk_rows, min((c + 1) * chunk_rows, n_samples),
                                       dW_parts[c], db_parts[c])
    else:
        for c in range(n_chunks):
            loss_parts[c] = row_kernel(X, Y, W, b, c * chunk_rows, min((c + 1) * chunk_rows, n_samples),
                                       dW_parts[c], db_parts[c])
    return cpu._combine(dW, db, dW_parts, db_parts, loss_parts, n_chunks, n_samples * W.shape[0])


def runner(variant: int, X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray):
    """A callable computing (loss, dW, db) with ``variant``; its outputs are returned for checking."""
    n_samples, n_features = X.shape
    n_outputs = W.shape[0]
    chunk_rows, n_chunks = cpu.chunking(n_samples)
    parallel = cpu.parallel_pass(n_samples, n_features, n_outputs)
    dW_parts, db_parts = np.zeros((n_chunks, n_outputs, n_features)), np.zeros((n_chunks, n_outputs))
    loss_parts = np.zeros(n_chunks)
    dW, db = np.zeros((n_outputs, n_features)), np.zeros(n_outputs)
    kernel = pick(variant, n_outputs)

    def run():
        value = _drive(kernel, X, Y, W, b, chunk_rows, n_chunks, dW_parts, db_parts, loss_parts, dW, db, parallel)
        return value, dW, db

    return run


def compute_cost(variants: list[int], n_features: int, n_outputs: int, dtype: str, rounds: int = 30) -> dict:
    """Single-thread compute cost, ns per element of X, on cache-resident rows (one chunk in L2), by thread
    time: the arithmetic a variant must hide behind the memory stream. Best of ``rounds``, in turns."""
    n_rows = max(64, (256 << 10) // (n_features * np.dtype(dtype).itemsize))
    X, Y = harness.make_problem(harness.Case("W2", n_rows, n_features, n_outputs, dtype))
    W = np.ones((n_outputs, n_features), dtype) * np.asarray(0.01, dtype)
    b = np.zeros(n_outputs, dtype)
    dW_part, db_part = np.zeros((n_outputs, n_features)), np.zeros(n_outputs)
    kernels = {v: pick(v, n_outputs) for v in variants}
    repeat = max(1, 20_000_000 // (n_rows * n_features * n_outputs))
    best = dict.fromkeys(variants, np.inf)
    for kernel in kernels.values():
        kernel(X, Y, W, b, 0, n_rows, dW_part, db_part)
    for _ in range(rounds):
        for v, kernel in kernels.items():
            t0 = time.thread_time_ns()
            for _ in range(repeat):
                kernel(X, Y, W, b, 0, n_rows, dW_part, db_part)
            best[v] = min(best[v], (time.thread_time_ns() - t0) / repeat / X.size)
    return best


def parse_case(text: str) -> tuple[int, int, int, str]:
    shape, _, dtype = text.partition(":")
    n, f, o = (int(v) for v in shape.split("x"))
    return n, f, o, dtype or "float32"


DEFAULT_CASES = ["2000000x32x1:float32", "1000000x128x1:float32", "1000000x64x8:float32",
                 "1000000x32x1:float64", "100000x128x1:float32", "10000x128x1:float32"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help="NxFxO:dtype, comma-separated")
    parser.add_argument("--variants", default=",".join(str(v) for v in [*VARIANTS, *TILED, *WIDE]))
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per variant and case")
    parser.add_argument("--compute", action="store_true",
                        help="single-thread ns per element on cache-resident data instead of whole passes")
    args = parser.parse_args(argv)
    variants = [int(v) for v in args.variants.split(",")]
    if args.compute:
        for text in args.cases.split(","):
            _, f, o, dtype = parse_case(text)
            costs = compute_cost(variants, f, o, dtype)
            print(f"{text:24s} ns/element, 1 thread, in L2: "
                  + "  ".join(f"v{v} {cost:.3f}" for v, cost in costs.items()))
        return 0
    bandwidth = harness.measure_read_bandwidth(budget_s=args.budget)
    print(f"read bandwidth {bandwidth['GB/s']:.1f} GB/s (harness: numba parallel sum over 512 MiB, best round)")
    sum_kernel = harness._parallel_sum()
    for text in args.cases.split(","):
        n, f, o, dtype = parse_case(text)
        X, Y = harness.make_problem(harness.Case("W2", n, f, o, dtype))
        rng = np.random.default_rng(1)
        W = rng.standard_normal((o, f)).astype(dtype)
        b = rng.standard_normal(o).astype(dtype)
        R = X.astype(np.float64) @ W.astype(np.float64).T + b.astype(np.float64) - Y
        ref_dW = 2.0 / R.size * (R.T @ X.astype(np.float64))
        ref_loss = float((R * R).sum()) / R.size
        del R
        runs = {v: runner(v, X, Y, W, b) for v in variants}
        for v, run in runs.items():
            t0 = time.perf_counter()
            value, dW, _ = run()
            errors = (abs(value - ref_loss) / ref_loss, np.abs(dW - ref_dW).max() / np.abs(ref_dW).max())
            print(f"  {text} v{v}: first call {time.perf_counter() - t0:.2f} s, "
                  f"rel. error loss {errors[0]:.1e} dW {errors[1]:.1e}")
        nbytes = X.nbytes + Y.nbytes
        # The roofline of this case, timed in turns with the variants: a parallel sum over as many bytes.
        same_bytes, parts = np.ones(nbytes // 8), np.zeros(256)
        fns = {"read": lambda same_bytes=same_bytes, parts=parts: sum_kernel(same_bytes, parts)}
        fns.update({str(v): run for v, run in runs.items()})
        timed = harness.time_interleaved(fns, args.budget)
        read = nbytes / timed["read"]["min"] / 1e9
        print(f"{text:24s} read: {timed['read']['min'] * 1e3:9.3f} ms  {read:6.1f} GB/s (same bytes, in turns)")
        base = timed[str(variants[0])]["min"]
        for v in variants:
            best = timed[str(v)]["min"]
            gbs = nbytes / best / 1e9
            print(f"{text:24s} v{v}: {best * 1e3:9.3f} ms  {gbs:6.1f} GB/s  {gbs / read:5.0%} of the read"
                  f"  {base / best:5.2f}x v{variants[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
