"""The "cuda" backend: the seeds' full-batch gradient descent on the GPU, on ``kernels.cuda``.

Data goes to the device once per fit, or is used where it already is: numba
device arrays and anything exposing ``__cuda_array_interface__`` (torch CUDA
tensors, CuPy arrays) are viewed without a copy. Parameters, scratch and the
loss history stay on the device; ``advance(n)`` launches two kernels per epoch
and synchronises once, at its end. Results match ``backend="cpu"`` within
``linreg.testing``'s "trajectory" tolerance (the reductions add in another,
equally fixed, order).

Importing this module does not import numba.cuda; constructing the backend
does, and raises :class:`CudaUnavailableError` naming what is missing (the
numba-cuda package, a driver, a GPU, the CUDA toolkit libraries).

Device data is validated on the device (``check_device_X_y``): shapes and
dtypes from the array's metadata, finiteness by a reduction kernel, so
nothing is copied to the host unless an error needs the offending value.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np

from linreg import _validation as check
from linreg.runs import Backend, GDRun

_HINT = ("Use backend='cpu' (our parallel CPU kernels, same results); to run the CUDA kernels without a GPU, "
         "set NUMBA_ENABLE_CUDASIM=1 before numba is imported (the simulator: slow, for testing).")


class CudaUnavailableError(RuntimeError):
    """backend="cuda" cannot run in this process; the message says what is missing and what to use instead."""


def _kernels():
    """``kernels.cuda``, or CudaUnavailableError if numba-cuda cannot be imported."""
    # Without numba-cuda, `import numba.cuda` still finds numba's own deprecated CUDA module, which
    # lacks what kernels.cuda needs: look for the package itself.
    if importlib.util.find_spec("numba_cuda") is None:
        raise CudaUnavailableError("backend='cuda' needs the numba-cuda package, which is not installed: "
                                   f"pip install 'numba-linreg[cuda]'. {_HINT}")
    try:
        cuda_kernels = importlib.import_module("linreg.kernels.cuda")
    except ImportError as error:
        raise CudaUnavailableError(
            f"backend='cuda' needs the numba-cuda package, which failed to import ({error}); "
            f"install it with pip install 'numba-linreg[cuda]'. {_HINT}"
        ) from error
    return cuda_kernels


def require_cuda():
    """``kernels.cuda`` if its kernels can run here (a GPU with driver and toolkit, or the simulator)."""
    cuda_kernels = _kernels()
    reason = cuda_kernels.unavailable_reason()
    if reason is not None:
        raise CudaUnavailableError(f"backend='cuda' cannot run here: {reason}. {_HINT}")
    return cuda_kernels


def is_device_data(*arrays: Any) -> bool:
    """True if any argument is GPU data (without importing numba.cuda for plain host data)."""
    for array in arrays:
        if isinstance(array, np.ndarray) or array is None:
            continue
        if hasattr(array, "__cuda_array_interface__") or getattr(array, "__cuda_ndarray__", False):
            return True
    return False


# --------------------------------------------------------------------------- device-side validation


def _float_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """The compute dtype for device data of ``dtype``: the host rules of ``_validation.as_float_array``."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iub" or (dtype.kind == "f" and dtype.itemsize < 4):
        return np.dtype(np.float32)
    if dtype in check.FLOAT_DTYPES:
        return dtype
    raise TypeError(f"{name} must be float32 or float64 (or integer), got {dtype}")


def _device_view(array: Any, name: str, cuda_kernels):
    """A device view of ``array``; host data is validated on the host (as the cpu backend does) and copied once."""
    if is_device_data(array):
        return cuda_kernels.as_device_array(array)
    host = check.as_float_array(array, name)
    if host.ndim in (1, 2):
        check.check_finite(host.reshape(host.shape[0], -1) if host.ndim == 1 else host, name)
    return cuda_kernels.to_device(host)


def _check_device_finite(array, name: str, cuda_kernels) -> None:
    where = cuda_kernels.first_nonfinite(array)
    if where is not None:
        row, column = where
        value = float(array[row, column])  # one element crosses, on the error path only
        position = f"row {row}" + (f", column {column}" if array.shape[1] > 1 else "")
        raise ValueError(f"{name} contains {value} at {position}; remove or impute non-finite values")


def check_device_X(X: Any, *, name: str = "X"):
    """``_validation.check_X`` for GPU data: a 2-D, non-empty, finite float device array, without a host copy."""
    cuda_kernels = require_cuda()
    device = _device_view(X, name, cuda_kernels)
    check.check_X_shape(tuple(device.shape), name)
    dtype = _float_dtype(device.dtype, name)
    if dtype != device.dtype:
        device = cuda_kernels.cast(device, dtype)  # integer or float16 data: converted on the device
    _check_device_finite(device, name, cuda_kernels)
    return device


def check_device_X_y(X: Any, y: Any):
    """``_validation.check_X_y`` for GPU data: ``(X, Y)`` device arrays, Y 2-D, one float dtype, finite.

    Either argument may also be host data (validated on the host, copied once).
    Promotion to a common dtype, integer data and a strided 1-D y are handled
    by device-side copies; data already in the right form is viewed, not copied.
    """
    cuda_kernels = require_cuda()
    X_device = check_device_X(X)
    y_device = _device_view(y, "y", cuda_kernels)
    shape = tuple(y_device.shape)
    check.check_y_shape(shape, tuple(X_device.shape))
    dtype = np.promote_types(X_device.dtype, _float_dtype(y_device.dtype, "y"))
    if y_device.ndim == 1:
        contiguous = y_device.strides[0] == y_device.dtype.itemsize
        if y_device.dtype == dtype and contiguous:
            Y_device = y_device.reshape(shape[0], 1)
        else:
            Y_device = cuda_kernels.cast(y_device, dtype)  # a contiguous (n_samples, 1) column
    else:
        Y_device = y_device if y_device.dtype == dtype else cuda_kernels.cast(y_device, dtype)
    _check_device_finite(Y_device, "y", cuda_kernels)
    if X_device.dtype != dtype:
        X_device = cuda_kernels.cast(X_device, dtype)
    return X_device, Y_device


