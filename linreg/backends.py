"""Backends: where the arithmetic of a fit runs, behind one small interface.

The training loop in ``linreg.estimator`` talks only to :class:`Backend` and
:class:`GDRun`; adding a backend means adding a class here and registering
its name, never touching the loop.

A backend receives validated, C-contiguous host arrays in one float dtype:
``X`` (n_samples, n_features), ``Y`` (n_samples, n_outputs), initial ``W``
(n_outputs, n_features) and ``b`` (n_outputs,).
"""

from __future__ import annotations

import numpy as np

from linreg.cuda_backend import CudaBackend
from linreg.runs import Backend, GDRun, copy_history


class _CpuRun(GDRun):
    def __init__(self, X, Y, W, b, lr, epochs):
        from linreg import aot

        self.X, self.Y, self.W, self.b, self.lr = X, Y, W.copy(), b.copy(), lr
        self.loss_history = np.zeros(epochs)
        # The ahead-of-time compiled loop where one is built for this variant (no numba import), else the JIT one.
        self._cpu = aot.gd_kernel(X, Y, self.W, self.b)
        if self._cpu is None:
            from linreg.kernels import cpu

            self._cpu = cpu
            self.workspace = cpu.Workspace(X.shape[0], X.shape[1], W.shape[0], X.dtype)
        else:
            self.workspace = self._cpu.workspace

    def advance(self, n_epochs):
        stop = min(self.n_done + n_epochs, self.loss_history.shape[0])
        done = self._cpu.gd(self.X, self.Y, self.W, self.b, self.lr, self.loss_history,
                            self.n_done, stop, self.workspace)
        if done < stop - self.n_done:
            self.diverged = True  # _gd_epochs recorded the diverging loss at n_done + done
        self.n_done += done
        return done

    def parameters(self):
        return self.W.copy(), self.b.copy()

    def history(self, n):
        return self.loss_history[:n].copy()

    def state_dict(self):
        return {"W": self.W.copy(), "b": self.b.copy(), "loss_history": self.loss_history[: self.n_done].copy()}

    def load_state_dict(self, state):
        self.W[:], self.b[:] = state["W"], state["b"]
        copy_history(self.loss_history, state["loss_history"])
        self.n_done = int(state["loss_history"].shape[0])


class CpuBackend(Backend):
    """Our parallel Numba CPU kernels (``kernels.cpu``)."""

    name = "cpu"

    def start_gd(self, X, Y, W, b, lr, epochs):
        return _CpuRun(X, Y, W, b, lr, epochs)

    def predict(self, X, W, b):
        from linreg.kernels import cpu

        return cpu.predict(np.ascontiguousarray(X), W.astype(X.dtype), b.astype(X.dtype))


class _TorchRun(GDRun):
    def __init__(self, X, Y, W, b, lr, epochs):
        from linreg.oracle import SeedLoop

        self.loop = SeedLoop(X, Y, W, b, lr)

    def advance(self, n_epochs):
        done = self.loop.advance(n_epochs)
        self.n_done += done
        self.diverged = self.loop.diverged
        return done

    def parameters(self):
        return self.loop.params()

    def history(self, n):
        return np.asarray(self.loop.history[:n], dtype=np.float64)

    def state_dict(self):
        W, b = self.loop.params()
        return {"W": W, "b": b, "loss_history": np.asarray(self.loop.history, dtype=np.float64)}

    def load_state_dict(self, state):
        import torch

        with torch.no_grad():
            self.loop.w.copy_(torch.from_numpy(state["W"]))
            self.loop.b.copy_(torch.from_numpy(state["b"]))
        self.loop.history = [float(v) for v in state["loss_history"]]
        self.n_done = len(self.loop.history)


class TorchBackend(Backend):
    """The seeds' torch autograd loop (``linreg.oracle.SeedLoop``): the reference, not the fast path."""

    name = "torch"

    def start_gd(self, X, Y, W, b, lr, epochs):
        return _TorchRun(X, Y, W, b, lr, epochs)

    def predict(self, X, W, b):
        import torch

        from linreg.oracle import model

        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(W.astype(X.dtype)),
                         torch.from_numpy(b.astype(X.dtype))).numpy()


BACKENDS: dict[str, type[Backend]] = {"cpu": CpuBackend, "torch": TorchBackend, "cuda": CudaBackend}


def get_backend(name: str) -> Backend:
    """The backend registered under ``name``."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {name!r}")
    return BACKENDS[name]()
