"""Full-batch gradient descent on small specialised problems, compiled ahead of time (``numba.pycc``).

Shapes as in ``kernels.cpu``: X (n_samples, n_features), Y (n_samples, 1),
W (1, n_features), b (1,), C-contiguous, float32 or float64; n_features <= 8 and
the problem small enough for the transposed loop (``layout.use_transposed``):
seed 000's 5000x5 fit and every problem of its kind.

The exported functions are ``kernels.cpu._gd_epochs_transposed`` itself, one per
(dtype, n_features), built for the host CPU: the same source, the same chunk layout
(``kernels.layout``), the same LLVM with the same CPU features, so the bits equal the
JIT kernel's (tests/aot checks it). That loop is serial already (a parallel pass is
never transposed), so pycc's lack of ``parallel=True`` costs nothing.

Importing this module and running ``gd`` never imports numba: that is the point (a
new process's first fit is then NumPy's import plus milliseconds). ``export`` (the
build) imports numba and is only called by ``linreg.aot.build``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import layout

DTYPES = ("float32", "float64")


def symbol(dtype: Any, n_features: int) -> str:
    """The exported function's name for one variant."""
    return f"gd_transposed_{np.dtype(dtype).name}_{n_features}"


def serves(X: np.ndarray, Y: np.ndarray, parallel: bool) -> bool:
    """Whether an AOT variant computes full-batch GD on (X, Y): the transposed loop's problems, with the exact
    types the library was built for (pycc's wrappers do not check layouts: this does)."""
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0] or X.shape[0] < 1 or X.shape[1] < 1:
        return False
    return (X.dtype.name in DTYPES and Y.dtype == X.dtype and X.flags.c_contiguous and Y.flags.c_contiguous
            and layout.use_transposed(X.shape[0], X.shape[1], Y.shape[1], parallel))


def parameters_fit(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> bool:
    """Whether W (1, n_features) and b (1,) are the writable, C-contiguous arrays of X's dtype the library takes."""
    return (isinstance(W, np.ndarray) and isinstance(b, np.ndarray) and W.dtype == X.dtype and b.dtype == X.dtype
            and W.shape == (1, X.shape[1]) and b.shape == (1,) and W.flags.c_contiguous and b.flags.c_contiguous
            and W.flags.writeable and b.flags.writeable)


class Workspace:
    """The transposed loop's scratch (``kernels.cpu.Workspace``'s buffers that it uses), reused across calls."""

    def __init__(self, n_samples: int, n_features: int, dtype: np.dtype, chunk_rows: int, n_chunks: int) -> None:
        self.shape = (n_samples, n_features, 1)
        self.chunk_rows, self.n_chunks = chunk_rows, n_chunks
        self.dW_parts = np.zeros((n_chunks, 1, n_features))
        self.db_parts = np.zeros((n_chunks, 1))
        self.loss_parts = np.zeros(n_chunks)
        self.dW = np.zeros((1, n_features), dtype=dtype)
        self.db = np.zeros(1, dtype=dtype)
        self.zeros = (0.0,) * n_features  # the compile-time feature count, as kernels.cpu.gd passes it
        # The parameters before the last update, kept across calls to restore on divergence (as cpu.gd).
        self.W_prev: np.ndarray | None = None
        self.b_prev: np.ndarray | None = None


def gd(function, X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray, lr: float, loss_history: np.ndarray,
       start: int, stop: int, workspace: Workspace) -> int:
    """``kernels.cpu.gd`` on the transposed path through the AOT ``function``: epochs [start, stop), W and b
    updated in place; returns the epochs completed (fewer: the loss diverged). Arrays as ``serves`` and
    ``parameters_fit`` accept."""
    if not (0 <= start <= stop <= loss_history.shape[0]) or loss_history.dtype != np.float64:
        raise ValueError(f"need 0 <= start <= stop <= len(loss_history) and a float64 history, got {start}, "
                         f"{stop}, {loss_history.shape[0]} {loss_history.dtype}")
    work = workspace
    if work.W_prev is None:
        work.W_prev, work.b_prev = W.copy(), b.copy()
    return int(function(X, Y, W, b, X.dtype.type(lr), loss_history, start, stop, work.dW, work.db, work.W_prev,
                        work.b_prev, work.chunk_rows, work.n_chunks, work.dW_parts, work.db_parts,
                        work.loss_parts, work.zeros))


def export(cc, dtype: str, n_features: int) -> None:
    """Add one variant (``symbol(dtype, n_features)``) to the ``numba.pycc.CC`` module ``cc``: imports numba."""
    from numba import types

    from . import cpu

    scalar = getattr(types, dtype)
    readable = types.Array(scalar, 2, "C", readonly=True)  # X and Y: the user's arrays may be read-only
    matrix = types.Array(scalar, 2, "C")
    vector = types.Array(scalar, 1, "C")
    float64 = types.float64
    signature = types.int64(
        readable, readable, matrix, vector, scalar, types.Array(float64, 1, "C"), types.int64, types.int64,
        matrix, vector, matrix, vector, types.int64, types.int64, types.Array(float64, 3, "C"),
        types.Array(float64, 2, "C"), types.Array(float64, 1, "C"), types.UniTuple(float64, n_features))
    loop = cpu._gd_epochs_transposed

    # pycc compiles a Python function: this one calls the JIT kernel, which is compiled with its own options
    # (fastmath) and linked in, so the exported code is the JIT kernel's.
    def gd_transposed(X, Y, W, b, lr, loss_history, start, stop, dW, db, W_prev, b_prev, chunk_rows, n_chunks,
                      dW_parts, db_parts, loss_parts, zeros):
        return loop(X, Y, W, b, lr, loss_history, start, stop, dW, db, W_prev, b_prev, chunk_rows, n_chunks,
                    dW_parts, db_parts, loss_parts, zeros)

    cc.export(symbol(dtype, n_features), signature)(gd_transposed)