def check_device_sample_weight(sample_weight: Any, n_samples: int):
    """``_validation.check_sample_weight`` for GPU weights: (float64 host copy, float64 device array) or (None, None).

    The weights (8 bytes a row, a fraction 1/n_features of X) are copied to the host once and checked by the
    host rule (finite, non-negative, not all zero; the validation split and checkpoints use that copy too);
    the kernels read the device array in place when it is contiguous float64, else a converted copy.
    """
    if sample_weight is None:
        return None, None
    cuda_kernels = require_cuda()
    if not is_device_data(sample_weight):
        weights = check.check_sample_weight(sample_weight, n_samples)
        return weights, cuda_kernels.to_device(weights)
    device = cuda_kernels.as_device_array(sample_weight)
    if tuple(device.shape) != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got {tuple(device.shape)}")
    weights = check.check_sample_weight(cuda_kernels.to_host(device), n_samples)
    in_place = np.dtype(device.dtype) == np.float64 and device.strides[0] == 8
    return weights, device if in_place else cuda_kernels.to_device(weights)


# --------------------------------------------------------------------------- the backend


class _CudaRun(GDRun):
    """Gradient descent on the device: epoch e's parameters live in buffer e % 2 (``kernels.cuda.gd``)."""

    def __init__(self, X, Y, W: np.ndarray, b: np.ndarray, lr: float, epochs: int) -> None:
        cuda_kernels = require_cuda()
        self._kernels = cuda_kernels
        # The fit's one copy of the data, unless it is on the device already.
        self.X = cuda_kernels.as_device_array(X) if is_device_data(X) else cuda_kernels.to_device(X)
        self.Y = cuda_kernels.as_device_array(Y) if is_device_data(Y) else cuda_kernels.to_device(Y)
        dtype = np.dtype(self.X.dtype)
        n_samples, n_features = self.X.shape
        self.W_buffers, self.b_buffers = cuda_kernels.param_buffers(np.asarray(W, dtype=dtype),
                                                                    np.asarray(b, dtype=dtype))
        self.workspace = cuda_kernels.Workspace(n_samples, n_features, W.shape[0], dtype)
        self.loss_history = cuda_kernels.empty(epochs, np.float64)
        self.epochs, self.lr = epochs, lr

    def advance(self, n_epochs: int) -> int:
        if self.diverged:
            return 0
        stop = min(self.n_done + n_epochs, self.epochs)
        done = self._kernels.gd(self.X, self.Y, self.W_buffers, self.b_buffers, self.lr, self.loss_history,
                                self.n_done, stop, self.workspace)
        if done < stop - self.n_done:
            self.diverged = True
        self.n_done += done
        return done

    def parameters(self) -> tuple[np.ndarray, np.ndarray]:
        index = self._kernels.params_buffer(self.n_done, self.diverged)
        return self._kernels.to_host(self.W_buffers[index]), self._kernels.to_host(self.b_buffers[index])

    def history(self, n: int) -> np.ndarray:
        return self._kernels.to_host(self.loss_history[:n]) if n else np.zeros(0)

    def state_dict(self) -> dict[str, np.ndarray]:
        W, b, history = self.result()
        return {"W": W, "b": b, "loss_history": history[: self.n_done]}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Continue from a checkpoint: its parameters go to the buffer epoch n reads, its history before it.

        Both buffers get the checkpoint's parameters, so a divergence at the
        first resumed epoch keeps them, as the CPU run does after a resume.
        """
        history = np.asarray(state["loss_history"], dtype=np.float64)
        n_done = int(history.shape[0])
        if n_done > self.epochs:
            raise ValueError(f"the checkpoint has {n_done} epochs done, more than this fit's epochs ({self.epochs})")
        dtype = np.dtype(self.X.dtype)
        for buffers, value in ((self.W_buffers, state["W"]), (self.b_buffers, state["b"])):
            host = np.ascontiguousarray(value, dtype=dtype)
            if host.shape != tuple(buffers[0].shape):
                raise ValueError(f"the checkpoint's parameters have shape {host.shape}, this run {buffers[0].shape}")
            for buffer in buffers:
                buffer.copy_to_device(host)
        if n_done:
            self.loss_history[:n_done].copy_to_device(history)
        self.workspace.reset()
        self.n_done, self.diverged = n_done, False


class CudaBackend(Backend):
    """Our numba-cuda kernels (``kernels.cuda``): the whole training loop on the GPU."""

    name = "cuda"

    def __init__(self) -> None:
        self._kernels = require_cuda()

    def start_gd(self, X, Y, W, b, lr, epochs):
        return _CudaRun(X, Y, W, b, lr, epochs)

    def predict(self, X, W, b):
        cuda_kernels = self._kernels
        if is_device_data(X):
            device_X = cuda_kernels.as_device_array(X)
            dtype = np.dtype(device_X.dtype)
            return cuda_kernels.to_host(cuda_kernels.predict(device_X, np.asarray(W, dtype), np.asarray(b, dtype)))
        X = np.ascontiguousarray(X)
        return cuda_kernels.predict(X, W.astype(X.dtype), b.astype(X.dtype))
