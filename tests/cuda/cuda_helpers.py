"""Helpers of the CUDA tests that work the same under the simulator and on a GPU."""

import os

import numpy as np
from numba import cuda

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def kernel_name(kernel) -> str:
    function = getattr(kernel, "py_func", None) or getattr(kernel, "fn", None) or kernel
    return function.__name__.lstrip("_")


class InterfaceOnly:
    """A foreign GPU array (like a torch CUDA tensor or a CuPy array): only ``__cuda_array_interface__``.

    Under the simulator device memory is host memory, so the interface points
    at a NumPy array's buffer; on a GPU at a numba device array's.
    """

    def __init__(self, host: np.ndarray):
        if SIMULATOR:
            self._owner = host
            interface = dict(host.__array_interface__)
        else:
            self._owner = cuda.to_device(host)
            interface = dict(self._owner.__cuda_array_interface__)
        interface.setdefault("strides", None)
        interface["version"] = 3
        self.__cuda_array_interface__ = interface


def data_pointer(device_array) -> int:
    """Address of a device array's first element (host address under the simulator)."""
    if SIMULATOR:
        return device_array._ary.__array_interface__["data"][0]
    return device_array.__cuda_array_interface__["data"][0]
