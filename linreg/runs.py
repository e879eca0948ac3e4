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

#: Why a run stopped: the codes the compiled loops write (``kernels.cpu_train.STOP_*``) and their names.
STOP_REASONS = {0: "epochs", 1: "tol", 2: "early_stopping", 3: "adaptive", 4: "diverged", 5: "interrupted"}
RUNNING, DIVERGED, INTERRUPTED = 0, 4, 5


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
