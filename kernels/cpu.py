"""Hand-written Numba CPU kernels for linear regression.

Shapes (one vocabulary for every kernel in this package)::

    X   (n_samples, n_features)   data, float32 or float64, any memory layout
    Y   (n_samples, n_outputs)    targets, same dtype as X
    W   (n_outputs, n_features)   weights, as torch.nn.Linear stores them
    b   (n_outputs,)              bias
    P   (n_samples, n_outputs)    predictions
    dW, db                        gradients, shaped like W and b

Formulas (DESIGN.md section 1; the loss is exactly the seeds' ``mse``)::

    P  = X @ W.T + b
    R  = P - Y
    L  = sum(R**2) / (n_samples * n_outputs)
    dW = 2 / (n_samples * n_outputs) * R.T @ X
    db = 2 / (n_samples * n_outputs) * R.sum(axis=0)

Parallel strategy and why it is deterministic and race-free:

* The rows are cut into ``n_chunks`` contiguous chunks whose size depends only
  on ``n_samples`` (``chunking``), never on the thread count.
* Each chunk owns one row of the partial-sum buffers (``loss_parts[c]``,
  ``dW_parts[c]``, ``db_parts[c]``) and writes nothing else, so the
  ``prange`` iterations share no output: no race, no atomics.
* The partials are combined afterwards by one thread in chunk order 0, 1, ...,
  so the floating-point summation order is fixed: results are bit-identical
  for 1, 2 or 64 threads.
* Residuals, the loss and db are accumulated in float64 whatever the input
  dtype (exact products of float32 values, float64 sums: near the optimum the
  residual is a small difference of large predictions). The tiled kernel
  (``_tiled_rows``, 2 to LANES_MIN_OUTPUTS - 1 outputs) forms the gradient's products
  and partial sums over a block of _TILE_ROWS rows in X's dtype and adds each
  block's partial into float64: the accuracy contract (DESIGN.md section 1:
  float32 within 1e-6 of float64 at 10,000,000 rows, 1e-5 near seed 000's
  optimum; measured ~5e-8, the rounding of dW to float32) at twice the
  vector width. The lanes kernel (``_lanes_rows``, LANES_MIN_OUTPUTS or more outputs) holds 8
  outputs per float64 vector (``kernels.simd``) and is float64 throughout; so is the one-output wide
  kernel (``_wide_rows``, one output and more than _MAX_FIXED_FEATURES features: 8 rows per float64
  vector of residuals). The other kernels accumulate everything in float64.
* Small problems (``n_samples * n_features * n_outputs < PARALLEL_MIN_WORK``)
  walk the same chunks in a plain loop: a parallel-region launch costs ~2 us on
  the omp/tbb threading layers but ~100 us on workqueue, more than a whole
  5000x5 step. The chunking is the same, so the result is too.

Kernels are private (``_name``) and write into preallocated outputs; the
public wrappers at the bottom check shapes and dtypes and allocate scratch.
Numba freezes module globals at compile time, so the tunables below are passed
to the kernels as arguments: tests patch them small to exercise many chunks.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.cpython.unsafe.tuple import tuple_setitem
from numba.extending import intrinsic, overload, register_jitable

from . import layout
from .simd import LANES as _LANES
from .simd import _add as _vadd
from .simd import _add16 as _vadd16
from .simd import _fma as _vfma
from .simd import _fma16 as _vfma16
from .simd import _lane as _vlane
from .simd import _load as _vload
from .simd import _load16 as _vload16
from .simd import _load_upto as _vload_upto
from .simd import _load_wide as _vload_wide
from .simd import _mul as _vmul
from .simd import _mul16 as _vmul16
from .simd import _splat as _vsplat
from .simd import _splat16 as _vsplat16
from .simd import _store as _vstore
from .simd import _sub as _vsub
from .simd import _transpose_sum as _vtranspose_sum
from .simd import _widen_high as _vwiden_high
from .simd import _widen_low as _vwiden_low
from .simd import _zeros as _vzeros

__all__ = [
    "CHUNK_ROWS",
    "MAX_CHUNKS",
    "PARALLEL_MIN_WORK",
    "LANES",
    "TILED",
    "WIDE",
    "Workspace",
    "chunking",
    "gd",
    "kernel_variant",
    "launch_threads",
    "loss",
    "loss_grad",
    "parallel_pass",
    "predict",
    "threading_layer",
    "transposed_max_rows",
    "use_transposed",
]

# The chunk layout and loop choice (numba-free, shared with the ahead-of-time compiled loop, kernels.aot_gd).
# Tests patch CHUNK_ROWS, MAX_CHUNKS and PARALLEL_MIN_WORK here: the wrappers below read this module's values.
CHUNK_ROWS = layout.CHUNK_ROWS
MAX_CHUNKS = layout.MAX_CHUNKS
PARALLEL_MIN_WORK = layout.PARALLEL_MIN_WORK

# "reassoc" lets LLVM vectorise the feature reductions; "contract" allows FMA.
# Not "nnan"/"ninf" (or fastmath=True): they let LLVM delete NaN checks.
_FASTMATH = {"reassoc", "contract"}
_SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: A loss this many times the fit's first loss is divergence: training stops long before overflow.
EXPLOSION_FACTOR = 1e10
# Compile-time constants of the kernels (not patched by tests; see benchmarks/README.md for how they were chosen).
_MAX_FIXED_FEATURES = layout.MAX_FIXED_FEATURES
#: The blocked kernel converts this many elements of X to float64 at a time (16 KiB: stays in L1).
_BLOCK_ELEMENTS = 2048
#: The blocked kernel prefetches X only when X is larger than this (it then streams from memory;
#: smaller data sits in the last-level cache, where the prefetch instructions only cost time).
_PREFETCH_MIN_BYTES = 64 << 20
#: The tiled kernel's float32 partial gradient sums cover this many rows, then are added into float64
#: (the accuracy contract: short float32 partial sums, benchmarks/README.md item 27).
_TILE_ROWS = 32
#: The tiled kernel prefetches X this many bytes ahead of the 4 rows it computes (item 30).
_PREFETCH_AHEAD_BYTES = 8192
#: ... when X is larger than this: half the 32 MiB last-level cache that other processes share
#: (one thread, 100,000x32: float64, 24 MiB, 0.81 ms prefetched against 1.48; float32, 12 MiB,
#: 0.65 against 0.55 ms: from the cache the prefetches only cost).
_TILED_PREFETCH_MIN_BYTES = 16 << 20
#: ``kernel_variant``'s value for the tiled kernel (``_tiled_rows``): by its type, a tuple of one integer.
TILED = (0,)
#: ``kernel_variant``'s value for the one-output wide kernel (``_wide_rows``): by its type, a tuple of two integers.
WIDE = (0, 0)
#: ``kernel_variant``'s value for the lanes kernel (``_lanes_rows``, several outputs): a tuple of one boolean.
LANES = (True,)
#: The lanes kernel's register tile: this many rows, each one 8-lane vector of outputs (8 independent FMA chains:
#: 2 FMA pipes x 4 cycles of latency).
_LANE_TILE_ROWS = 8
#: Fewest outputs for which kernel_variant picks the lanes kernel: with 4 or fewer, half its 8 lanes idle, the
#: tiled kernel is faster (64x4 float32, ns per element in L2: 0.35 against 0.41; 64x5: 0.48 against 0.41).
LANES_MIN_OUTPUTS = 5


def chunking(n_samples: int, chunk_rows: int | None = None, max_chunks: int | None = None) -> tuple[int, int]:
    """Return ``(rows_per_chunk, n_chunks)`` for ``n_samples`` rows (``layout.chunking`` with this module's
    tunables): depends on n_samples and the tunables only, never on the thread count."""
    return layout.chunking(n_samples, CHUNK_ROWS if chunk_rows is None else chunk_rows,
                           MAX_CHUNKS if max_chunks is None else max_chunks)


def launch_threads() -> None:
    """Start Numba's thread pool.

    A parallel kernel called from Python starts it; one called from other
    compiled code (a training loop) does not, and then crashes (segfault) if
    the pool was never started in this process. Call this before such loops.
    Once per process (by pid: a forked child starts its own): the check costs
    ~0.6 us, a tenth of a small problem's whole epoch.
    """
    global _threads_started_in
    pid = os.getpid()
    if _threads_started_in != pid:
        numba.get_num_threads()
        _threads_started_in = pid


_threads_started_in = -1


def threading_layer() -> str:
    """Name of the Numba threading layer in use (runs a tiny parallel kernel if none ran yet)."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        _predict(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1), np.zeros((1, 1)), True, 1, 1)
        return numba.threading_layer()


