"""Hand-written numba-cuda kernels for linear regression, with the contract of ``kernels.cpu``.

Shapes (the vocabulary of ``kernels.cpu``)::

    X   (n_samples, n_features)   data, float32 or float64, any memory layout
    Y   (n_samples, n_outputs)    targets, same dtype as X
    W   (n_outputs, n_features)   weights, as torch.nn.Linear stores them
    b   (n_outputs,)              bias
    P   (n_samples, n_outputs)    predictions
    dW, db                        gradients, shaped like W and b
    parts (n_blocks, n_terms)     float64 per-block partial sums, n_terms = 1 + n_outputs + n_outputs * n_features:
                                  column 0 sum(R**2), columns 1.. sum(R[:, o]), then sum(R[:, o] * X[:, f]) at
                                  1 + n_outputs + o * n_features + f

Formulas (DESIGN.md section 1)::

    P  = X @ W.T + b
    R  = P - Y
    L  = sum(R**2) / (n_samples * n_outputs)
    dW = 2 / (n_samples * n_outputs) * R.T @ X
    db = 2 / (n_samples * n_outputs) * R.sum(axis=0)

Parallel strategy and why it is deterministic and race-free:

* ``grid`` cuts the rows into ``n_blocks`` contiguous ranges of
  ``rows_per_block`` rows; it depends on the problem's shape and the module
  tunables only, never on the GPU, so every device sums in the same order.
* Block ``k`` reads only its own rows and writes only row ``k`` of ``parts``.
  Inside a block every partial sum has one owner thread at a time, and the
  threads combine through shared memory in an order fixed by the block size:
  a tree (``_block_sum``) for a single sum, or, in the register path, a
  (term x thread) matrix whose rows are added in thread order. No warp
  shuffles (the simulator lacks them), no float atomics anywhere.
* A second kernel (``_finish_step``, ``_finish_loss``) adds the block partials
  of each term in block order 0, 1, ... in one thread: the whole reduction has
  a fixed order, so results are bit-identical run to run.
* Every sum is accumulated in float64 whatever the data dtype (as the CPU
  kernels); only results are rounded to the data dtype. The parameter update
  ``W -= dW * lr`` is done in W's dtype, as torch does it.

Two gradient kernels, chosen by the problem's width:

* ``_register_partials(max_features, max_outputs)``: each thread walks rows
  of its block and keeps all ``n_outputs * n_features`` gradient sums in
  registers. The loops have compile-time trip counts (the bucket's maxima,
  guarded by the real sizes) so NVVM unrolls them and the accumulators never
  touch local memory (``kernels.report`` shows 0 stack bytes). Used when a
  bucket of ``REGISTER_SHAPES`` fits and THREADS_PER_BLOCK <= 128.
* ``_tiled_partials``: any size. The block takes its rows ``TILE_ROWS`` at a
  time and its outputs ``TILE_OUTPUTS`` at a time; the residual tile goes to
  shared memory, then each thread owns (feature, group of outputs) items and
  adds its tile sums into the block's own row of ``parts`` (a read-modify-write
  of memory no other block touches, in tile order).

A training step is two launches (``gd``): a partials kernel, then
``_finish_step``, which reduces, records the loss in the device-side history,
and writes the updated parameters into the other of two parameter buffers.
A diverging loss (non-finite, or EXPLOSION_FACTOR times the first, as
``kernels.cpu``) sets ``stop_epoch`` on the device; every later launch sees
it and returns at once, so the host only synchronises when it wants the
result. Kernels are private; the launchers check that every array argument
is already on the device (a host array would be copied on every launch).
The tunables below are read by the host at launch time, so tests can patch
them small; the shared-memory capacities are compile-time constants.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

# One definition of divergence for every backend: a loss this many times the fit's first.
from .cpu import is_divergent

__all__ = [
    "MAX_BLOCKS",
    "MAX_PARTIALS_BYTES",
    "NOT_STOPPED",
    "REGISTER_SHAPES",
    "ROWS_PER_BLOCK",
    "THREADS_PER_BLOCK",
    "TILE_OUTPUTS",
    "TILE_ROWS",
    "Workspace",
    "as_device_array",
    "cast",
    "empty",
    "first_nonfinite",
    "gd",
    "grid",
    "is_device_array",
    "kernel_signatures",
    "loss",
    "loss_grad",
    "param_buffers",
    "params_buffer",
    "predict",
    "simulator_enabled",
    "to_device",
    "to_host",
    "unavailable_reason",
]

#: Threads per block of every kernel. With the 8x4 register kernel's ~130 registers a
#: thread, 128-thread blocks still fit 3 to an SM (kernels.report has the counts).
THREADS_PER_BLOCK = 128
#: Minimum rows per block, so each thread of the register path sums >= 16 rows
#: and the partial buffer stays small next to X.
ROWS_PER_BLOCK = 2048
#: Upper bound on blocks per pass: ~4 per SM on a 132-SM H100; bounds the
#: partial buffer at MAX_BLOCKS * n_terms float64.
MAX_BLOCKS = 512
#: Bound on the partial-sum buffer of one pass (1024 features x 16 outputs: 512 blocks, 67 MB).
MAX_PARTIALS_BYTES = 1 << 28
#: Rows and outputs of the tiled path's shared residual tile (TILE_ROWS * TILE_OUTPUTS <= _TILE_CAPACITY).
TILE_ROWS = 64
TILE_OUTPUTS = 16
#: (max_features, max_outputs) buckets of the register path, tried in order.
#: Each bucket is one compiled kernel per dtype; bigger problems take the tiled path.
REGISTER_SHAPES: tuple[tuple[int, int], ...] = ((16, 1), (8, 4))

#: ``stop_epoch`` value of a run that has not diverged.
NOT_STOPPED = np.iinfo(np.int64).max

# Compile-time capacities (shared arrays need constant sizes): the launchers check the tunables against them.
_MAX_THREADS_PER_BLOCK = 256   # shared float64 tree buffer: 2 KiB
_TILE_CAPACITY = 1024          # shared float64 residual tile: 8 KiB
_OUTPUT_REGISTERS = 8          # outputs one thread accumulates in registers in the tiled path
_REGISTER_MAX_THREADS = 128    # register path's shared (term x thread) matrix: 37.9 KiB for the 8x4 bucket

_SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------- environment


def simulator_enabled() -> bool:
    """True when numba runs CUDA kernels in its simulator (NUMBA_ENABLE_CUDASIM=1 before numba was imported)."""
    from numba.cuda.core import config

    return bool(config.ENABLE_CUDASIM)


def unavailable_reason() -> str | None:
    """Why kernels cannot run here (no driver, no GPU, no CUDA toolkit), or None if they can.

    The simulator needs neither a driver nor a toolkit.
    """
    if simulator_enabled():
        return None
    if not cuda.is_available():
        from numba.cuda.cudadrv import driver

        error = getattr(driver.driver, "initialization_error", None)
        if error:
            return f"no usable CUDA driver ({' '.join(str(error).split())})"
        return "the CUDA driver found no GPU"
    missing = []
    for library, probe in (("NVVM", _probe_nvvm), ("NVRTC", _probe_nvrtc)):
        try:
            probe()
        except Exception as error:  # any failure to load means the toolkit piece is unusable
            missing.append(f"{library} ({type(error).__name__}: {' '.join(str(error).split())[:200]})")
    if missing:
        return "the CUDA toolkit libraries numba-cuda compiles with are missing: " + "; ".join(missing)
    return None


def _probe_nvvm() -> None:
    from numba.cuda.cudadrv import nvvm

    nvvm.NVVM()


def _probe_nvrtc() -> None:
    from cuda.bindings import nvrtc

    result, *_ = nvrtc.nvrtcVersion()
    if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"nvrtcVersion returned {result}")


# --------------------------------------------------------------------------- grid


def grid(n_samples: int, n_terms: int = 1) -> tuple[int, int]:
    """``(n_blocks, rows_per_block)`` of the row partition of a pass producing ``n_terms`` sums per block.

    Depends on the problem's shape and the tunables only, never on the GPU.
    Very wide problems get fewer, longer blocks so that the partial-sum buffer
    (n_blocks * n_terms float64) stays within MAX_PARTIALS_BYTES.
    """
    max_blocks = max(1, min(MAX_BLOCKS, MAX_PARTIALS_BYTES // (8 * n_terms)))
    rows_per_block = max(ROWS_PER_BLOCK, math.ceil(n_samples / max_blocks), 1)
    return max(1, math.ceil(n_samples / rows_per_block)), rows_per_block


def _elementwise_blocks(n_items: int) -> int:
    return max(1, min(MAX_BLOCKS, math.ceil(n_items / THREADS_PER_BLOCK)))


def _register_shape(n_features: int, n_outputs: int) -> tuple[int, int] | None:
    if THREADS_PER_BLOCK > _REGISTER_MAX_THREADS:  # its shared matrix has room for this many threads
        return None
    for max_features, max_outputs in REGISTER_SHAPES:
        if n_features <= max_features and n_outputs <= max_outputs:
            return max_features, max_outputs
    return None


# --------------------------------------------------------------------------- device functions


@cuda.jit(device=True)
def _block_sum(cache, value):
    """Sum of ``value`` over the block's threads, returned to every thread. All threads must call it.

    A tree in shared memory: at each level thread t adds the entry half a
    level above it. The pairing depends only on blockDim, so the order is fixed
    for any block size (powers of two or not).
    """
    t = cuda.threadIdx.x
    cache[t] = value
    cuda.syncthreads()
    n = cuda.blockDim.x
    while n > 1:
        half = (n + 1) // 2
        if t + half < n:
            cache[t] += cache[t + half]
        cuda.syncthreads()
        n = half
    total = cache[0]
    cuda.syncthreads()  # everyone has read cache[0] before the next call overwrites it
    return total


# --------------------------------------------------------------------------- kernels


@cuda.jit(cache=True)
def _predict(X, W, b, out):
    """out[i, o] = b[o] + sum_f X[i, f] * W[o, f]; one thread per (i, o), grid-stride. Writes only out[i, o]."""
    n_samples, n_features = X.shape
    n_outputs = W.shape[0]
    for k in range(cuda.grid(1), n_samples * n_outputs, cuda.gridsize(1)):
        i = k // n_outputs
        o = k - i * n_outputs
        acc = np.float64(b[o])
        for f in range(n_features):
            acc += np.float64(X[i, f]) * np.float64(W[o, f])
        out[i, o] = acc


@cuda.jit(cache=True)
def _loss_partials(X, Y, W, b, parts, rows_per_block):
    """parts[block, 0] = sum of R**2 over the block's rows (threads stride over rows, then a tree)."""
    cache = cuda.shared.array(_MAX_THREADS_PER_BLOCK, np.float64)
    n_samples, n_features = X.shape
    n_outputs = W.shape[0]
    row_start = cuda.blockIdx.x * rows_per_block
    row_stop = min(row_start + rows_per_block, n_samples)
    acc = 0.0
    for i in range(row_start + cuda.threadIdx.x, row_stop, cuda.blockDim.x):
        for o in range(n_outputs):
            r = np.float64(b[o]) - np.float64(Y[i, o])
            for f in range(n_features):
                r += np.float64(X[i, f]) * np.float64(W[o, f])
            acc += r * r
    total = _block_sum(cache, acc)
    if cuda.threadIdx.x == 0:
        parts[cuda.blockIdx.x, 0] = total


