"""The device's memory bandwidth, measured by a copy kernel: the roofline of a streaming epoch on the GPU.

Shapes::

    source, target   (n,) float32, on the device

Formula: ``target[k] = source[k]`` for every k; bandwidth = bytes read + bytes
written (2 * n * 4) over the kernel's device time (CUDA events), best of
several rounds. A training epoch only reads X and Y, so its achieved GB/s
(bytes of X and Y over the epoch time) is compared with this copy figure.

Parallel strategy: a grid-stride loop, one element per thread per step, so
consecutive threads touch consecutive addresses (coalesced). Every element has
one writer: no races, no reduction.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

#: Threads per block and blocks per SM of the copy: enough loads in flight to saturate HBM.
COPY_THREADS = 256
COPY_BLOCKS_PER_SM = 32


@cuda.jit(cache=True)
def _copy(source, target):
    """target[k] = source[k], grid-stride."""
    for k in range(cuda.grid(1), source.shape[0], cuda.gridsize(1)):
        target[k] = source[k]


def copy_blocks(n_items: int, n_sms: int) -> int:
    """Blocks of the copy launch: COPY_BLOCKS_PER_SM per SM, never more than the items need."""
    return max(1, min(n_sms * COPY_BLOCKS_PER_SM, math.ceil(n_items / COPY_THREADS)))


def device_bandwidth(nbytes: int = 1 << 30, rounds: int = 20) -> dict:
    """Copy bandwidth of the current GPU in GB/s (read + write bytes / device time), best and median round.

    ``nbytes`` is the size of each of the two buffers. Needs a real GPU: the
    simulator has no event timing, and simulated times mean nothing.
    """
    from numba.cuda.core import config

    if config.ENABLE_CUDASIM:
        raise RuntimeError("device_bandwidth needs a real GPU: the CUDA simulator's timings mean nothing")
    n = max(1, nbytes // 4)
    source = cuda.device_array(n, dtype=np.float32)
    target = cuda.device_array(n, dtype=np.float32)
    device = cuda.get_current_device()
    blocks = copy_blocks(n, device.MULTIPROCESSOR_COUNT)
    _copy[blocks, COPY_THREADS](source, target)  # compile and warm up, untimed
    cuda.synchronize()
    seconds = []
    for _ in range(rounds):
        start, stop = cuda.event(), cuda.event()
        start.record()
        _copy[blocks, COPY_THREADS](source, target)
        stop.record()
        stop.synchronize()
        seconds.append(cuda.event_elapsed_time(start, stop) / 1e3)
    moved = 2 * n * 4
    return {"buffer bytes": n * 4, "bytes moved per round": moved, "GB/s": moved / min(seconds) / 1e9,
            "median GB/s": moved / float(np.median(seconds)) / 1e9, "rounds": rounds, "blocks": blocks,
            "threads per block": COPY_THREADS}


def kernel_signatures(dtype: np.dtype) -> list[tuple[str, object, tuple]]:
    """``(name, python function, argument types)`` for the compile check (``kernels.report``).

    The copy moves float32 whatever the data dtype (it measures the memory, not the arithmetic).
    """
    from numba.core import types

    f32 = types.Array(types.float32, 1, "C")
    return [("bandwidth_copy", _copy.py_func, (f32, f32))]