# --------------------------------------------------------------------------- kernels


@njit(cache=True, fastmath=_FASTMATH)
def _predict_rows(X, W, b, out, start, stop):
    n_outputs, n_features = W.shape
    for i in range(start, stop):
        for o in range(n_outputs):
            acc = np.float64(b[o])
            for f in range(n_features):
                acc += np.float64(X[i, f]) * np.float64(W[o, f])
            out[i, o] = acc


@njit(cache=True, fastmath=_FASTMATH)
def _loss_rows(X, Y, W, b, start, stop):
    n_outputs, n_features = W.shape
    total = 0.0
    for i in range(start, stop):
        for o in range(n_outputs):
            r = np.float64(b[o]) - np.float64(Y[i, o])
            for f in range(n_features):
                r += np.float64(X[i, f]) * np.float64(W[o, f])
            total += r * r
    return total


def _loss_grad_rows(X, Y, W, b, start, stop, residual, dW_part, db_part, variant):
    """Sum of squared residuals of rows [start, stop); R.T @ X and R.sum(0) into the parts (compiled code only).

    ``variant`` (``kernel_variant``) picks the kernel by its *type*, at compile time, so a
    compiled caller reaches only its own variant's kernel: a tuple of n_features float64
    zeros (one output, C-contiguous X and Y) the kernel specialised on n_features,
    ``LANES`` (a boolean tuple) the lanes kernel (several outputs, C-contiguous X and Y),
    ``WIDE`` (two integers) the one-output wide kernel (C-contiguous X and Y),
    ``TILED`` (one integer) the tiled kernel (C-contiguous X and Y), ``()`` the
    blocked kernel (any layout).
    ``residual`` is float64 scratch: of ``_scratch_size(n_features, n_outputs)`` elements
    the blocked and tiled kernels use it, smaller they allocate their own (any length works).
    """
    raise NotImplementedError("compiled code only")


@overload(_loss_grad_rows)
def _loss_grad_rows_overload(X, Y, W, b, start, stop, residual, dW_part, db_part, variant):
    contiguous = X.layout == "C" and Y.layout == "C"
    specialised = isinstance(variant, types.UniTuple) and variant.count > 0 and isinstance(variant.dtype, types.Float)
    if specialised and contiguous:
        def specialised_rows(X, Y, W, b, start, stop, residual, dW_part, db_part, variant):
            return _fixed_rows(X.reshape(-1), Y.reshape(-1), W, b, start, stop, dW_part, db_part, variant)
        return specialised_rows
    lanes = isinstance(variant, types.UniTuple) and isinstance(variant.dtype, types.Boolean)
    if lanes and contiguous:
        def lanes_rows(X, Y, W, b, start, stop, residual, dW_part, db_part, variant):
            return _lanes_rows(X, Y, W, b, start, stop, dW_part, db_part)
        return lanes_rows
    integers = isinstance(variant, types.UniTuple) and isinstance(variant.dtype, types.Integer)
    if integers and variant.count == 2 and contiguous:
        def wide_rows(X, Y, W, b, start, stop, residual, dW_part, db_part, variant):
            return _wide_rows(X, Y, W, b, start, stop, dW_part, db_part)
        return wide_rows
    tiled = integers and variant.count == 1
    if tiled and contiguous:
        def tiled_rows(X, Y, W, b, start, stop, residual, dW_part, db_part, variant):
            return _tiled_rows(X, Y, W, b, start, stop, residual, dW_part, db_part)
        return tiled_rows

    def blocked_rows(X, Y, W, b, start, stop, residual, dW_part, db_part, variant):
        return _blocked_rows(X, Y, W, b, start, stop, residual, dW_part, db_part)
    return blocked_rows


def _flat(a):
    """Flat view of a C-contiguous array; an empty array for any other layout (compiled code only)."""
    raise NotImplementedError("compiled code only")


@overload(_flat)
def _flat_overload(a):
    # Decided on the array type at compile time: reshape(-1) needs the C layout.
    if a.layout == "C":
        return lambda a: a.reshape(-1)
    return lambda a: np.empty(0, a.dtype)


def _prefetch_into(locality):
    """The typer of a prefetch intrinsic with LLVM's ``locality`` (3: keep in L1, 2: L2, ...)."""

    def typer(typingctx, array, index):
        if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32])
            prefetch = builder.module.declare_intrinsic("llvm.prefetch", [address.type], fnty)
            builder.call(prefetch, [address, i32(0), i32(locality), i32(1)])  # read, locality, data
            return context.get_dummy_value()

        return types.void(array, index), codegen

    typer.__name__ = f"_prefetch_locality{locality}"
    return typer


#: ``_prefetch(array, index)``: hint the CPU to fetch the cache line of ``array.flat[index]`` into L1
#: (llvm.prefetch: never faults); ``_prefetch_l2`` the same with locality 2 (prefetcht1: into L2).
_prefetch = intrinsic(_prefetch_into(3))
_prefetch_l2 = intrinsic(_prefetch_into(2))