@cuda.jit(cache=True)
def _finish_loss(parts, n_blocks, n_elements, out):
    """out[0] = sum(parts[:, 0]) / n_elements, in one block: strided sums, then the tree."""
    cache = cuda.shared.array(_MAX_THREADS_PER_BLOCK, np.float64)
    acc = 0.0
    for block in range(cuda.threadIdx.x, n_blocks, cuda.blockDim.x):
        acc += parts[block, 0]
    total = _block_sum(cache, acc)
    if cuda.threadIdx.x == 0:
        out[0] = total / n_elements


@functools.cache
def _register_partials(max_features: int, max_outputs: int):
    """The register-path partials kernel for problems up to ``max_features`` x ``max_outputs``.

    A factory, so the maxima are compile-time constants: the accumulator
    arrays below have constant size and every loop over them a constant trip
    count, which NVVM unrolls, turning each array element into a register.
    """
    n_acc = max_features * max_outputs
    n_slots = (1 + max_outputs + n_acc) * _REGISTER_MAX_THREADS

    def kernel(X, Y, W, b, parts, rows_per_block, tile_rows, tile_outputs, epoch, stop_epoch):
        if stop_epoch[0] < epoch:  # diverged at an earlier epoch: nothing left to do
            return
        sums = cuda.shared.array(n_slots, np.float64)
        x_row = cuda.local.array(max_features, np.float64)
        dW_acc = cuda.local.array(n_acc, np.float64)
        db_acc = cuda.local.array(max_outputs, np.float64)
        n_samples, n_features = X.shape
        n_outputs = W.shape[0]
        block = cuda.blockIdx.x
        row_start = block * rows_per_block
        row_stop = min(row_start + rows_per_block, n_samples)
        for k in range(n_acc):
            dW_acc[k] = 0.0
        for o in range(max_outputs):
            db_acc[o] = 0.0
        loss_acc = 0.0
        for i in range(row_start + cuda.threadIdx.x, row_stop, cuda.blockDim.x):
            for f in range(max_features):
                x = 0.0  # padding features contribute exact zeros below
                if f < n_features:
                    x = np.float64(X[i, f])
                x_row[f] = x
            for o in range(max_outputs):
                if o < n_outputs:
                    r = np.float64(b[o]) - np.float64(Y[i, o])
                    for f in range(max_features):
                        if f < n_features:
                            r += x_row[f] * np.float64(W[o, f])
                    loss_acc += r * r
                    db_acc[o] += r
                    for f in range(max_features):
                        dW_acc[o * max_features + f] += r * x_row[f]
        # Block reduction of all terms at once: every thread stores its accumulators in
        # column t of a (term x thread) shared matrix (constant indices after unrolling,
        # so the accumulators stay in registers), one barrier, then thread j adds row j
        # in thread order 0, 1, ...: a fixed order, one barrier instead of a tree per term.
        t = cuda.threadIdx.x
        n_threads = cuda.blockDim.x
        sums[t] = loss_acc
        for o in range(max_outputs):
            sums[(1 + o) * n_threads + t] = db_acc[o]
        for k in range(n_acc):
            sums[(1 + max_outputs + k) * n_threads + t] = dW_acc[k]
        cuda.syncthreads()
        for term in range(t, 1 + n_outputs + n_outputs * n_features, n_threads):
            slot = term  # loss and db terms sit where the parts columns do
            if term > n_outputs:
                o = (term - 1 - n_outputs) // n_features
                slot = 1 + max_outputs + o * max_features + (term - 1 - n_outputs - o * n_features)
            total = 0.0
            for thread in range(n_threads):
                total += sums[slot * n_threads + thread]
            parts[block, term] = total

    kernel.__name__ = kernel.__qualname__ = f"_register_partials_{max_features}x{max_outputs}"
    return cuda.jit(kernel)


