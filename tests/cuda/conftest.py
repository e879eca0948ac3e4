"""CUDA test configuration: the simulator (NUMBA_ENABLE_CUDASIM=1) or a real GPU (LINREG_TEST_GPU=1), nothing else.

Run as ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda``: the variable
must be set before numba is imported, which is why this suite has its own
process. Without either variable this conftest stops the run instead of
letting the tests skip or silently hit a missing driver.
"""

import os
import sys
import threading

import numpy as np
import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
GPU = os.environ.get("LINREG_TEST_GPU") == "1"

if not (SIMULATOR or GPU):
    raise pytest.UsageError(
        "tests/cuda needs the CUDA simulator or a GPU: run NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda "
        "(the variable must be set before numba is imported), or set LINREG_TEST_GPU=1 on a machine with a GPU."
    )

import numba  # noqa: E402  (after the environment check above)
from numba import cuda  # noqa: E402

if SIMULATOR and not numba.config.ENABLE_CUDASIM:
    raise pytest.UsageError("NUMBA_ENABLE_CUDASIM=1 was set after numba was imported; set it in the environment")
if GPU and not SIMULATOR and not cuda.is_available():
    raise pytest.UsageError("LINREG_TEST_GPU=1 but numba.cuda finds no usable GPU")

from cuda_helpers import kernel_name  # noqa: E402

if SIMULATOR:
    from numba.cuda.simulator import kernelapi

    # Simulator bug (numba-cuda 0.30.4): FakeCUDAShared.array looks up, then creates, the
    # block's array for a source line without a lock, so two threads arriving together can
    # each get their own "shared" array and a block reduction silently loses partial sums
    # (seen here: a wrong loss in ~1 run of 3). Same lookup, same key, made atomic.
    _shared_lock = threading.Lock()
    _original_shared_array = kernelapi.FakeCUDAShared.array

    def _atomic_shared_array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:  # paths this project does not use: unchanged
            return _original_shared_array(self, shape, dtype, alignment)
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)  # the kernel line calling cuda.shared.array, as the original keys it
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with _shared_lock:
            array = self._allocations.get(caller)
            if array is None:
                array = self._allocations[caller] = np.empty(shape, dtype)
        return array

    kernelapi.FakeCUDAShared.array = _atomic_shared_array

    # The simulator runs each CUDA thread as a Python thread and a manager polls them at
    # every syncthreads; with Python's default 5 ms GIL switch interval each barrier
    # costs milliseconds. 20 us made the suite ~10x faster and changes no result.
    sys.setswitchinterval(2e-5)

from linreg import backends  # noqa: E402
from linreg.cuda_backend import CudaBackend  # noqa: E402
from linreg.kernels import cuda as cuda_kernels  # noqa: E402

#: The patched launch geometry: 4 threads and >= 4 rows per block, at most 3 blocks,
#: 3 x 2 residual tiles. n_samples 1, 3, 4, 5, 8, 12, 14 then cover one partial block,
#: bs - 1, bs, bs + 1, several blocks, and the MAX_BLOCKS cap (5 rows per block, 2 rows a thread).
SMALL_GRID = {"THREADS_PER_BLOCK": 4, "ROWS_PER_BLOCK": 4, "MAX_BLOCKS": 3, "TILE_ROWS": 3, "TILE_OUTPUTS": 2}


@pytest.fixture(autouse=True)
def cuda_backend_registered(monkeypatch):
    """backend="cuda" for the estimator, whether or not linreg.backends registers it yet."""
    monkeypatch.setitem(backends.BACKENDS, "cuda", CudaBackend)


@pytest.fixture
def small_grid(monkeypatch):
    """Small blocks, so that tiny simulated problems cross block and tile boundaries."""
    for name, value in SMALL_GRID.items():
        monkeypatch.setattr(cuda_kernels, name, value)
    return SMALL_GRID


class Transfers:
    """Every host-to-device and device-to-host copy and every kernel launch, recorded while active."""

    def __init__(self):
        self.to_device: list[int] = []   # nbytes of each host -> device copy
        self.to_host: list[int] = []     # nbytes of each device -> host copy
        self.launches: list[str] = []    # kernel name of each launch

    def clear(self):
        self.to_device.clear()
        self.to_host.clear()
        self.launches.clear()


@pytest.fixture
def transfers(monkeypatch):
    """Count copies at numba's level (``cuda.to_device``, ``copy_to_host``, ``copy_to_device`` from the host)
    and launches at ``kernels.cuda._launch``, through which every launch goes."""
    record = Transfers()
    device_array_type = type(cuda.device_array(1))
    to_device, copy_to_host, copy_to_device = cuda.to_device, device_array_type.copy_to_host, \
        device_array_type.copy_to_device

    def counting_to_device(array, *args, **kwargs):
        record.to_device.append(np.asarray(array).nbytes)
        return to_device(array, *args, **kwargs)

    def counting_copy_to_host(self, *args, **kwargs):
        record.to_host.append(self.nbytes)
        return copy_to_host(self, *args, **kwargs)

    def counting_copy_to_device(self, source, *args, **kwargs):
        if isinstance(source, np.ndarray):
            record.to_device.append(source.nbytes)
        return copy_to_device(self, source, *args, **kwargs)

    launch = cuda_kernels._launch

    def counting_launch(kernel, n_blocks, *args, **kwargs):
        record.launches.append(kernel_name(kernel))
        return launch(kernel, n_blocks, *args, **kwargs)

    monkeypatch.setattr(cuda, "to_device", counting_to_device)
    monkeypatch.setattr(device_array_type, "copy_to_host", counting_copy_to_host)
    monkeypatch.setattr(device_array_type, "copy_to_device", counting_copy_to_device)
    monkeypatch.setattr(cuda_kernels, "_launch", counting_launch)
    return record