# Plain Python where Python calls them (Workspace), inlined where compiled code does: the same rule, and
# no compiled-function call (a cache load, or a compile) for Python's sake.
@register_jitable
def _block_rows(n_features):
    """Rows per block of the blocked kernel: a multiple of 4, _BLOCK_ELEMENTS elements or fewer (4 at least)."""
    return max(4, min(64, _BLOCK_ELEMENTS // n_features) // 4 * 4)


@register_jitable
def _scratch_size(n_features, n_outputs):
    """float64 elements of the blocked kernel's scratch: a block of X, the weights and the block's residuals."""
    rows = _block_rows(n_features)
    return rows * n_features + n_outputs * n_features + rows * n_outputs


@njit(cache=True, fastmath=_FASTMATH)
def _blocked_rows(X, Y, W, b, start, stop, scratch, dW_part, db_part):
    """_loss_grad_rows for any shape and layout, a block of rows at a time.

    Each block of X is converted to float64 once (one flat loop when X is C-contiguous);
    the residuals take 4 rows per pass over a weight row and the gradient adds 4 rows'
    terms per load and store of dW_part, with long vectorised loops over the features.
    While a block computes, the next block of a large C-contiguous X is prefetched, a few
    lines per 4 rows: the hardware prefetchers stall at the pauses between blocks, and on
    its own one core streams X in about the time the arithmetic takes.
    """
    n_outputs, n_features = W.shape
    rows = _block_rows(n_features)
    need = _scratch_size(n_features, n_outputs)
    buf = scratch[:need] if scratch.shape[0] >= need else np.empty(need)
    xb = buf[:rows * n_features]
    w64 = buf[rows * n_features:(rows + n_outputs) * n_features]
    rb = buf[(rows + n_outputs) * n_features:need]
    for o in range(n_outputs):
        db_part[o] = 0.0
        for f in range(n_features):
            dW_part[o, f] = 0.0
            w64[o * n_features + f] = W[o, f]
    x = _flat(X)
    line = 64 // x.itemsize  # elements per cache line
    # Prefetch bound: 0 (off) unless X is C-contiguous and streams from memory.
    reach = x.shape[0] if x.shape[0] * x.itemsize > _PREFETCH_MIN_BYTES else 0
    total = 0.0
    for i0 in range(start, stop, rows):
        m = min(rows, stop - i0)
        ahead = (i0 + rows) * n_features  # the next block (prefetched: first half now, second half below)
        if x.shape[0] > 0:
            src = x[i0 * n_features:(i0 + m) * n_features]
            for j in range(m * n_features):
                xb[j] = src[j]
        else:
            for k in range(m):
                row = X[i0 + k]
                dst = xb[k * n_features:(k + 1) * n_features]
                for f in range(n_features):
                    dst[f] = row[f]
        for o in range(n_outputs):
            wo = w64[o * n_features:(o + 1) * n_features]
            bo = np.float64(b[o])
            k = 0
            while k + 4 <= m:
                if o == 0:
                    for j in range(ahead + k // 2 * n_features, min(ahead + (k // 2 + 2) * n_features, reach),
                                   line):
                        _prefetch(x, j)
                x0 = xb[k * n_features:(k + 1) * n_features]
                x1 = xb[(k + 1) * n_features:(k + 2) * n_features]
                x2 = xb[(k + 2) * n_features:(k + 3) * n_features]
                x3 = xb[(k + 3) * n_features:(k + 4) * n_features]
                a0 = bo - np.float64(Y[i0 + k, o])
                a1 = bo - np.float64(Y[i0 + k + 1, o])
                a2 = bo - np.float64(Y[i0 + k + 2, o])
                a3 = bo - np.float64(Y[i0 + k + 3, o])
                for f in range(n_features):
                    wf = wo[f]
                    a0 += x0[f] * wf
                    a1 += x1[f] * wf
                    a2 += x2[f] * wf
                    a3 += x3[f] * wf
                rb[k * n_outputs + o] = a0
                rb[(k + 1) * n_outputs + o] = a1
                rb[(k + 2) * n_outputs + o] = a2
                rb[(k + 3) * n_outputs + o] = a3
                k += 4
            while k < m:
                x0 = xb[k * n_features:(k + 1) * n_features]
                a0 = bo - np.float64(Y[i0 + k, o])
                for f in range(n_features):
                    a0 += x0[f] * wo[f]
                rb[k * n_outputs + o] = a0
                k += 1
            squares = 0.0
            sums = 0.0
            for k in range(m):
                r = rb[k * n_outputs + o]
                squares += r * r
                sums += r
            total += squares
            db_part[o] += sums
            g = dW_part[o]
            k = 0
            while k + 4 <= m:
                if o == 0:
                    second = ahead + rows // 2 * n_features
                    for j in range(second + k // 2 * n_features,
                                   min(second + (k // 2 + 2) * n_features, reach), line):
                        _prefetch(x, j)
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
    return total


def _cast_like(value, array):
    """``value`` converted to ``array``'s dtype (compiled code only)."""
    raise NotImplementedError("compiled code only")


@overload(_cast_like)
def _cast_like_overload(value, array):
    dtype = array.dtype
    return lambda value, array: dtype(value)


@njit(cache=True, fastmath=_FASTMATH)
def _tiled_rows(X, Y, W, b, start, stop, scratch, dW_part, db_part):
    """_tiled_rows_with, prefetching when X streams from memory (larger than _TILED_PREFETCH_MIN_BYTES).

    Decided here, at run time, rather than by a variant chosen in Python, so that a fit's warm-up on
    a few rows (``linreg.compilation``) compiles what the real fit runs; and in one copy of the loops:
    a second copy without the prefetch checks was ~15% faster on cached data at 32 features (5% at
    128) but doubled the kernel's compile time (benchmarks/README.md item 30).
    """
    prefetch = X.size * X.itemsize > _TILED_PREFETCH_MIN_BYTES
    return _tiled_rows_with(X, Y, W, b, start, stop, scratch, dW_part, db_part, prefetch)


@njit(inline="always", fastmath=_FASTMATH)
def _tiled_rows_with(X, Y, W, b, start, stop, scratch, dW_part, db_part, prefetch):
    """_loss_grad_rows for C-contiguous X and Y, any n_features and n_outputs, float32 or float64 (issue 15).

    Per block of _TILE_ROWS rows:

    * residuals R = X W^T + b - Y in float64 (exact products of the float32 values, float64
      sums: the residual is where cancellation happens near the optimum), in register tiles
      of 4 rows x 2 outputs (8 independent accumulators, each element of X loaded and
      converted once per 2 outputs), each float32 element converted as it is used: no
      float64 copy of the block;
    * loss and db from the float64 residuals;
    * the gradient R^T X in X's dtype: the residual rounded to it, products and a partial
      sum over the block's rows in float32 (16 lanes per vector, no conversion), 4 rows per
      load and store of the partial row; the partial is then added into the float64
      ``dW_part``. A block's rows are in L1/L2 for this second pass.

    With ``prefetch``, while the first output pair computes, X is prefetched
    _PREFETCH_AHEAD_BYTES ahead, the lines of 4 rows per 4 rows (inlined: the benchmark
    variants call it with a constant). ``scratch``: float64, ``_scratch_size`` long or more (the weights in
    float64 and the block's residuals), else allocated here.
    """
    n_outputs, n_features = W.shape
    rows = _TILE_ROWS
    need = n_outputs * n_features + rows * n_outputs
    buf = scratch[:need] if scratch.shape[0] >= need else np.empty(need)
    w64 = buf[:n_outputs * n_features]
    rb = buf[n_outputs * n_features:need]
    for o in range(n_outputs):
        db_part[o] = 0.0
        for f in range(n_features):
            dW_part[o, f] = 0.0
            w64[o * n_features + f] = W[o, f]
    x = X.reshape(-1)
    partial = np.zeros(n_outputs * n_features, X.dtype)
    line = 64 // x.itemsize  # elements per cache line
    ahead = _PREFETCH_AHEAD_BYTES // x.itemsize
    reach = x.shape[0] if prefetch else 0  # 0: no prefetch
    pairs = n_outputs // 2
    total = 0.0
    for i0 in range(start, stop, rows):
        m = min(rows, stop - i0)
        base = i0 * n_features
        for p in range(pairs):
            o = 2 * p
            wa = w64[o * n_features:(o + 1) * n_features]
            wb = w64[(o + 1) * n_features:(o + 2) * n_features]
            ba = np.float64(b[o])
            bb = np.float64(b[o + 1])
            k = 0
            while k + 4 <= m:
                if prefetch and p == 0:
                    first = base + k * n_features + ahead
                    for j in range(first, min(first + 4 * n_features, reach), line):
                        _prefetch(x, j)
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                x1 = x[base + (k + 1) * n_features:base + (k + 2) * n_features]
                x2 = x[base + (k + 2) * n_features:base + (k + 3) * n_features]
                x3 = x[base + (k + 3) * n_features:base + (k + 4) * n_features]
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
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                a0 = ba - np.float64(Y[i0 + k, o])
                c0 = bb - np.float64(Y[i0 + k, o + 1])
                for f in range(n_features):
                    v0 = np.float64(x0[f])
                    a0 += v0 * wa[f]
                    c0 += v0 * wb[f]
                rb[k * n_outputs + o] = a0
                rb[k * n_outputs + o + 1] = c0
                k += 1
        if n_outputs % 2:  # the last, unpaired output: 4 rows x 1 output tiles
            o = n_outputs - 1
            wo = w64[o * n_features:(o + 1) * n_features]
            bo = np.float64(b[o])
            k = 0
            while k + 4 <= m:
                if prefetch and o == 0:
                    first = base + k * n_features + ahead
                    for j in range(first, min(first + 4 * n_features, reach), line):
                        _prefetch(x, j)
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
            total += squares
            db_part[o] += sums
        for p in range(pairs):
            o = 2 * p
            ga = partial[o * n_features:(o + 1) * n_features]
            gb = partial[(o + 1) * n_features:(o + 2) * n_features]
            k = 0
            while k + 4 <= m:
                r0 = _cast_like(rb[k * n_outputs + o], x)
                r1 = _cast_like(rb[(k + 1) * n_outputs + o], x)
                r2 = _cast_like(rb[(k + 2) * n_outputs + o], x)
                r3 = _cast_like(rb[(k + 3) * n_outputs + o], x)
                s0 = _cast_like(rb[k * n_outputs + o + 1], x)
                s1 = _cast_like(rb[(k + 1) * n_outputs + o + 1], x)
                s2 = _cast_like(rb[(k + 2) * n_outputs + o + 1], x)
                s3 = _cast_like(rb[(k + 3) * n_outputs + o + 1], x)
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                x1 = x[base + (k + 1) * n_features:base + (k + 2) * n_features]
                x2 = x[base + (k + 2) * n_features:base + (k + 3) * n_features]
                x3 = x[base + (k + 3) * n_features:base + (k + 4) * n_features]
                for f in range(n_features):
                    ga[f] += (r0 * x0[f] + r1 * x1[f]) + (r2 * x2[f] + r3 * x3[f])
                    gb[f] += (s0 * x0[f] + s1 * x1[f]) + (s2 * x2[f] + s3 * x3[f])
                k += 4
            while k < m:
                r0 = _cast_like(rb[k * n_outputs + o], x)
                s0 = _cast_like(rb[k * n_outputs + o + 1], x)
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                for f in range(n_features):
                    ga[f] += r0 * x0[f]
                    gb[f] += s0 * x0[f]
                k += 1
        if n_outputs % 2:
            o = n_outputs - 1
            g = partial[o * n_features:(o + 1) * n_features]
            k = 0
            while k + 4 <= m:
                r0 = _cast_like(rb[k * n_outputs + o], x)
                r1 = _cast_like(rb[(k + 1) * n_outputs + o], x)
                r2 = _cast_like(rb[(k + 2) * n_outputs + o], x)
                r3 = _cast_like(rb[(k + 3) * n_outputs + o], x)
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                x1 = x[base + (k + 1) * n_features:base + (k + 2) * n_features]
                x2 = x[base + (k + 2) * n_features:base + (k + 3) * n_features]
                x3 = x[base + (k + 3) * n_features:base + (k + 4) * n_features]
                for f in range(n_features):
                    g[f] += (r0 * x0[f] + r1 * x1[f]) + (r2 * x2[f] + r3 * x3[f])
                k += 4
            while k < m:
                r0 = _cast_like(rb[k * n_outputs + o], x)
                x0 = x[base + k * n_features:base + (k + 1) * n_features]
                for f in range(n_features):
                    g[f] += r0 * x0[f]
                k += 1
        # Flush: the block's partial sums into float64, one output row at a time (no index division).
        for o in range(n_outputs):
            g = partial[o * n_features:(o + 1) * n_features]
            d = dW_part[o]
            for f in range(n_features):
                d[f] += g[f]
                g[f] = 0
    return total


def _sixteens(x, n_features):
    """The features ``_backward16`` covers: n_features // 16 * 16 for float32 ``x``, 0 for float64
    (compiled code only; decided on the dtype at compile time)."""
    raise NotImplementedError("compiled code only")


@overload(_sixteens)
def _sixteens_overload(x, n_features):
    if x.dtype == types.float32:
        return lambda x, n_features: n_features // 16 * 16
    return lambda x, n_features: 0


def _backward16(x, base, n_features, stop, g, s0, s1, s2, s3, s4, s5, s6, s7):
    """The wide kernel's backward over features [0, stop) of a group of 8 float32 rows at ``x[base:]``:
    ``g[f:f + 16] += sum_t s_t * x[t, f:f + 16]`` with the residuals s_t rounded to float32, float32 products
    and a float32 sum over the 8 rows (16 lanes), added into float64 ``g`` (compiled code only; nothing
    for float64 x, whose ``_sixteens`` is 0)."""
    raise NotImplementedError("compiled code only")


@overload(_backward16)
def _backward16_overload(x, base, n_features, stop, g, s0, s1, s2, s3, s4, s5, s6, s7):
    if x.dtype != types.float32:
        return lambda x, base, n_features, stop, g, s0, s1, s2, s3, s4, s5, s6, s7: None

    def backward16(x, base, n_features, stop, g, s0, s1, s2, s3, s4, s5, s6, s7):
        t0 = _vsplat16(s0)
        t1 = _vsplat16(s1)
        t2 = _vsplat16(s2)
        t3 = _vsplat16(s3)
        t4 = _vsplat16(s4)
        t5 = _vsplat16(s5)
        t6 = _vsplat16(s6)
        t7 = _vsplat16(s7)
        for f in range(0, stop, 16):
            even = _vmul16(_vload16(x, base + f), t0)
            odd = _vmul16(_vload16(x, base + n_features + f), t1)
            even = _vfma16(_vload16(x, base + 2 * n_features + f), t2, even)
            odd = _vfma16(_vload16(x, base + 3 * n_features + f), t3, odd)
            even = _vfma16(_vload16(x, base + 4 * n_features + f), t4, even)
            odd = _vfma16(_vload16(x, base + 5 * n_features + f), t5, odd)
            even = _vfma16(_vload16(x, base + 6 * n_features + f), t6, even)
            odd = _vfma16(_vload16(x, base + 7 * n_features + f), t7, odd)
            part = _vadd16(even, odd)
            _vstore(g, f, _vadd(_vload(g, f), _vwiden_low(part)))
            _vstore(g, f + 8, _vadd(_vload(g, f + 8), _vwiden_high(part)))
    return backward16



@njit(cache=True, fastmath=_FASTMATH)
def _wide_rows(X, Y, W, b, start, stop, dW_part, db_part):
    """_loss_grad_rows for C-contiguous X and Y with one output (picked above _MAX_FIXED_FEATURES features):
    ``_wide_rows_with``, prefetching when X streams from memory (larger than _TILED_PREFETCH_MIN_BYTES).

    Two inlined copies of the loops, the choice at run time per chunk (as ``_tiled_rows``: a warm-up fit
    on a few rows compiles what the real fit runs). Whole passes, 2 threads (benchmarks/README.md item 48):
    the prefetch spread over the forward loop, 8 KiB ahead, took 2,000,000x32 float32 from 12.9 to 30.3 GB/s
    and 1,000,000x128 from 17.8 to 29.7 in one run; on cached data its instructions cost (32 float32
    features, 1 thread, in L2: 0.124 against 0.096 ns per element), hence the copy without.
    """
    if X.size * X.itemsize > _TILED_PREFETCH_MIN_BYTES:
        return _wide_rows_with(X, Y, W, b, start, stop, dW_part, db_part, _PREFETCH_AHEAD_BYTES, True, False)
    return _wide_rows_with(X, Y, W, b, start, stop, dW_part, db_part, 0, False, False)


@njit(inline="always", fastmath=_FASTMATH)
def _wide_rows_with(X, Y, W, b, start, stop, dW_part, db_part, ahead_bytes, spread, float32_backward,
                    into_l2=False):
    """One output, one pass: 8 rows at a time, forward and backward over the same rows back to back.

    Per group of 8 rows (``kernels.simd`` 8-lane float64 vectors, float32 elements widened as loaded):

    * forward: one accumulator vector per row, ``acc[t] += x[t, f:f + 8] * w[f:f + 8]`` (the feature
      tail by a masked load), then the 8 horizontal sums at once (``_transpose_sum``), so the 8 residuals
      ``R = X w + b - y`` are one float64 vector (cancellation near the optimum: item 27), and so are the
      loss and db partials;
    * backward, while the group's rows are in L1: ``g[f:f + 8] += sum_t R[t] * x[t, f:f + 8]`` in float64,
      two chains of 4 rows.

    X streams once, with no second pass over a block (the tiled kernel's forward block, then backward
    block) and no per-block flush. float64 throughout: float32 data within ~1e-7 of a float64 reference
    (the rounding of the float32 results), float64 within 1e-12; each lane's sums in a fixed order:
    bit-identical for any thread count. ``ahead_bytes`` > 0 prefetches X that far ahead, the lines of
    each group at its start, or with ``spread`` a share of them per step of the forward loop (what
    ``_wide_rows`` does for large X; constants, so each inlined copy keeps only its own code); ``into_l2``:
    spread prefetches into L2 only (benchmark variants). Rows after
    the last whole group of 8 run one at a time.
    """
    n_features = W.shape[1]
    lanes = _LANES
    full = n_features // lanes * lanes
    rest = n_features - full
    padded = full + (lanes if rest else 0)
    w = np.zeros(padded)
    g = np.zeros(padded)
    for f in range(n_features):
        w[f] = W[0, f]
    x = X.reshape(-1)
    y = Y.reshape(-1)
    bias = np.float64(b[0])
    bias8 = _vsplat(bias)
    squares = _vzeros()
    sums = _vzeros()
    line = 64 // x.itemsize
    ahead = ahead_bytes // x.itemsize
    reach = x.shape[0] if ahead_bytes > 0 else 0
    sixteens = _sixteens(x, n_features) if float32_backward else 0  # features of the float32 backward
    i = start
    while i + lanes <= stop:
        base = i * n_features
        first = base + ahead
        if ahead_bytes > 0 and not spread:
            for j in range(first, min(first + lanes * n_features, reach), line):
                _prefetch(x, j)
        a0 = _vzeros()
        a1 = _vzeros()
        a2 = _vzeros()
        a3 = _vzeros()
        a4 = _vzeros()
        a5 = _vzeros()
        a6 = _vzeros()
        a7 = _vzeros()
        for f in range(0, full, lanes):
            if ahead_bytes > 0 and spread:  # this step's share of the group's lines, 8 x 8 elements
                at = first + f * lanes
                for j in range(at, min(at + lanes * lanes, reach), line):
                    if into_l2:
                        _prefetch_l2(x, j)
                    else:
                        _prefetch(x, j)
            wf = _vload(w, f)
            a0 = _vfma(_vload_wide(x, base + f), wf, a0)
            a1 = _vfma(_vload_wide(x, base + n_features + f), wf, a1)
            a2 = _vfma(_vload_wide(x, base + 2 * n_features + f), wf, a2)
            a3 = _vfma(_vload_wide(x, base + 3 * n_features + f), wf, a3)
            a4 = _vfma(_vload_wide(x, base + 4 * n_features + f), wf, a4)
            a5 = _vfma(_vload_wide(x, base + 5 * n_features + f), wf, a5)
            a6 = _vfma(_vload_wide(x, base + 6 * n_features + f), wf, a6)
            a7 = _vfma(_vload_wide(x, base + 7 * n_features + f), wf, a7)
        if rest:
            if ahead_bytes > 0 and spread:
                at = first + full * lanes
                for j in range(at, min(first + lanes * n_features, reach), line):
                    _prefetch(x, j)
            wf = _vload(w, full)
            a0 = _vfma(_vload_upto(x, base + full, rest), wf, a0)
            a1 = _vfma(_vload_upto(x, base + n_features + full, rest), wf, a1)
            a2 = _vfma(_vload_upto(x, base + 2 * n_features + full, rest), wf, a2)
            a3 = _vfma(_vload_upto(x, base + 3 * n_features + full, rest), wf, a3)
            a4 = _vfma(_vload_upto(x, base + 4 * n_features + full, rest), wf, a4)
            a5 = _vfma(_vload_upto(x, base + 5 * n_features + full, rest), wf, a5)
            a6 = _vfma(_vload_upto(x, base + 6 * n_features + full, rest), wf, a6)
            a7 = _vfma(_vload_upto(x, base + 7 * n_features + full, rest), wf, a7)
        r = _vsub(_vadd(_vtranspose_sum(a0, a1, a2, a3, a4, a5, a6, a7), bias8), _vload_wide(y, i))
        squares = _vfma(r, r, squares)
        sums = _vadd(sums, r)
        s0 = _vlane(r, 0)
        s1 = _vlane(r, 1)
        s2 = _vlane(r, 2)
        s3 = _vlane(r, 3)
        s4 = _vlane(r, 4)
        s5 = _vlane(r, 5)
        s6 = _vlane(r, 6)
        s7 = _vlane(r, 7)
        if float32_backward:
            _backward16(x, base, n_features, sixteens, g, s0, s1, s2, s3, s4, s5, s6, s7)
        r0 = _vsplat(s0)
        r1 = _vsplat(s1)
        r2 = _vsplat(s2)
        r3 = _vsplat(s3)
        r4 = _vsplat(s4)
        r5 = _vsplat(s5)
        r6 = _vsplat(s6)
        r7 = _vsplat(s7)
        for f in range(sixteens, full, lanes):
            even = _vfma(_vload_wide(x, base + f), r0, _vload(g, f))
            odd = _vmul(_vload_wide(x, base + n_features + f), r1)
            even = _vfma(_vload_wide(x, base + 2 * n_features + f), r2, even)
            odd = _vfma(_vload_wide(x, base + 3 * n_features + f), r3, odd)
            even = _vfma(_vload_wide(x, base + 4 * n_features + f), r4, even)
            odd = _vfma(_vload_wide(x, base + 5 * n_features + f), r5, odd)
            even = _vfma(_vload_wide(x, base + 6 * n_features + f), r6, even)
            odd = _vfma(_vload_wide(x, base + 7 * n_features + f), r7, odd)
            _vstore(g, f, _vadd(even, odd))
        if rest:
            even = _vfma(_vload_upto(x, base + full, rest), r0, _vload(g, full))
            odd = _vmul(_vload_upto(x, base + n_features + full, rest), r1)
            even = _vfma(_vload_upto(x, base + 2 * n_features + full, rest), r2, even)
            odd = _vfma(_vload_upto(x, base + 3 * n_features + full, rest), r3, odd)
            even = _vfma(_vload_upto(x, base + 4 * n_features + full, rest), r4, even)
            odd = _vfma(_vload_upto(x, base + 5 * n_features + full, rest), r5, odd)
            even = _vfma(_vload_upto(x, base + 6 * n_features + full, rest), r6, even)
            odd = _vfma(_vload_upto(x, base + 7 * n_features + full, rest), r7, odd)
            _vstore(g, full, _vadd(even, odd))
        i += lanes
    lane_squares = np.empty(lanes)
    lane_sums = np.empty(lanes)
    _vstore(lane_squares, 0, squares)
    _vstore(lane_sums, 0, sums)
    total = 0.0
    gb = 0.0
    for lane in range(lanes):
        total += lane_squares[lane]
        gb += lane_sums[lane]
    while i < stop:  # the last rows, fewer than a group
        row = x[i * n_features:(i + 1) * n_features]
        r_i = bias - np.float64(y[i])
        for f in range(n_features):
            r_i += np.float64(row[f]) * w[f]
        total += r_i * r_i
        gb += r_i
        for f in range(n_features):
            g[f] += r_i * np.float64(row[f])
        i += 1
    for f in range(n_features):
        dW_part[0, f] = g[f]
    db_part[0] = gb
    return total


@njit(inline="always", fastmath=_FASTMATH)
def _lane_residual(acc, bias, y, at, count, squares, sums, rb, to):
    """One row's residual vector ``acc + b - Y[row, group]`` (the targets y[at:at + count], idle lanes 0),
    stored at rb[to:to + 8]; returns the running (squares, sums) vectors with it added. All in vectors: scalar
    stores read back as a vector stall the store-to-load forwarding (item 46)."""
    r = _vsub(_vadd(acc, bias), _vload_upto(y, at, count))
    _vstore(rb, to, r)
    return _vfma(r, r, squares), _vadd(sums, r)


@njit(cache=True, fastmath=_FASTMATH)
def _lanes_rows(X, Y, W, b, start, stop, dW_part, db_part):
    """_loss_grad_rows for C-contiguous X and Y with several outputs: the outputs in the vector lanes.

    The outputs are cut into groups of 8 (``kernels.simd``'s ``<8 x double>``; a last, partial
    group has zero weights in its idle lanes). Per tile of _LANE_TILE_ROWS rows, converted once to
    float64 (16 KiB or less for 256 features: stays in L1), and per group of outputs:

    * forward, a GEMM micro-kernel: one accumulator vector per row, ``acc[t] += x[t, f] * WT[f, :]``
      over the features, one fused multiply-add (with the element of X broadcast from memory) per
      element and group; no horizontal sums. The residual ``R[t, :] = acc[t] + b - Y[t, :]`` is
      float64 (cancellation near the optimum: item 27), so are the loss and db;
    * backward, an outer product: ``GT[f, :] += sum_t x[t, f] * R[t, :]``, the gradient's transpose
      (n_features x 8 per group) accumulated in float64 over the chunk, one FMA per element and group,
      two chains of 4 rows per feature; transposed into ``dW_part`` at the end.

    All float64: with float32 data the loss and gradients are within ~1e-7 of a float64 reference (the
    rounding of the float32 dW and db), with float64 data within 1e-12. Each lane's sums run in the order of
    the rows and features, whatever the threads: deterministic. Remaining rows (fewer than a tile) run
    one at a time.
    """
    n_outputs, n_features = W.shape
    lanes = _LANES
    tile = _LANE_TILE_ROWS
    n_groups = (n_outputs + lanes - 1) // lanes
    width = n_groups * lanes
    # WT: the weights transposed, per group: wt[(g * n_features + f) * lanes + l] = W[g * lanes + l, f].
    wt = np.zeros(n_groups * n_features * lanes)
    gt = np.zeros(n_groups * n_features * lanes)
    for o in range(n_outputs):
        g, lane = o // lanes, o % lanes
        for f in range(n_features):
            wt[(g * n_features + f) * lanes + lane] = W[o, f]
    b64 = np.zeros(width)
    for o in range(n_outputs):
        b64[o] = b[o]
    xb = np.empty(tile * n_features)
    rb = np.zeros(tile * width)  # the tile's residuals, row t's group g at (t * n_groups + g) * lanes
    x = X.reshape(-1)
    y = Y.reshape(-1)
    squares = _vzeros()
    sums = np.zeros(width)
    i = start
    while i < stop:
        m = min(tile, stop - i)
        # The tile in float64, in L1 (a copy for float64 data too: the loops below then index one plain
        # buffer, ~15% faster than a slice of X or a converted slice, benchmarks/README.md item 46).
        rows = x[i * n_features:(i + m) * n_features]
        for j in range(m * n_features):
            xb[j] = rows[j]
        if m == tile:
            for g in range(n_groups):
                a0 = _vzeros()
                a1 = _vzeros()
                a2 = _vzeros()
                a3 = _vzeros()
                a4 = _vzeros()
                a5 = _vzeros()
                a6 = _vzeros()
                a7 = _vzeros()
                for f in range(n_features):
                    w = _vload(wt, (g * n_features + f) * lanes)
                    a0 = _vfma(_vsplat(xb[f]), w, a0)
                    a1 = _vfma(_vsplat(xb[n_features + f]), w, a1)
                    a2 = _vfma(_vsplat(xb[2 * n_features + f]), w, a2)
                    a3 = _vfma(_vsplat(xb[3 * n_features + f]), w, a3)
                    a4 = _vfma(_vsplat(xb[4 * n_features + f]), w, a4)
                    a5 = _vfma(_vsplat(xb[5 * n_features + f]), w, a5)
                    a6 = _vfma(_vsplat(xb[6 * n_features + f]), w, a6)
                    a7 = _vfma(_vsplat(xb[7 * n_features + f]), w, a7)
                bias = _vload(b64, g * lanes)
                sum_g = _vload(sums, g * lanes)
                count = min(lanes, n_outputs - g * lanes)
                at = i * n_outputs + g * lanes
                squares, sum_g = _lane_residual(a0, bias, y, at, count, squares, sum_g, rb, g * lanes)
                squares, sum_g = _lane_residual(a1, bias, y, at + n_outputs, count, squares, sum_g, rb,
                                                (n_groups + g) * lanes)
                squares, sum_g = _lane_residual(a2, bias, y, at + 2 * n_outputs, count, squares, sum_g, rb,
                                                (2 * n_groups + g) * lanes)
                squares, sum_g = _lane_residual(a3, bias, y, at + 3 * n_outputs, count, squares, sum_g, rb,
                                                (3 * n_groups + g) * lanes)
                squares, sum_g = _lane_residual(a4, bias, y, at + 4 * n_outputs, count, squares, sum_g, rb,
                                                (4 * n_groups + g) * lanes)
                squares, sum_g = _lane_residual(a5, bias, y, at + 5 * n_outputs, count, squares, sum_g, rb,
                                                (5 * n_groups + g) * lanes)
                squares, sum_g = _lane_residual(a6, bias, y, at + 6 * n_outputs, count, squares, sum_g, rb,
                                                (6 * n_groups + g) * lanes)
                squares, sum_g = _lane_residual(a7, bias, y, at + 7 * n_outputs, count, squares, sum_g, rb,
                                                (7 * n_groups + g) * lanes)
                _vstore(sums, g * lanes, sum_g)
        else:
            for t in range(m):
                for g in range(n_groups):
                    wg = wt[g * n_features * lanes:(g + 1) * n_features * lanes]
                    a0 = _vzeros()
                    for f in range(n_features):
                        a0 = _vfma(_vsplat(xb[t * n_features + f]), _vload(wg, f * lanes), a0)
                    sum_g = _vload(sums, g * lanes)
                    squares, sum_g = _lane_residual(a0, _vload(b64, g * lanes), y,
                                                    (i + t) * n_outputs + g * lanes,
                                                    min(lanes, n_outputs - g * lanes), squares, sum_g, rb,
                                                    (t * n_groups + g) * lanes)
                    _vstore(sums, g * lanes, sum_g)
        for g in range(n_groups):
            gg = gt[g * n_features * lanes:(g + 1) * n_features * lanes]
            if m == tile:
                r0 = _vload(rb, g * lanes)
                r1 = _vload(rb, (n_groups + g) * lanes)
                r2 = _vload(rb, (2 * n_groups + g) * lanes)
                r3 = _vload(rb, (3 * n_groups + g) * lanes)
                r4 = _vload(rb, (4 * n_groups + g) * lanes)
                r5 = _vload(rb, (5 * n_groups + g) * lanes)
                r6 = _vload(rb, (6 * n_groups + g) * lanes)
                r7 = _vload(rb, (7 * n_groups + g) * lanes)
                for f in range(n_features):
                    even = _vfma(_vsplat(xb[f]), r0, _vload(gt, (g * n_features + f) * lanes))
                    odd = _vfma(_vsplat(xb[n_features + f]), r1, _vzeros())
                    even = _vfma(_vsplat(xb[2 * n_features + f]), r2, even)
                    odd = _vfma(_vsplat(xb[3 * n_features + f]), r3, odd)
                    even = _vfma(_vsplat(xb[4 * n_features + f]), r4, even)
                    odd = _vfma(_vsplat(xb[5 * n_features + f]), r5, odd)
                    even = _vfma(_vsplat(xb[6 * n_features + f]), r6, even)
                    odd = _vfma(_vsplat(xb[7 * n_features + f]), r7, odd)
                    _vstore(gt, (g * n_features + f) * lanes, _vadd(even, odd))
            else:
                for t in range(m):
                    r0 = _vload(rb, (t * n_groups + g) * lanes)
                    for f in range(n_features):
                        _vstore(gg, f * lanes, _vfma(_vsplat(xb[t * n_features + f]), r0, _vload(gg, f * lanes)))
        i += m
    total = 0.0
    lane_squares = np.empty(lanes)
    _vstore(lane_squares, 0, squares)
    for lane in range(lanes):
        total += lane_squares[lane]
    for o in range(n_outputs):
        g, lane = o // lanes, o % lanes
        db_part[o] = sums[o]
        for f in range(n_features):
            dW_part[o, f] = gt[(g * n_features + f) * lanes + lane]
    return total


@njit(cache=True, fastmath=_FASTMATH)
def _fixed_rows(x, y, W, b, start, stop, dW_part, db_part, zeros):
    """_loss_grad_rows for one output and n_features = len(zeros), known at compile time.

    ``x``, ``y`` are flat views of C-contiguous X and Y. With the feature count a
    constant, LLVM unrolls the feature loops, keeps w and the gradient in registers
    (tuples) and vectorises across rows (de-interleaving each row's features).
    """
    n_features = len(zeros)
    w = zeros
    for f in range(n_features):
        w = tuple_setitem(w, f, np.float64(W[0, f]))
    g = zeros
    bias = np.float64(b[0])
    xs = x[start * n_features:stop * n_features]
    ys = y[start:stop]
    total = 0.0
    gb = 0.0
    for i in range(ys.shape[0]):
        r = bias - np.float64(ys[i])
        for f in range(n_features):
            r += np.float64(xs[i * n_features + f]) * w[f]
        total += r * r
        gb += r
        for f in range(n_features):
            g = tuple_setitem(g, f, g[f] + r * np.float64(xs[i * n_features + f]))
    for f in range(n_features):
        dW_part[0, f] = g[f]
    db_part[0] = gb
    return total


@njit(cache=True, fastmath=_FASTMATH)
def _transposed_rows(xt, yt, W, b, start, stop, dW_part, db_part, zeros):
    """_fixed_rows on a transposed float64 copy: feature f of row i at ``xt[f * n + i]``, n = len(yt).

    Contiguous columns need no de-interleaving shuffles and no float32 conversions.
    Unsigned indices spare LLVM Numba's negative-index wraparound, so loads stay vectors.
    """
    n_features = len(zeros)
    w = zeros
    for f in range(n_features):
        w = tuple_setitem(w, f, np.float64(W[0, f]))
    g = zeros
    bias = np.float64(b[0])
    n = np.uint64(yt.shape[0])
    lo = np.uint64(start)
    total = 0.0
    gb = 0.0
    for i in range(np.uint64(stop - start)):
        r = bias - yt[lo + i]
        for f in range(n_features):
            r += xt[np.uint64(f) * n + lo + i] * w[f]
        total += r * r
        gb += r
        for f in range(n_features):
            g = tuple_setitem(g, f, g[f] + r * xt[np.uint64(f) * n + lo + i])
    for f in range(n_features):
        dW_part[0, f] = g[f]
    db_part[0] = gb
    return total


@njit(cache=True)
def _combine(dW, db, dW_parts, db_parts, loss_parts, n_chunks, n_elements):
    """Serial combine of the chunks' partial sums in chunk order 0, 1, ...: the loss; dW and db scaled."""
    n_outputs, n_features = dW.shape
    grad_scale = 2.0 / n_elements
    total = 0.0
    for c in range(n_chunks):
        total += loss_parts[c]
    for o in range(n_outputs):
        acc = 0.0
        for c in range(n_chunks):
            acc += db_parts[c, o]
        db[o] = grad_scale * acc
        for f in range(n_features):
            acc = 0.0
            for c in range(n_chunks):
                acc += dW_parts[c, o, f]
            dW[o, f] = grad_scale * acc
    return total / n_elements


@njit(cache=True)
def _loss_grad_transposed(xt, yt, W, b, dW, db, chunk_rows, n_chunks, dW_parts, db_parts, loss_parts, zeros):
    """_loss_grad's serial path on the transposed copy made by _gd_epochs_transposed: same chunks, same combine."""
    n_samples = yt.shape[0]
    for c in range(n_chunks):
        loss_parts[c] = _transposed_rows(xt, yt, W, b, c * chunk_rows, min((c + 1) * chunk_rows, n_samples),
                                         dW_parts[c], db_parts[c], zeros)
    return _combine(dW, db, dW_parts, db_parts, loss_parts, n_chunks, n_samples * W.shape[0])


# The drivers below are compiled with parallel=True, but only the prange branch
# opens a parallel region; the serial branch is a plain loop over the same chunks.


@njit(parallel=True, cache=True)
def _predict(X, W, b, out, parallel, chunk_rows, n_chunks):
    n_samples = X.shape[0]
    if parallel:
        for c in prange(n_chunks):
            _predict_rows(X, W, b, out, c * chunk_rows, min((c + 1) * chunk_rows, n_samples))
    else:
        for c in range(n_chunks):
            _predict_rows(X, W, b, out, c * chunk_rows, min((c + 1) * chunk_rows, n_samples))


@njit(parallel=True, cache=True)
def _loss(X, Y, W, b, parallel, chunk_rows, n_chunks, loss_parts):
    n_samples = X.shape[0]
    if parallel:
        for c in prange(n_chunks):
            loss_parts[c] = _loss_rows(X, Y, W, b, c * chunk_rows, min((c + 1) * chunk_rows, n_samples))
    else:
        for c in range(n_chunks):
            loss_parts[c] = _loss_rows(X, Y, W, b, c * chunk_rows, min((c + 1) * chunk_rows, n_samples))
    total = 0.0
    for c in range(n_chunks):  # fixed order: reproducible for any thread count
        total += loss_parts[c]
    return total / (n_samples * W.shape[0])


@njit(parallel=True, cache=True, nogil=True)  # nogil: a reader thread (linreg.parquet) decodes the next chunk
def _loss_grad(X, Y, W, b, dW, db, parallel, chunk_rows, n_chunks, residuals, dW_parts, db_parts, loss_parts,
               variant):
    """Loss, dW and db of all rows (module doc); ``variant`` (``kernel_variant``) is the row kernel it compiles."""
    n_samples = X.shape[0]
    n_outputs = W.shape[0]
    if parallel:
        for c in prange(n_chunks):
            loss_parts[c] = _loss_grad_rows(
                X, Y, W, b, c * chunk_rows, min((c + 1) * chunk_rows, n_samples),
                residuals[c], dW_parts[c], db_parts[c], variant,
            )
    else:
        for c in range(n_chunks):
            loss_parts[c] = _loss_grad_rows(
                X, Y, W, b, c * chunk_rows, min((c + 1) * chunk_rows, n_samples),
                residuals[c], dW_parts[c], db_parts[c], variant,
            )
    # Serial combine in chunk order 0, 1, ...: the summation order never depends on threads.
    return _combine(dW, db, dW_parts, db_parts, loss_parts, n_chunks, n_samples * n_outputs)


@njit(cache=True)
def is_divergent(value, first):
    """Divergence, the one rule of every training loop: a non-finite loss, or one EXPLOSION_FACTOR times the
    fit's first loss ``first`` (caught long before overflow). Callable from Python, from compiled code and from
    the CUDA kernels (``kernels.cuda._finish_step``), hence ``math.isfinite``."""
    return not math.isfinite(value) or (first > 0 and value > EXPLOSION_FACTOR * first)


@njit(cache=True)
def copy_params(W_to, b_to, W_from, b_from):
    """``W_to[:] = W_from`` and ``b_to[:] = b_from`` element by element: shapes match by construction, and
    a slice assignment would compile numba's shape-mismatch error path (about a second of a first fit)."""
    for o in range(W_to.shape[0]):
        b_to[o] = b_from[o]
        for f in range(W_to.shape[1]):
            W_to[o, f] = W_from[o, f]


@njit(cache=True)
def _gd_update(epoch, value, loss_history, W, b, dW, db, lr, W_prev, b_prev):
    """Record epoch's loss and take its update; False (nothing updated) when the loss diverged.

    The update is ``W -= dW * lr`` in W's dtype, as torch does it. Divergence
    (``is_divergent``): the parameters of the previous epoch (``W_prev``), whose loss was
    finite, are then restored.
    """
    loss_history[epoch] = value
    if is_divergent(value, loss_history[0] if epoch > 0 else value):
        if epoch > 0:
            copy_params(W, b, W_prev, b_prev)
        return False
    copy_params(W_prev, b_prev, W, b)
    for o in range(W.shape[0]):
        b[o] -= db[o] * lr
        for f in range(W.shape[1]):
            W[o, f] -= dW[o, f] * lr
    return True


# Full-batch gradient descent, the seeds' loop compiled, has one entry point per family of variants
# (the caller, ``gd``, picks): each compiles only its own row kernel.


@njit(cache=True)
def _gd_epochs(X, Y, W, b, lr, loss_history, start, stop, dW, db, W_prev, b_prev,
               parallel, chunk_rows, n_chunks, residuals, dW_parts, db_parts, loss_parts, variant):
    """Full-batch gradient descent for epochs [start, stop) with the row kernel ``variant``.

    ``loss_history[e]`` is the loss before epoch e's update (as the seeds print
    it; entries before ``start`` are those of earlier calls). Stops at the first
    non-finite or exploding loss (``_gd_update``); returns the number of epochs completed.
    """
    for epoch in range(start, stop):
        value = _loss_grad(X, Y, W, b, dW, db, parallel, chunk_rows, n_chunks,
                           residuals, dW_parts, db_parts, loss_parts, variant)
        if not _gd_update(epoch, value, loss_history, W, b, dW, db, lr, W_prev, b_prev):
            return epoch - start
    return stop - start


@njit(cache=True)
def _gd_epochs_transposed(X, Y, W, b, lr, loss_history, start, stop, dW, db, W_prev, b_prev,
                          chunk_rows, n_chunks, dW_parts, db_parts, loss_parts, zeros):
    """_gd_epochs for small specialised problems (seed 000's; ``use_transposed``), serial.

    Keeps a transposed float64 copy of X and Y for all epochs: one copy, then each
    epoch reads contiguous, cache-resident columns (benchmarks/README.md).
    ``zeros``: n_features float64 zeros, the compile-time feature count.
    """
    n_samples, n_features = X.shape
    xt = np.empty(n_features * n_samples)
    yt = np.empty(n_samples)
    for i in range(n_samples):
        yt[i] = Y[i, 0]
        for f in range(n_features):
            xt[f * n_samples + i] = X[i, f]
    for epoch in range(start, stop):
        value = _loss_grad_transposed(xt, yt, W, b, dW, db, chunk_rows, n_chunks, dW_parts, db_parts, loss_parts,
                                      zeros)
        if not _gd_update(epoch, value, loss_history, W, b, dW, db, lr, W_prev, b_prev):
            return epoch - start
    return stop - start


# --------------------------------------------------------------------------- wrappers


class Workspace:
    """Scratch buffers of one (n_samples, n_features, n_outputs) problem, reused across steps."""

    def __init__(self, n_samples: int, n_features: int, n_outputs: int, dtype: np.dtype) -> None:
        self.shape = (n_samples, n_features, n_outputs)
        self.chunk_rows, self.n_chunks = chunking(n_samples)
        self.parallel = parallel_pass(n_samples, n_features, n_outputs)
        # Per-chunk scratch of the blocked kernel (_loss_grad_rows allocates its own if this is too small).
        self.residuals = np.zeros((self.n_chunks, max(n_outputs, int(_scratch_size(n_features, n_outputs)))))
        self.dW_parts = np.zeros((self.n_chunks, n_outputs, n_features))
        self.db_parts = np.zeros((self.n_chunks, n_outputs))
        self.loss_parts = np.zeros(self.n_chunks)
        self.dW = np.zeros((n_outputs, n_features), dtype=dtype)
        self.db = np.zeros(n_outputs, dtype=dtype)
        # The parameters before the last update, kept across gd() calls to restore on divergence.
        self.W_prev: np.ndarray | None = None
        self.b_prev: np.ndarray | None = None

    def chunk_args(self) -> tuple:
        return (self.parallel, self.chunk_rows, self.n_chunks,
                self.residuals, self.dW_parts, self.db_parts, self.loss_parts)


def kernel_variant(X: np.ndarray, Y: np.ndarray) -> tuple:
    """The row kernel a full-batch pass over (X, Y) uses, as the value whose type selects it.

    A tuple of n_features float64 zeros: the kernel specialised on n_features (one
    output, at most _MAX_FIXED_FEATURES features, C-contiguous X and Y); ``WIDE``: the one-output
    wide kernel (``_wide_rows``: one output, more features, C-contiguous X and Y); ``LANES``: the
    lanes kernel (``_lanes_rows``: LANES_MIN_OUTPUTS or more outputs, C-contiguous X and Y);
    ``TILED``: the tiled kernel (``_tiled_rows``: any other shape, C-contiguous X and Y);
    ``()``: the blocked kernel, any layout. Chosen here, in Python,
    so that each compiled entry point (``_loss_grad``, ``_gd_epochs``) compiles only this variant.
    """
    n_features, n_outputs = X.shape[1], Y.shape[1]
    contiguous = X.flags.c_contiguous and Y.flags.c_contiguous
    if n_outputs == 1 and n_features <= _MAX_FIXED_FEATURES and contiguous:
        return (0.0,) * n_features
    if n_outputs == 1 and contiguous:
        return WIDE
    if n_outputs >= LANES_MIN_OUTPUTS and contiguous:
        return LANES
    if contiguous:
        return TILED
    return ()


def parallel_pass(n_samples: int, n_features: int, n_outputs: int) -> bool:
    """Whether a pass over (n_samples, n_features) -> n_outputs walks its chunks in parallel (PARALLEL_MIN_WORK)."""
    return layout.parallel_pass(n_samples, n_features, n_outputs, PARALLEL_MIN_WORK)


transposed_max_rows = layout.transposed_max_rows
use_transposed = layout.use_transposed


def _check(X: np.ndarray, Y: np.ndarray | None, W: np.ndarray, b: np.ndarray) -> np.dtype:
    """X's dtype, after checking that X, Y, W, b are arrays of one supported dtype and matching shapes."""
    # The common case in a few comparisons (a small problem's epoch is ~6 us): the checks below only
    # name what is wrong.
    ndarray = np.ndarray
    if (type(X) is ndarray and type(W) is ndarray and type(b) is ndarray and X.ndim == 2 and W.ndim == 2
            and b.ndim == 1 and X.dtype in _SUPPORTED_DTYPES and W.dtype == X.dtype and b.dtype == X.dtype
            and X.shape[0] >= 1 and X.shape[1] >= 1 and W.shape[0] >= 1 and W.shape[1] == X.shape[1]
            and b.shape[0] == W.shape[0]
            and (Y is None or (type(Y) is ndarray and Y.dtype == X.dtype and Y.shape == (X.shape[0], W.shape[0])))):
        return X.dtype
    arrays = {"X": X, "W": W, "b": b} if Y is None else {"X": X, "Y": Y, "W": W, "b": b}
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(array).__name__}")
    dtype = X.dtype
    if dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"X must be float32 or float64, got {dtype}")
    for name, array in arrays.items():
        if array.dtype != dtype:
            raise TypeError(f"{name} must have X's dtype {dtype}, got {array.dtype}")
    expected_ndim = {"X": 2, "Y": 2, "W": 2, "b": 1}
    for name, array in arrays.items():
        if array.ndim != expected_ndim[name]:
            raise ValueError(f"{name} must be {expected_ndim[name]}-D, got shape {array.shape}")
    n_samples, n_features = X.shape
    n_outputs = W.shape[0]
    if n_samples < 1 or n_features < 1 or n_outputs < 1:
        raise ValueError(
            f"need n_samples, n_features, n_outputs >= 1, got X {X.shape} and W {W.shape}"
        )
    if W.shape != (n_outputs, n_features):
        raise ValueError(f"W must have shape (n_outputs, {n_features}) to match X {X.shape}, got {W.shape}")
    if b.shape != (n_outputs,):
        raise ValueError(f"b must have shape ({n_outputs},) to match W {W.shape}, got {b.shape}")
    if Y is not None and Y.shape != (n_samples, n_outputs):
        raise ValueError(f"Y must have shape ({n_samples}, {n_outputs}) to match X and W, got {Y.shape}")
    return dtype


def _check_output(name: str, array: np.ndarray, shape: tuple, dtype: np.dtype) -> None:
    if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
        got = f"{type(array).__name__} {getattr(array, 'shape', '')} {getattr(array, 'dtype', '')}"
        raise ValueError(f"{name} must be a writable {dtype} array of shape {shape}, got {got.strip()}")
    if not array.flags.writeable:
        raise ValueError(f"{name} must be writable")


def predict(X: np.ndarray, W: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``out = X @ W.T + b``, accumulated in float64, stored in X's dtype."""
    dtype = _check(X, None, W, b)
    shape = (X.shape[0], W.shape[0])
    if out is None:
        out = np.empty(shape, dtype=dtype)
    _check_output("out", out, shape, dtype)
    chunk_rows, n_chunks = chunking(X.shape[0])
    parallel = X.size * W.shape[0] >= PARALLEL_MIN_WORK
    _predict(X, W, b, out, parallel, chunk_rows, n_chunks)
    return out


def loss(X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray) -> float:
    """The seeds' mse, ``sum((X @ W.T + b - Y)**2) / Y.size``, accumulated in float64."""
    _check(X, Y, W, b)
    chunk_rows, n_chunks = chunking(X.shape[0])
    parallel = X.size * W.shape[0] >= PARALLEL_MIN_WORK
    return float(_loss(X, Y, W, b, parallel, chunk_rows, n_chunks, np.zeros(n_chunks)))


def loss_grad(X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray,
              dW: np.ndarray, db: np.ndarray) -> float:
    """One fused pass over X and Y: returns the loss and writes dW and db (X's dtype)."""
    dtype = _check(X, Y, W, b)
    _check_output("dW", dW, W.shape, dtype)
    _check_output("db", db, b.shape, dtype)
    work = Workspace(X.shape[0], X.shape[1], W.shape[0], dtype)
    return float(_loss_grad(X, Y, W, b, dW, db, *work.chunk_args(), kernel_variant(X, Y)))


def gd(X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray, lr: float,
       loss_history: np.ndarray, start: int = 0, stop: int | None = None,
       workspace: Workspace | None = None) -> int:
    """Run full-batch gradient descent epochs [start, stop) in compiled code, updating W and b in place.

    ``loss_history`` (float64, length >= stop) receives each epoch's loss before
    its update. Returns the number of epochs completed; fewer than
    ``stop - start`` means the loss became non-finite at epoch
    ``start + returned`` (its value is in loss_history) and W and b hold the
    last parameters whose loss was finite.
    """
    dtype = _check(X, Y, W, b)
    stop = loss_history.shape[0] if stop is None else stop
    if not (0 <= start <= stop <= loss_history.shape[0]):
        raise ValueError(f"need 0 <= start <= stop <= len(loss_history), got {start}, {stop}, {loss_history.shape[0]}")
    if loss_history.dtype != np.float64:
        raise TypeError(f"loss_history must be float64, got {loss_history.dtype}")
    work = workspace or Workspace(X.shape[0], X.shape[1], W.shape[0], dtype)
    launch_threads()
    if work.shape != (X.shape[0], X.shape[1], W.shape[0]):
        raise ValueError(f"workspace was made for {work.shape}, not {(X.shape[0], X.shape[1], W.shape[0])}")
    if work.W_prev is None or work.W_prev.shape != W.shape or work.W_prev.dtype != W.dtype:
        work.W_prev, work.b_prev = W.copy(), b.copy()
    n_samples, n_features = X.shape
    lr = dtype.type(lr)
    if use_transposed(n_samples, n_features, W.shape[0], work.parallel):
        return int(_gd_epochs_transposed(X, Y, W, b, lr, loss_history, start, stop, work.dW, work.db, work.W_prev,
                                         work.b_prev, work.chunk_rows, work.n_chunks, work.dW_parts, work.db_parts,
                                         work.loss_parts, (0.0,) * n_features))
    return int(_gd_epochs(X, Y, W, b, lr, loss_history, start, stop, work.dW, work.db,
                          work.W_prev, work.b_prev, *work.chunk_args(), kernel_variant(X, Y)))
