"""Backends: where the arithmetic of a fit runs, behind one small interface.

The training loop in ``linreg.estimator`` talks only to :class:`Backend` and
:class:`GDRun`; adding a backend means adding a class here and registering
its name, never touching the loop.

A backend receives validated, C-contiguous host arrays in one float dtype:
``X`` (n_samples, n_features), ``Y`` (n_samples, n_outputs), initial ``W``
(n_outputs, n_features) and ``b`` (n_outputs,).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class GDRun(ABC):
    """Full-batch gradient descent in progress, advanced in blocks of epochs.

    Between blocks the caller may show progress; within a block the backend
    runs without returning to Python (compiled loop or device loop).
    """

    n_done: int = 0
    diverged: bool = False

    @abstractmethod
    def advance(self, n_epochs: int) -> int:
        """Run up to ``n_epochs`` more epochs; return how many completed.

        Fewer than asked means the loss became non-finite: ``diverged`` is set,
        and the parameters are the last ones whose loss was finite.
        """

    @abstractmethod
    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Host copies of ``(W, b, loss_history)``; the history holds every loss computed."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue this run bit-exactly (host arrays); see ``load_state_dict``."""
        raise NotImplementedError(f"{type(self).__name__} does not support checkpoints")

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Continue from ``state`` (from ``state_dict`` of a run with the same data and options)."""
        raise NotImplementedError(f"{type(self).__name__} does not support checkpoints")


def _copy_history(target: np.ndarray, history: np.ndarray) -> None:
    if history.shape[0] > target.shape[0]:
        raise ValueError(f"the checkpoint has {history.shape[0]} epochs done, more than this fit's epochs "
                         f"({target.shape[0]})")
    target[: history.shape[0]] = history


class Backend(ABC):
    name: str

    @abstractmethod
    def start_gd(self, X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray, lr: float,
                 epochs: int) -> GDRun:
        """Take the data (one copy to where the backend computes) and return a run of ``epochs`` epochs."""

    @abstractmethod
    def predict(self, X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``X @ W.T + b`` as a host array of X's dtype."""


class _CpuRun(GDRun):
    def __init__(self, X, Y, W, b, lr, epochs):
        from kernels import cpu

        self._cpu = cpu
        self.X, self.Y, self.W, self.b, self.lr = X, Y, W.copy(), b.copy(), lr
        self.loss_history = np.zeros(epochs)
        self.workspace = cpu.Workspace(X.shape[0], X.shape[1], W.shape[0], X.dtype)

    def advance(self, n_epochs):
        stop = min(self.n_done + n_epochs, self.loss_history.shape[0])
        done = self._cpu.gd(self.X, self.Y, self.W, self.b, self.lr, self.loss_history,
                            self.n_done, stop, self.workspace)
        if done < stop - self.n_done:
            self.diverged = True
            self.n_history = self.n_done + done + 1  # the non-finite loss is recorded too
        self.n_done += done
        return done

    def result(self):
        n_history = getattr(self, "n_history", self.n_done)
        return self.W.copy(), self.b.copy(), self.loss_history[:n_history].copy()

    def state_dict(self):
        return {"W": self.W.copy(), "b": self.b.copy(), "loss_history": self.loss_history[: self.n_done].copy()}

    def load_state_dict(self, state):
        self.W[:], self.b[:] = state["W"], state["b"]
        _copy_history(self.loss_history, state["loss_history"])
        self.n_done = int(state["loss_history"].shape[0])


class CpuBackend(Backend):
    """Our parallel Numba CPU kernels (``kernels.cpu``)."""

    name = "cpu"

    def start_gd(self, X, Y, W, b, lr, epochs):
        return _CpuRun(X, Y, W, b, lr, epochs)

    def predict(self, X, W, b):
        from kernels import cpu

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

    def result(self):
        W, b = self.loop.params()
        return W, b, np.asarray(self.loop.history, dtype=np.float64)

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


# Defined after Backend and GDRun, which it subclasses; importing it does not import numba.cuda.
from linreg.cuda_backend import CudaBackend  # noqa: E402

BACKENDS: dict[str, type[Backend]] = {"cpu": CpuBackend, "torch": TorchBackend, "cuda": CudaBackend}


def get_backend(name: str) -> Backend:
    """The backend registered under ``name``."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {name!r}")
    return BACKENDS[name]()
