"""The run interface: what the driver asks of every source of training steps.

A *run* is training in progress, advanced in blocks of epochs by the driver
(``linreg.driver``); between blocks the driver shows progress, notices Ctrl-C
and writes checkpoints; within a block the run never returns to Python
(compiled loop, device loop) unless its source is a Python loop over chunks.
A *backend* is where the arithmetic of plain full-batch gradient descent runs
(``linreg.backends``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from linreg.kernels.codes import RUNNING, STOP_DIVERGED  # plain constants: no numba import


class GDRun(ABC):
    """Training in progress, advanced in blocks of epochs by the driver (``linreg.driver.run_blocks``).

    A run implements ``advance``, ``parameters`` and ``history``; the rest has
    defaults that fit runs without stopping rules or validation.
    """

    n_done: int = 0
    diverged: bool = False

    @abstractmethod
    def advance(self, n_epochs: int) -> int:
        """Run up to ``n_epochs`` more epochs; return how many completed.

        Fewer than asked means a stopping rule ended the run (``stop_code``) or the
        loss diverged: then ``diverged`` is set, and the parameters are the last ones
        whose loss was finite.
        """

    @abstractmethod
    def parameters(self) -> tuple[np.ndarray, np.ndarray]:
        """Host copies of ``(W, b)`` in original units."""

    @abstractmethod
    def history(self, n: int) -> np.ndarray:
        """A host copy of the first ``n`` losses computed (float64)."""

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(W, b, loss_history)``; after a divergence the history ends with the diverging loss."""
        W, b = self.parameters()
        return W, b, self.history(self.n_done + int(self.diverged))

    @property
    def stop_code(self) -> int:
        """Why the run stopped, a ``linreg.kernels.codes`` code (RUNNING while it may go on)."""
        return STOP_DIVERGED if self.diverged else RUNNING

    def best_result(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(W, b)`` with the best validation loss, for runs that validate (early stopping); else None."""
        return None

    def validation_history(self) -> np.ndarray | None:
        """The validation loss of each completed epoch, for runs that validate; else None."""
        return None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue this run bit-exactly (host arrays); see ``load_state_dict``."""
        raise NotImplementedError(f"{type(self).__name__} does not support checkpoints")

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Continue from ``state`` (from ``state_dict`` of a run with the same data and options)."""
        raise NotImplementedError(f"{type(self).__name__} does not support checkpoints")


def copy_history(target: np.ndarray, history: np.ndarray) -> None:
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
