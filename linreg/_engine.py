"""Drives ``kernels.cpu_train._train_epochs``: the CPU backend's general training run.

``EngineState`` is what persists between ``fit`` blocks and ``partial_fit`` calls:
the float64 parameters in the optimiser's space (standardised if asked), the
optimiser buffers, the step and epoch counters and the stopping state.
"""

from __future__ import annotations

import numpy as np

from linreg.kernels import cpu, cpu_train
from linreg.options import Spec
from linreg.runs import GDRun
from linreg.training import learning_rates

_OPTIMIZER_CODES = {"sgd": cpu_train.SGD, "adam": cpu_train.ADAM, "adamw": cpu_train.ADAMW}
_PENALTY_CODES = {None: cpu_train.NO_PENALTY, "l2": cpu_train.L2, "l1": cpu_train.L1,
                  "elasticnet": cpu_train.ELASTICNET}


class EngineState:
    """Parameters and optimiser state, in the optimiser's (possibly standardised) coordinates."""

    def __init__(self, W: np.ndarray, b: np.ndarray, mu: np.ndarray, sigma: np.ndarray, standardize: bool):
        n_outputs, n_features = W.shape
        self.mu, self.sigma, self.standardize = mu, sigma, standardize
        if standardize:  # original units -> standardised: Ws = W * sigma, bs = b + W @ mu
            self.W = np.ascontiguousarray(W * sigma, dtype=np.float64)
            self.b = np.asarray(b + W @ mu, dtype=np.float64).copy()
        else:
            self.W = np.array(W, dtype=np.float64, order="C")
            self.b = np.array(b, dtype=np.float64)
        self.buffers_W = np.zeros((4, n_outputs, n_features))
        self.buffers_b = np.zeros((4, n_outputs))
        self.counters = np.zeros(4, np.int64)
        self.scalars = np.array([np.inf, 1.0, np.nan])  # best metric, lr factor, first loss

    def original_units(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) of the model on the original features, float64."""
        if not self.standardize:
            return self.W.copy(), self.b.copy()
        W = self.W / self.sigma
        return W, self.b - W @ self.mu


def _layouts(n_features: int, n_outputs: int, lengths: list[int]) -> np.ndarray:
    rows = []
    for n in sorted(set(lengths)):
        chunk_rows, n_chunks = cpu.chunking(n)
        rows.append([n, int(n * n_features * n_outputs >= cpu.PARALLEL_MIN_WORK), chunk_rows, n_chunks])
    return np.array(rows, dtype=np.int64)


def encode(spec: Spec, *, batch: int = 0, seed: int = 0, standardize: bool = False, early_stopping: bool = False,
           gram: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The spec as the engine's float64 ``hyper`` and int64 ``config`` vectors."""
    hyper = np.zeros(cpu_train.N_HYPER)
    hyper[cpu_train.H_MOMENTUM] = spec.momentum
    hyper[cpu_train.H_DAMPENING] = spec.dampening
    hyper[cpu_train.H_NESTEROV] = spec.nesterov
    hyper[cpu_train.H_WEIGHT_DECAY] = spec.weight_decay
    hyper[cpu_train.H_BETA1], hyper[cpu_train.H_BETA2] = spec.betas
    hyper[cpu_train.H_EPS] = spec.eps
    hyper[cpu_train.H_AMSGRAD] = spec.amsgrad
    hyper[cpu_train.H_ALPHA] = spec.alpha if spec.penalty is not None else 0.0
    hyper[cpu_train.H_L1_RATIO] = spec.l1_share
    hyper[cpu_train.H_TOL] = spec.tol if spec.tol is not None else 0.0
    config = np.zeros(cpu_train.N_CONFIG, np.int64)
    config[cpu_train.C_OPTIMIZER] = _OPTIMIZER_CODES[spec.optimizer]
    config[cpu_train.C_PENALTY] = _PENALTY_CODES[spec.penalty]
    config[cpu_train.C_N_ITER_NO_CHANGE] = spec.n_iter_no_change
    config[cpu_train.C_EARLY_STOPPING] = early_stopping
    config[cpu_train.C_ADAPTIVE] = spec.schedule == "adaptive"
    config[cpu_train.C_BATCH_SIZE] = batch
    config[cpu_train.C_SHUFFLE] = spec.shuffle
    config[cpu_train.C_SEED] = seed
    config[cpu_train.C_STANDARDIZE] = standardize
    config[cpu_train.C_USE_TOL] = spec.tol is not None
    config[cpu_train.C_GRAM] = gram
    return hyper, config


