"""The torch autograd reference: the seeds' expressions, written once, evaluated by torch.

This is the oracle the kernels are tested against and the baseline the
benchmarks time. It imports torch, so nothing on the training path of the
"cpu" or "cuda" backends imports this module.
"""

from __future__ import annotations

import numpy as np

from linreg.kernels.cpu import is_divergent


def _torch():
    try:
        import torch
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the torch oracle needs PyTorch: pip install torch==2.13.0 (CPU build), "
            "or pip install 'numba-linreg[test]'"
        ) from error
    return torch


def mse(t1, t2):
    """Exactly the seeds' loss function."""
    torch = _torch()
    diff = t1 - t2
    return torch.sum(diff * diff) / diff.numel()


def model(x, w, b):
    """Exactly the seeds' model: ``x @ w.t() + b``."""
    return x @ w.t() + b


def loss_grad(X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray,
              dtype: np.dtype | type | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss and autograd gradients ``(loss, dW, db)`` for one step, in ``dtype`` (default: X's dtype)."""
    torch = _torch()
    dtype = np.dtype(dtype or X.dtype)
    tdtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[dtype]
    x = torch.tensor(np.asarray(X), dtype=tdtype)
    y = torch.tensor(np.asarray(Y), dtype=tdtype)
    w = torch.tensor(np.asarray(W), dtype=tdtype, requires_grad=True)
    bias = torch.tensor(np.asarray(b), dtype=tdtype, requires_grad=True)
    loss = mse(model(x, w, bias), y)
    loss.backward()
    return float(loss.item()), w.grad.numpy().astype(dtype), bias.grad.numpy().astype(dtype)


class SeedLoop:
    """The seeds' whole training loop, resumable in blocks of epochs.

    ``advance(k)`` runs k epochs of::

        preds = model(inputs); loss = mse(preds, targets); loss.backward()
        with torch.no_grad(): w -= w.grad * lr; b -= b.grad * lr; zero grads

    recording ``loss.item()`` before each update, as seed 003 prints it. Unlike
    the notebooks, it stops at a non-finite or exploding loss, as our kernels do.
    Shapes are passed through as given (seed 000 uses a 1-D w and y).
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray, lr: float) -> None:
        torch = _torch()
        self._torch = torch
        self.inputs = torch.from_numpy(np.ascontiguousarray(X))
        self.targets = torch.from_numpy(np.ascontiguousarray(Y))
        self.w = torch.tensor(np.array(W), requires_grad=True)
        self.b = torch.tensor(np.array(b), requires_grad=True)
        self.lr = lr
        self.history: list[float] = []
        self.diverged = False

    def advance(self, n_epochs: int) -> int:
        """Run up to n_epochs; stop at a non-finite or exploding loss (restoring the previous parameters)."""
        torch = self._torch
        w, b, lr = self.w, self.b, self.lr
        for done in range(n_epochs):
            preds = model(self.inputs, w, b)
            loss = mse(preds, self.targets)
            value = loss.item()
            self.history.append(value)
            if is_divergent(value, self.history[0]):  # the rule of our kernels, from kernels.cpu
                self.diverged = True
                if len(self.history) > 1:
                    with torch.no_grad():
                        w.copy_(self._w_prev)
                        b.copy_(self._b_prev)
                return done
            loss.backward()
            with torch.no_grad():
                self._w_prev, self._b_prev = w.detach().clone(), b.detach().clone()
                w -= w.grad * lr
                b -= b.grad * lr
                w.grad.zero_()
                b.grad.zero_()
        return n_epochs

    def params(self) -> tuple[np.ndarray, np.ndarray]:
        return self.w.detach().numpy().copy(), self.b.detach().numpy().copy()


def seed_loop(X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray, lr: float = 1e-5,
              epochs: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seeds' training loop from (W, b): returns final ``(W, b, loss_history)``."""
    loop = SeedLoop(X, Y, W, b, lr)
    loop.advance(epochs)
    W_final, b_final = loop.params()
    return W_final, b_final, np.asarray(loop.history)