@cuda.jit(cache=True)
def _tiled_partials(X, Y, W, b, parts, rows_per_block, tile_rows, tile_outputs, epoch, stop_epoch):
    """parts[block, :] for any n_features * n_outputs, through shared residual tiles.

    Per (row tile, output tile): stage 1 computes the residual tile into shared
    memory, one (row, output) pair per thread; stage 2 gives each thread
    (feature, group of _OUTPUT_REGISTERS outputs) items, summed over the tile's
    rows in registers and added to parts[block, column]. Each column of the
    block's row has one owner per tile and tiles run in order between barriers.
    """
    if stop_epoch[0] < epoch:
        return
    cache = cuda.shared.array(_MAX_THREADS_PER_BLOCK, np.float64)
    residual = cuda.shared.array(_TILE_CAPACITY, np.float64)
    acc = cuda.local.array(_OUTPUT_REGISTERS, np.float64)
    n_samples, n_features = X.shape
    n_outputs = W.shape[0]
    n_terms = 1 + n_outputs + n_outputs * n_features
    t = cuda.threadIdx.x
    n_threads = cuda.blockDim.x
    block = cuda.blockIdx.x
    row_start = block * rows_per_block
    row_stop = min(row_start + rows_per_block, n_samples)
    for column in range(1 + t, n_terms, n_threads):
        parts[block, column] = 0.0
    cuda.syncthreads()
    loss_acc = 0.0
    for row0 in range(row_start, row_stop, tile_rows):
        n_rows = min(tile_rows, row_stop - row0)
        for o0 in range(0, n_outputs, tile_outputs):
            n_outs = min(tile_outputs, n_outputs - o0)
            # Stage 1: residual tile, residual[r * n_outs + oo] = R[row0 + r, o0 + oo].
            for p in range(t, n_rows * n_outs, n_threads):
                r = p // n_outs
                o = o0 + p - r * n_outs
                i = row0 + r
                value = np.float64(b[o]) - np.float64(Y[i, o])
                for f in range(n_features):
                    value += np.float64(X[i, f]) * np.float64(W[o, f])
                residual[p] = value
                loss_acc += value * value
            cuda.syncthreads()
            # Stage 2: gradient items, feature fastest so neighbouring threads read neighbouring X.
            n_groups = (n_outs + _OUTPUT_REGISTERS - 1) // _OUTPUT_REGISTERS
            n_grad_items = n_groups * n_features
            for q in range(t, n_grad_items + n_outs, n_threads):
                if q < n_grad_items:
                    group = q // n_features
                    f = q - group * n_features
                    first = group * _OUTPUT_REGISTERS
                    for j in range(_OUTPUT_REGISTERS):
                        acc[j] = 0.0
                    for r in range(n_rows):
                        x = np.float64(X[row0 + r, f])
                        for j in range(_OUTPUT_REGISTERS):
                            if first + j < n_outs:
                                acc[j] += residual[r * n_outs + first + j] * x
                    for j in range(_OUTPUT_REGISTERS):
                        if first + j < n_outs:
                            parts[block, 1 + n_outputs + (o0 + first + j) * n_features + f] += acc[j]
                else:
                    oo = q - n_grad_items
                    total = 0.0
                    for r in range(n_rows):
                        total += residual[r * n_outs + oo]
                    parts[block, 1 + o0 + oo] += total
            cuda.syncthreads()  # the residual tile is read by everyone before it is overwritten
    total = _block_sum(cache, loss_acc)
    if t == 0:
        parts[block, 0] = total