class Stepper:
    """Optimiser steps from gradient *sums*: the update shared by out-of-core and distributed training.

    A data source (file chunks, a rank's shard) computes ``BatchSums`` of a batch
    at ``kernel_params()``; sums from several sources add (that is all an
    all-reduce needs); ``step(sums, lr)`` normalises them, applies the chain rule
    of standardisation, the penalty and one optimiser step, exactly as the
    in-memory engine does, and returns the batch objective.
    """

    def __init__(self, spec: Spec, state: EngineState, dtype: np.dtype) -> None:
        self.spec, self.state = spec, state
        self.hyper, self.config = encode(spec, standardize=state.standardize)
        n_outputs, n_features = state.W.shape
        self.kernel_W = np.empty((n_outputs, n_features), dtype)
        self.kernel_b = np.empty(n_outputs, dtype)
        self.prev = (state.W.copy(), state.b.copy())
        self.diverged = False

    def kernel_params(self) -> tuple[np.ndarray, np.ndarray]:
        """The parameters in original units and the data's dtype: what the streaming kernels take."""
        W_eff, b_eff = self.state.original_units()
        self.kernel_W[:] = W_eff
        self.kernel_b[:] = b_eff
        return self.kernel_W, self.kernel_b

    def step(self, sums: np.ndarray, lr: float) -> float:
        """One step from ``sums`` (see ``batch_sums``); returns the objective before it.

        A diverged objective (non-finite, or EXPLOSION_FACTOR times the first) takes no step and
        sets ``diverged``: stop, and ``restore_previous()`` to keep the last finite parameters.
        """
        s = self.state
        n_outputs, n_features = s.W.shape
        loss_sum, weight_sum = sums[0], sums[1]
        self.diverged = False
        if weight_sum == 0:  # only zero-weight samples: no information, no step (as the in-memory loop)
            return 0.0
        scale = 2.0 / (n_outputs * weight_sum)
        dW = sums[2:2 + n_outputs * n_features].reshape(n_outputs, n_features) * scale
        db = sums[2 + n_outputs * n_features:] * scale
        cpu_train._to_optimizer_space(dW, db, s.mu, s.sigma, s.standardize)
        value, stepped = cpu_train._apply_step(s.W, s.b, dW, db, loss_sum / (n_outputs * weight_sum), self.hyper,
                                               self.config, s.buffers_W, s.buffers_b, s.counters, s.scalars, lr,
                                               *self.prev)
        self.diverged = not stepped
        return float(value)

    def restore_previous(self) -> None:
        """Back to the parameters before the last step (after a non-finite objective)."""
        self.state.W[:], self.state.b[:] = self.prev


def batch_sums(X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None,
               rows: np.ndarray | None = None) -> np.ndarray:
    """Flat float64 ``[sum s r^2, sum s, sum s r x (O*F), sum s r (O)]`` over ``rows`` of (X, Y) at (W, b).

    Sums, not means, so that the sums of several chunks or ranks add up exactly
    to the sums of their union. (W, b) in X's dtype (``Stepper.kernel_params``).
    """
    n_outputs, n_features = W.shape
    rows = np.empty(0, np.int64) if rows is None else rows
    weights = np.empty(0) if weights is None else np.ascontiguousarray(weights, np.float64)
    n = rows.shape[0] or X.shape[0]
    chunk_rows, n_chunks = cpu.chunking(n)
    parallel = n * n_features * n_outputs >= cpu.PARALLEL_MIN_WORK
    dW, db = np.empty((n_outputs, n_features)), np.empty(n_outputs)
    cpu.launch_threads()
    loss, weight_sum = cpu_train._gather_loss_grad(
        X, Y, W, b, rows, weights, 0, n, dW, db, parallel, chunk_rows, n_chunks, np.zeros((n_chunks, n_outputs)),
        np.zeros((n_chunks, n_outputs, n_features)), np.zeros((n_chunks, n_outputs)), np.zeros(n_chunks),
        np.zeros(n_chunks))
    unscale = n_outputs * weight_sum
    return np.concatenate([[loss * unscale, weight_sum], (dW * unscale / 2).ravel(), db * unscale / 2])