@cuda.jit(cache=True)
def _finish_step(parts, n_blocks, n_elements, W, b, lr, W_next, b_next, dW, db, loss_history, epoch, stop_epoch,
                 update):
    """Reduce the block partials in block order; record the loss; write dW, db and (if update) the new parameters.

    Every block sums the loss partials itself (same strided sums, same tree,
    so the same bits) and so knows whether the loss diverged without a grid
    barrier. Divergence is ``kernels.cpu._gd_epochs``'s: a non-finite loss, or
    one EXPLOSION_FACTOR times the fit's first. It writes ``stop_epoch`` and no
    parameters: the parameters of this epoch stay in W, b and those of the
    previous one in the other buffer. One thread per gradient term, each adding n_blocks partials
    in order. The update is ``W_next = W - dW * lr`` in W's dtype (lr is typed
    like W by the launcher), as ``kernels.cpu._gd_epochs`` and torch do it.
    """
    if stop_epoch[0] < epoch:
        return
    cache = cuda.shared.array(_MAX_THREADS_PER_BLOCK, np.float64)
    acc = 0.0
    for block in range(cuda.threadIdx.x, n_blocks, cuda.blockDim.x):
        acc += parts[block, 0]
    value = _block_sum(cache, acc) / n_elements
    first = loss_history[0] if epoch > 0 else value  # the fit's first loss (written by an earlier launch)
    first_thread = cuda.grid(1) == 0
    if first_thread:
        loss_history[epoch] = value
    if is_divergent(value, first):  # the rule of every loop, kernels.cpu.is_divergent
        if first_thread:
            stop_epoch[0] = epoch  # later launches compare epoch against this and return
        return
    n_outputs, n_features = W.shape
    grad_scale = 2.0 / n_elements
    for k in range(cuda.grid(1), n_outputs + n_outputs * n_features, cuda.gridsize(1)):
        total = 0.0
        for block in range(n_blocks):
            total += parts[block, 1 + k]
        if k < n_outputs:
            db[k] = grad_scale * total
            if update:
                b_next[k] = b[k] - db[k] * lr
        else:
            o = (k - n_outputs) // n_features
            f = (k - n_outputs) - o * n_features
            dW[o, f] = grad_scale * total
            if update:
                W_next[o, f] = W[o, f] - dW[o, f] * lr


@cuda.jit(cache=True)
def _first_nonfinite(A, out):
    """out[0] = smallest flat index of a NaN/Inf in the 2-D array A (out[0] unchanged if none).

    Integer atomic min: its result does not depend on the order threads arrive.
    """
    n_rows, n_cols = A.shape
    for k in range(cuda.grid(1), n_rows * n_cols, cuda.gridsize(1)):
        i = k // n_cols
        if not math.isfinite(A[i, k - i * n_cols]):
            cuda.atomic.min(out, 0, k)


@cuda.jit(cache=True)
def _fill(out, value):
    """out[:] = value (device-side initialisation, no host copy)."""
    for k in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[k] = value


@cuda.jit(cache=True)
def _cast_2d(src, dst):
    """dst[i, j] = src[i, j] converted to dst's dtype: promotion and making strided device data contiguous."""
    n_rows, n_cols = src.shape
    for k in range(cuda.grid(1), n_rows * n_cols, cuda.gridsize(1)):
        i = k // n_cols
        j = k - i * n_cols
        dst[i, j] = src[i, j]


@cuda.jit(cache=True)
def _cast_column(src, dst):
    """dst[i, 0] = src[i]: a 1-D (possibly strided) target as a contiguous (n, 1) column."""
    for i in range(cuda.grid(1), src.shape[0], cuda.gridsize(1)):
        dst[i, 0] = src[i]


@cuda.jit(cache=True)
def _gather_rows(src, rows, dst):
    """dst[r, j] = src[rows[r], j]: a few rows of a device array, made contiguous for one copy to the host."""
    n_cols = src.shape[1]
    for k in range(cuda.grid(1), rows.shape[0] * n_cols, cuda.gridsize(1)):
        r = k // n_cols
        j = k - r * n_cols
        dst[r, j] = src[rows[r], j]


# --------------------------------------------------------------------------- launchers


def _launch(kernel, n_blocks: int, *args, stream=0) -> None:
    """Launch ``kernel`` on ``n_blocks`` x THREADS_PER_BLOCK. All launches go through here (tests count them).

    ``stream``: the CUDA stream to queue it on (0: the default stream). Refuses host arrays: numba would copy
    them to the device and back on every launch.
    """
    if not 1 <= THREADS_PER_BLOCK <= _MAX_THREADS_PER_BLOCK:
        raise ValueError(f"THREADS_PER_BLOCK must be in [1, {_MAX_THREADS_PER_BLOCK}], got {THREADS_PER_BLOCK}")
    for arg in args:
        if isinstance(arg, np.ndarray):
            raise TypeError(f"kernel argument {arg.shape} {arg.dtype} is a host array; copy it to the device once")
    kernel[n_blocks, THREADS_PER_BLOCK, stream](*args)


def to_device(array: np.ndarray):
    """One host-to-device copy (every one in this module goes through here)."""
    return cuda.to_device(np.ascontiguousarray(array))


def to_host(array, out: np.ndarray | None = None) -> np.ndarray:
    """One device-to-host copy; it waits for the kernels before it (the synchronisation points)."""
    return array.copy_to_host() if out is None else array.copy_to_host(out)


def is_device_array(obj) -> bool:
    """A numba device array (real or simulated) or any object exposing ``__cuda_array_interface__``."""
    from numba.cuda.cudadrv import devicearray  # the simulator's module when the simulator is on

    return bool(devicearray.is_cuda_ndarray(obj)) or hasattr(obj, "__cuda_array_interface__")


def as_device_array(obj):
    """A numba device array viewing ``obj``'s device memory: no copy.

    ``obj`` is a numba device array or exposes ``__cuda_array_interface__``
    (a torch CUDA tensor, a CuPy array). Under the simulator device memory is
    host memory, so an interface there is viewed as a NumPy array, still
    without a copy.
    """
    from numba.cuda.cudadrv import devicearray

    if devicearray.is_cuda_ndarray(obj):
        return obj
    interface = getattr(obj, "__cuda_array_interface__", None)
    if interface is None:
        raise TypeError(f"{type(obj).__name__} is neither a numba device array nor exposes __cuda_array_interface__")
    if simulator_enabled():
        return devicearray.FakeCUDAArray(np.asarray(_HostView(interface)))
    return cuda.as_cuda_array(obj)