class EngineRun(GDRun):
    """``epochs`` epochs of the spec's training on (X, Y), rows and weights as given, from ``state``."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, spec: Spec, state: EngineState, lr: float, epochs: int, *,
                 weights: np.ndarray | None = None, rows: np.ndarray | None = None,
                 val_rows: np.ndarray | None = None, seed: int = 0, gram=None, val_gram=None) -> None:
        n_features, n_outputs = X.shape[1], Y.shape[1]
        self.X, self.Y, self.state, self.epochs = X, Y, state, epochs
        self.weights = np.empty(0) if weights is None else np.ascontiguousarray(weights, np.float64)
        self.rows = np.empty(0, np.int64) if rows is None else rows
        self.val_rows = np.empty(0, np.int64) if val_rows is None else val_rows
        n_train = self.rows.shape[0] or X.shape[0]
        batch = min(spec.batch_size or n_train, n_train)
        lengths = [n_train, batch] + ([n_train % batch] if n_train % batch else [])
        self.layouts = _layouts(n_features, n_outputs, lengths)
        self.val_layouts = _layouts(n_features, n_outputs, [max(self.val_rows.shape[0], 1)])
        max_chunks = int(max(self.layouts[:, 3].max(), self.val_layouts[:, 3].max()))
        scratch = max(n_outputs, int(cpu._scratch_size(n_features, n_outputs)))  # what cpu._loss_grad's rows need
        self.work = (np.zeros((max_chunks, scratch)), np.zeros((max_chunks, n_outputs, n_features)),
                     np.zeros((max_chunks, n_outputs)), np.zeros(max_chunks), np.zeros(max_chunks),
                     cpu.kernel_variant(X, Y))
        self.hyper, self.config = encode(spec, batch=batch, seed=seed, standardize=state.standardize,
                                         early_stopping=spec.early_stopping and self.val_rows.shape[0] > 0,
                                         gram=gram is not None)
        self.first_epoch = int(state.counters[cpu_train.K_EPOCH])
        self.lr_by_epoch = learning_rates(spec, lr, self.first_epoch + epochs)[self.first_epoch:]
        self.loss_history = np.full(epochs, np.nan)
        self.val_history = np.full(epochs, np.nan)
        self.order = np.empty(n_train, np.int64)
        dtype = X.dtype
        self.params_in_dtype = (np.empty((n_outputs, n_features), dtype), np.empty(n_outputs, dtype))
        self.scratch = tuple(np.empty((n_outputs, n_features)) if k % 2 == 0 else np.empty(n_outputs)
                             for k in range(4))  # W_eff, b_eff, dW, db
        self.best = (state.W.copy(), state.b.copy())
        self.prev = (state.W.copy(), state.b.copy())
        empty_gram = (np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1), 1.0)
        self.gram = gram or empty_gram
        self.val_gram = val_gram or empty_gram

    @property
    def stop_code(self) -> int:
        return int(self.state.counters[cpu_train.K_STOP])

    def advance(self, n_epochs: int) -> int:
        n_epochs = min(n_epochs, self.epochs - self.n_done)
        if n_epochs <= 0 or self.stop_code != cpu_train.RUNNING:
            return 0
        s = self.state
        W_eff, b_eff, dW, db = self.scratch
        cpu.launch_threads()
        done = cpu_train._train_epochs(
            self.X, self.Y, self.rows, self.weights, self.val_rows, s.W, s.b, s.mu, s.sigma, self.hyper,
            self.config, self.lr_by_epoch, self.first_epoch, n_epochs, s.buffers_W, s.buffers_b, s.counters,
            s.scalars, *self.best, *self.prev, self.loss_history, self.val_history, self.layouts, self.val_layouts,
            self.order, *self.params_in_dtype, W_eff, b_eff, dW, db, *self.gram, *self.val_gram, self.work)
        self.n_done += int(done)
        self.diverged = self.stop_code == cpu_train.STOP_DIVERGED
        return int(done)

    _STATE_ARRAYS = ("W", "b", "buffers_W", "buffers_b", "counters", "scalars")

    def state_dict(self):
        state = {name: getattr(self.state, name).copy() for name in self._STATE_ARRAYS}
        state.update(best_W=self.best[0].copy(), best_b=self.best[1].copy(), prev_W=self.prev[0].copy(),
                     prev_b=self.prev[1].copy(), loss_history=self.loss_history[: self.n_done].copy(),
                     val_history=self.val_history[: self.n_done].copy())
        return state

    def load_state_dict(self, state):
        for name in self._STATE_ARRAYS:
            getattr(self.state, name)[...] = state[name]
        for target, name in ((self.best[0], "best_W"), (self.best[1], "best_b"), (self.prev[0], "prev_W"),
                             (self.prev[1], "prev_b")):
            target[...] = state[name]
        n_done = int(state["loss_history"].shape[0])
        if n_done > self.epochs:
            raise ValueError(f"the checkpoint has {n_done} epochs done, more than this fit's epochs ({self.epochs})")
        self.loss_history[:n_done] = state["loss_history"]
        self.val_history[:n_done] = state["val_history"]
        self.n_done = n_done

    def best_result(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) in original units with the best validation loss so far (early stopping)."""
        s = self.state
        if not s.standardize:
            return self.best[0].copy(), self.best[1].copy()
        W = self.best[0] / s.sigma
        return W, self.best[1] - W @ s.mu

    def result(self):
        W, b = self.state.original_units()
        n_history = self.n_done + (1 if self.diverged else 0)
        return W, b, self.loss_history[:n_history].copy()