class _HostView:
    """Exposes a CUDA array interface as a NumPy array interface (simulator only: device memory is host memory)."""

    def __init__(self, interface: dict) -> None:
        self.__array_interface__ = {key: interface[key] for key in ("shape", "typestr", "data", "strides")
                                    if key in interface} | {"version": 3}


def cast(array, dtype: np.dtype):
    """A contiguous device copy of the device array ``array`` in ``dtype``; a 1-D array becomes one column.

    Used only when device data needs promotion or a layout the kernels cannot view.
    """
    dtype = np.dtype(dtype)
    if array.ndim == 1:
        out = cuda.device_array((array.shape[0], 1), dtype=dtype)
        _launch(_cast_column, _elementwise_blocks(array.shape[0]), array, out)
    else:
        out = cuda.device_array(array.shape, dtype=dtype)
        _launch(_cast_2d, _elementwise_blocks(array.shape[0] * array.shape[1]), array, out)
    return out


def rows_to_host(array, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` of a 2-D device array as a host array: one gather launch, one small copy back."""
    out = cuda.device_array((rows.shape[0], array.shape[1]), dtype=array.dtype)
    _launch(_gather_rows, _elementwise_blocks(rows.shape[0] * array.shape[1]), array,
            to_device(np.ascontiguousarray(rows, np.int64)), out)
    return to_host(out)


def first_nonfinite(array) -> tuple[int, ...] | None:
    """Index (row, column) of the first NaN/Inf of a 2-D device array, or None. One device-to-host copy."""
    size = array.shape[0] * array.shape[1]
    found = cuda.device_array(1, dtype=np.int64)
    _launch(_fill, 1, found, size)
    _launch(_first_nonfinite, _elementwise_blocks(size), array, found)
    index = int(to_host(found)[0])
    if index >= size:
        return None
    return divmod(index, array.shape[1])


# --------------------------------------------------------------------------- workspace and training loop


class Workspace:
    """Device scratch of one (n_samples, n_features, n_outputs, dtype) problem, reused across steps.

    Holds the grid, the chosen partials kernel, the partial-sum buffer, dW and
    db, and ``stop_epoch`` (the epoch whose loss diverged, or NOT_STOPPED).
    The tunables are read here, once.
    """

    def __init__(self, n_samples: int, n_features: int, n_outputs: int, dtype: np.dtype) -> None:
        dtype = np.dtype(dtype)
        if dtype not in _SUPPORTED_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        if TILE_ROWS < 1 or TILE_OUTPUTS < 1 or TILE_ROWS * TILE_OUTPUTS > _TILE_CAPACITY:
            raise ValueError(f"need TILE_ROWS, TILE_OUTPUTS >= 1 and TILE_ROWS * TILE_OUTPUTS <= {_TILE_CAPACITY}, "
                             f"got {TILE_ROWS} x {TILE_OUTPUTS}")
        self.shape = (n_samples, n_features, n_outputs)
        self.dtype = dtype
        self.n_terms = 1 + n_outputs + n_outputs * n_features
        self.n_blocks, self.rows_per_block = grid(n_samples, self.n_terms)
        self.tile_rows, self.tile_outputs = TILE_ROWS, TILE_OUTPUTS
        self.register_shape = _register_shape(n_features, n_outputs)
        self.partials = _tiled_partials if self.register_shape is None else _register_partials(*self.register_shape)
        self.n_elements = n_samples * n_outputs
        self.finish_blocks = _elementwise_blocks(n_outputs + n_outputs * n_features)
        self.parts = cuda.device_array((self.n_blocks, self.n_terms), dtype=np.float64)
        self.dW = cuda.device_array((n_outputs, n_features), dtype=dtype)
        self.db = cuda.device_array(n_outputs, dtype=dtype)
        self.stop_epoch = cuda.device_array(1, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget a divergence: a fresh run (one launch, no copy)."""
        _launch(_fill, 1, self.stop_epoch, NOT_STOPPED)
        self.stopped_at = NOT_STOPPED

    def step(self, X, Y, W, b, lr, W_next, b_next, loss_history, epoch: int, update: bool) -> None:
        """One training step: exactly two launches, no synchronisation."""
        _launch(self.partials, self.n_blocks, X, Y, W, b, self.parts, self.rows_per_block,
                self.tile_rows, self.tile_outputs, epoch, self.stop_epoch)
        _launch(_finish_step, self.finish_blocks, self.parts, self.n_blocks, self.n_elements, W, b, lr,
                W_next, b_next, self.dW, self.db, loss_history, epoch, self.stop_epoch, update)


def gd(X, Y, W_buffers: tuple, b_buffers: tuple, lr: float, loss_history, start: int, stop: int,
       workspace: Workspace) -> int:
    """Run full-batch gradient descent epochs [start, stop) on the device; one synchronisation at the end.

    Epoch e reads ``W_buffers[e % 2]`` and writes ``W_buffers[(e + 1) % 2]``
    (likewise b); ``loss_history[e]`` (a float64 device array) receives the
    loss before epoch e's update. Returns the number of epochs completed;
    fewer than ``stop - start`` means the loss of epoch ``start + returned``
    diverged (non-finite or exploding; it is in loss_history) and
    ``params_buffer`` says which buffer holds the parameters before that epoch.
    """
    if workspace.stopped_at != NOT_STOPPED:
        raise RuntimeError(f"this run diverged at epoch {workspace.stopped_at}; call workspace.reset() first")
    if not 0 <= start <= stop <= loss_history.shape[0]:
        raise ValueError(f"need 0 <= start <= stop <= len(loss_history), got {start}, {stop}, {loss_history.shape[0]}")
    n_samples, n_features, n_outputs = workspace.shape
    if X.shape != (n_samples, n_features) or Y.shape != (n_samples, n_outputs):
        raise ValueError(f"workspace was made for {workspace.shape}, got X {X.shape} and Y {Y.shape}")
    lr = workspace.dtype.type(lr)  # the update runs in W's dtype
    for epoch in range(start, stop):
        current, following = epoch % 2, (epoch + 1) % 2
        workspace.step(X, Y, W_buffers[current], b_buffers[current], lr, W_buffers[following], b_buffers[following],
                       loss_history, epoch, True)
    workspace.stopped_at = int(to_host(workspace.stop_epoch)[0])  # the one synchronisation
    return min(workspace.stopped_at, stop) - start


def param_buffers(W: np.ndarray, b: np.ndarray) -> tuple[tuple, tuple]:
    """``gd``'s two device buffers each for W and b; the first holds W and b (one host-to-device copy each)."""
    W_first, b_first = to_device(W), to_device(b)
    return ((W_first, cuda.device_array(W_first.shape, dtype=W_first.dtype)),
            (b_first, cuda.device_array(b_first.shape, dtype=b_first.dtype)))


def empty(shape: int | tuple, dtype: np.dtype):
    """An uninitialised device array (no copy)."""
    return cuda.device_array(shape, dtype=np.dtype(dtype))


def params_buffer(n_done: int, diverged: bool) -> int:
    """Index of the buffer holding the parameters to report after ``n_done`` completed epochs.

    Without divergence: those after n_done updates. After divergence at epoch
    n_done: those of epoch n_done - 1, the last whose loss did not diverge
    (those of epoch 0 if it was the first), as ``kernels.cpu.gd`` restores them.
    """
    if diverged and n_done > 0:
        return (n_done - 1) % 2
    return n_done % 2


# --------------------------------------------------------------------------- public wrappers


def _device_inputs(named: dict) -> tuple[dict, np.dtype]:
    """Device views of host or device arrays (host ones copied once), checked like ``kernels.cpu._check``."""
    arrays = {}
    for name, array in named.items():
        if isinstance(array, np.ndarray):
            arrays[name] = to_device(array)
        elif is_device_array(array):
            arrays[name] = as_device_array(array)
        else:
            raise TypeError(f"{name} must be a numpy.ndarray or a CUDA device array, got {type(array).__name__}")
    X, W, b = arrays["X"], arrays["W"], arrays["b"]
    dtype = np.dtype(X.dtype)
    if dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"X must be float32 or float64, got {dtype}")
    expected_ndim = {"X": 2, "Y": 2, "W": 2, "b": 1}
    for name, array in arrays.items():
        if np.dtype(array.dtype) != dtype:
            raise TypeError(f"{name} must have X's dtype {dtype}, got {array.dtype}")
        if array.ndim != expected_ndim[name]:
            raise ValueError(f"{name} must be {expected_ndim[name]}-D, got shape {array.shape}")
    n_samples, n_features = X.shape
    n_outputs = W.shape[0]
    if n_samples < 1 or n_features < 1 or n_outputs < 1:
        raise ValueError(f"need n_samples, n_features, n_outputs >= 1, got X {X.shape} and W {W.shape}")
    if W.shape != (n_outputs, n_features):
        raise ValueError(f"W must have shape (n_outputs, {n_features}) to match X {X.shape}, got {W.shape}")
    if b.shape != (n_outputs,):
        raise ValueError(f"b must have shape ({n_outputs},) to match W {W.shape}, got {b.shape}")
    if "Y" in arrays and arrays["Y"].shape != (n_samples, n_outputs):
        raise ValueError(f"Y must have shape ({n_samples}, {n_outputs}) to match X and W, got {arrays['Y'].shape}")
    return arrays, dtype


def _check_output(name: str, array, shape: tuple, dtype: np.dtype) -> None:
    if array.shape != shape or np.dtype(array.dtype) != dtype:
        raise ValueError(f"{name} must be a {dtype} array of shape {shape}, got {array.shape} {array.dtype}")


def predict(X, W, b, out=None):
    """``X @ W.T + b`` accumulated in float64, stored in X's dtype.

    Written into ``out`` (host or device) when given; otherwise a host result
    for a host X and a device array for a device X (no copy back).
    """
    arrays, dtype = _device_inputs({"X": X, "W": W, "b": b})
    shape = (arrays["X"].shape[0], arrays["W"].shape[0])
    if out is not None:
        _check_output("out", out, shape, dtype)
    device_out = as_device_array(out) if out is not None and not isinstance(out, np.ndarray) else (
        cuda.device_array(shape, dtype=dtype))
    _launch(_predict, _elementwise_blocks(shape[0] * shape[1]), arrays["X"], arrays["W"], arrays["b"], device_out)
    if isinstance(out, np.ndarray):
        return to_host(device_out, out)
    if out is None and isinstance(X, np.ndarray):
        return to_host(device_out)
    return device_out if out is None else out


def loss(X, Y, W, b) -> float:
    """The seeds' mse ``sum((X @ W.T + b - Y)**2) / Y.size``, accumulated in float64 (two launches)."""
    arrays, _ = _device_inputs({"X": X, "Y": Y, "W": W, "b": b})
    n_samples = arrays["X"].shape[0]
    n_blocks, rows_per_block = grid(n_samples)
    parts = cuda.device_array((n_blocks, 1), dtype=np.float64)
    result = cuda.device_array(1, dtype=np.float64)
    _launch(_loss_partials, n_blocks, arrays["X"], arrays["Y"], arrays["W"], arrays["b"], parts, rows_per_block)
    _launch(_finish_loss, 1, parts, n_blocks, n_samples * arrays["W"].shape[0], result)
    return float(to_host(result)[0])


def loss_grad(X, Y, W, b, dW, db, workspace: Workspace | None = None) -> float:
    """One fused pass over X and Y: returns the loss and writes dW and db (X's dtype, host or device arrays)."""
    arrays, dtype = _device_inputs({"X": X, "Y": Y, "W": W, "b": b})
    Xd, Yd, Wd, bd = arrays["X"], arrays["Y"], arrays["W"], arrays["b"]
    _check_output("dW", dW, Wd.shape, dtype)
    _check_output("db", db, bd.shape, dtype)
    work = workspace or Workspace(Xd.shape[0], Xd.shape[1], Wd.shape[0], dtype)
    problem = (Xd.shape[0], Xd.shape[1], Wd.shape[0])
    if work.shape != problem or work.dtype != dtype:
        raise ValueError(f"workspace was made for {work.shape} {work.dtype}, not {problem} {dtype}")
    # Epoch 0 never counts as "after a divergence" (stop_epoch >= 0), so no reset is needed.
    value = cuda.device_array(1, dtype=np.float64)
    work.step(Xd, Yd, Wd, bd, dtype.type(0), Wd, bd, value, 0, False)
    for target, source in ((dW, work.dW), (db, work.db)):
        if isinstance(target, np.ndarray):
            to_host(source, target)
        else:
            as_device_array(target).copy_to_device(source)
    return float(to_host(value)[0])


# --------------------------------------------------------------------------- compile signatures


def kernel_signatures(dtype: np.dtype) -> list[tuple[str, object, tuple]]:
    """``(name, python function, argument types)`` of every kernel as the launchers call it for ``dtype`` data.

    For the compile check (``kernels.report``): C-contiguous arrays (what
    ``to_device`` makes), int64 sizes and epochs (Python ints), lr in the data dtype.
    """
    from numba.core import types

    dtype = np.dtype(dtype)
    value = types.float32 if dtype == np.float32 else types.float64

    def array(ndim: int, element=value, layout: str = "C"):
        return types.Array(element, ndim, layout)

    f64_2d, f64_1d, i64_1d, i64 = array(2, types.float64), array(1, types.float64), array(1, types.int64), types.int64
    partials_args = (array(2), array(2), array(2), array(1), f64_2d, i64, i64, i64, i64, i64_1d)
    entries = [
        ("predict", _predict, (array(2), array(2), array(1), array(2))),
        ("loss_partials", _loss_partials, (array(2), array(2), array(2), array(1), f64_2d, i64)),
        ("finish_loss", _finish_loss, (f64_2d, i64, i64, f64_1d)),
    ]
    for max_features, max_outputs in REGISTER_SHAPES:
        entries.append((f"register_partials_{max_features}x{max_outputs}",
                        _register_partials(max_features, max_outputs), partials_args))
    entries += [
        ("tiled_partials", _tiled_partials, partials_args),
        ("finish_step", _finish_step, (f64_2d, i64, i64, array(2), array(1), value, array(2), array(1), array(2),
                                       array(1), f64_1d, i64, i64_1d, types.boolean)),
        ("first_nonfinite", _first_nonfinite, (array(2), i64_1d)),
        ("fill", _fill, (i64_1d, i64)),
        ("cast_2d", _cast_2d, (array(2, layout="A"), array(2))),
        ("cast_column", _cast_column, (array(1, layout="A"), array(2))),
        ("gather_rows", _gather_rows, (array(2, layout="A"), i64_1d, array(2))),
    ]
    own = [(name, getattr(kernel, "py_func", kernel), argtypes) for name, kernel, argtypes in entries]
    # The other CUDA modules' kernels, so that the compile check and kernels.report cover every kernel.
    from . import cuda_bandwidth, cuda_train

    return own + cuda_train.kernel_signatures(dtype) + cuda_bandwidth.kernel_signatures(dtype)
