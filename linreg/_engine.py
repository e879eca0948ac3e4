"""The compiled training engine's runs: rows in memory (``EngineRun``) and Gram statistics (``GramRun``), and the
``Stepper`` that takes the same steps from gradient sums computed elsewhere (file chunks, ranks).

``EngineState`` is what persists between ``fit`` blocks and ``partial_fit`` calls:
the float64 parameters in the optimiser's space (standardised if asked), the
optimiser buffers, the step and epoch counters and the stopping state, as the
``kernels.cpu_train.TrainState`` arrays the compiled loops update in place.
"""

from __future__ import annotations

import numpy as np

from linreg import training
from linreg.kernels import codes, cpu, cpu_gather, cpu_sparse, cpu_train
from linreg.options import Spec
from linreg.runs import GDRun

#: Called before an in-memory engine run's step, while set: ``linreg.compilation.prepare_fit`` sets it during a
#: warm-up fit whose loop a helper process is compiling into the cache (``linreg._compile_helper``).
before_first_advance = None

_OPTIMIZER_CODES = {"sgd": codes.SGD, "adam": codes.ADAM, "adamw": codes.ADAMW}
_PENALTY_CODES = {None: codes.NO_PENALTY, "l2": codes.L2, "l1": codes.L1, "elasticnet": codes.ELASTICNET}


class EngineState:
    """Parameters and optimiser state, in the optimiser's (possibly standardised) coordinates."""

    def __init__(self, W: np.ndarray, b: np.ndarray, mu: np.ndarray, sigma: np.ndarray, standardize: bool):
        n_outputs, n_features = W.shape
        self.standardize = standardize
        W, b = training.to_standardized_units(np.asarray(W, np.float64), np.asarray(b, np.float64), mu, sigma,
                                              standardize)
        W = np.array(W, dtype=np.float64, order="C")
        b = np.array(b, dtype=np.float64)
        self.arrays = cpu_train.TrainState(
            W=W, b=b, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64),
            buffers_W=np.zeros((4, n_outputs, n_features)), buffers_b=np.zeros((4, n_outputs)),
            counters=np.zeros(4, np.int64), scalars=np.array([np.inf, 1.0, np.nan]),  # best, lr factor, first loss
            best_W=W.copy(), best_b=b.copy(), prev_W=W.copy(), prev_b=b.copy())

    @classmethod
    def raw(cls, W: np.ndarray, b: np.ndarray) -> EngineState:
        """The state of parameters on the raw (not standardised) features."""
        n_features = W.shape[1]
        return cls(W, b, np.zeros(n_features), np.ones(n_features), False)

    def __getattr__(self, name: str):  # W, b, mu, sigma, buffers_W, ..., counters, scalars
        arrays = self.__dict__.get("arrays")
        if arrays is not None and name in arrays._fields:
            return getattr(arrays, name)
        raise AttributeError(name)

    def start_run(self) -> None:
        """A new run starts from the current parameters: they are the previous and the best ones so far."""
        a = self.arrays
        a.prev_W[:], a.prev_b[:], a.best_W[:], a.best_b[:] = a.W, a.b, a.W, a.b

    def original_units(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) of the model on the original features, float64."""
        return training.to_original_units(self.W, self.b, self.mu, self.sigma, self.standardize)

    def best_original_units(self) -> tuple[np.ndarray, np.ndarray]:
        """The best validated (W, b) so far, in original units (early stopping)."""
        return training.to_original_units(self.arrays.best_W, self.arrays.best_b, self.mu, self.sigma,
                                          self.standardize)


def engine_config(spec: Spec, *, batch_size: int = 0, seed: int = 0, standardize: bool = False,
                  early_stopping: bool = False) -> cpu_train.EngineConfig:
    """The spec as the compiled engine's typed configuration."""
    return cpu_train.make_config(
        optimizer=_OPTIMIZER_CODES[spec.optimizer], momentum=spec.momentum, dampening=spec.dampening,
        nesterov=spec.nesterov, weight_decay=spec.weight_decay, beta1=spec.betas[0], beta2=spec.betas[1],
        eps=spec.eps, amsgrad=spec.amsgrad, penalty=_PENALTY_CODES[spec.penalty],
        alpha=spec.alpha if spec.penalty is not None else 0.0, l1_ratio=spec.l1_share, use_tol=spec.tol is not None,
        tol=spec.tol if spec.tol is not None else 0.0, n_iter_no_change=spec.n_iter_no_change,
        early_stopping=early_stopping, adaptive=spec.schedule == "adaptive", batch_size=batch_size,
        shuffle=spec.shuffle, seed=seed, standardize=standardize)


class Stepper:
    """Optimiser steps from gradient *sums*: the update shared by out-of-core and distributed training.

    A data source (file chunks, a rank's shard) computes ``batch_sums`` of a batch
    at ``kernel_params()``; sums from several sources add (that is all an
    all-reduce needs); ``step(sums, lr)`` normalises them, applies the chain rule
    of standardisation, the penalty and one optimiser step, exactly as the
    in-memory engine does (the same compiled ``_apply_step``), and returns the batch objective.
    """

    def __init__(self, spec: Spec, state: EngineState, dtype: np.dtype) -> None:
        self.spec, self.state = spec, state
        self.config = engine_config(spec, standardize=state.standardize)
        n_outputs, n_features = state.W.shape
        self.kernel_W = np.empty((n_outputs, n_features), dtype)
        self.kernel_b = np.empty(n_outputs, dtype)
        state.start_run()
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
        sets ``diverged``: the caller ends the run with ``diverge``.
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
        value, stepped = cpu_train._apply_step(s.arrays, dW, db, loss_sum / (n_outputs * weight_sum), self.config,
                                               lr)
        self.diverged = not stepped
        return float(value)

    def diverge(self, loss_history: np.ndarray, epoch: int, value: float) -> None:
        """End the run as the compiled loops do (``cpu_train._diverge``): the last finite parameters, the
        diverging objective recorded at ``epoch``."""
        cpu_train._diverge(self.state.arrays, loss_history, epoch, value)

    def stopping_rule(self, metric: float, lr: float) -> bool:
        """The compiled loops' rule (``cpu_train._stopping_rule``) after an epoch; True when training stops."""
        return bool(cpu_train._stopping_rule(metric, lr, self.state.arrays, self.config))


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


class _CompiledRun(GDRun):
    """What the engine's two compiled loops share: the state, the schedule, the histories, checkpoints."""

    def __init__(self, spec: Spec, state: EngineState, lr: float, epochs: int, validates: bool) -> None:
        self.spec, self.state, self.epochs, self.validates = spec, state, epochs, validates
        state.start_run()
        self.first_epoch = int(state.counters[codes.K_EPOCH])
        self.lr_by_epoch = training.learning_rates(spec, lr, self.first_epoch + epochs)[self.first_epoch:]
        self.loss_history = np.full(epochs, np.nan)
        self.val_history = np.full(epochs, np.nan)

    @property
    def stop_code(self) -> int:
        return int(self.state.counters[codes.K_STOP])

    def _after_advance(self, done: int) -> int:
        self.n_done += int(done)
        self.diverged = self.stop_code == codes.STOP_DIVERGED
        return int(done)

    def _can_advance(self, n_epochs: int) -> int:
        n_epochs = min(n_epochs, self.epochs - self.n_done)
        return n_epochs if n_epochs > 0 and self.stop_code == codes.RUNNING else 0

    def parameters(self):
        return self.state.original_units()

    def history(self, n):
        return self.loss_history[:n].copy()

    def best_result(self):
        return self.state.best_original_units() if self.validates else None

    def validation_history(self):
        return self.val_history[: self.n_done].copy() if self.validates else None

    _STATE_ARRAYS = ("W", "b", "buffers_W", "buffers_b", "counters", "scalars")

    def state_dict(self):
        a = self.state.arrays
        state = {name: getattr(a, name).copy() for name in self._STATE_ARRAYS}
        state.update(best_W=a.best_W.copy(), best_b=a.best_b.copy(), prev_W=a.prev_W.copy(), prev_b=a.prev_b.copy(),
                     loss_history=self.loss_history[: self.n_done].copy(),
                     val_history=self.val_history[: self.n_done].copy())
        return state

    def load_state_dict(self, state):
        a = self.state.arrays
        for name in (*self._STATE_ARRAYS, "best_W", "best_b", "prev_W", "prev_b"):
            getattr(a, name)[...] = state[name]
        n_done = int(state["loss_history"].shape[0])
        if n_done > self.epochs:
            raise ValueError(f"the checkpoint has {n_done} epochs done, more than this fit's epochs ({self.epochs})")
        self.loss_history[:n_done] = state["loss_history"]
        self.val_history[:n_done] = state["val_history"]
        self.n_done = n_done


class EngineRun(_CompiledRun):
    """``epochs`` epochs of the spec's training on the rows of (X, Y) (``rows``; all if None), from ``state``.

    X: a dense array, or a sparse matrix's kernel view (``kernels.cpu_sparse.SparseRows``, ``linreg.sparse``)."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, spec: Spec, state: EngineState, lr: float, epochs: int, *,
                 weights: np.ndarray | None = None, rows: np.ndarray | None = None,
                 val_rows: np.ndarray | None = None, seed: int = 0) -> None:
        validates = spec.early_stopping and val_rows is not None and val_rows.shape[0] > 0
        super().__init__(spec, state, lr, epochs, validates)
        n_features, n_outputs = X.shape[1], Y.shape[1]
        self.X, self.Y = X, Y
        self.weights = np.empty(0) if weights is None else np.ascontiguousarray(weights, np.float64)
        self.rows = np.empty(0, np.int64) if rows is None else rows
        self.val_rows = np.empty(0, np.int64) if val_rows is None else val_rows
        n_train = self.rows.shape[0] or X.shape[0]
        batch = training.batch_rows(spec.batch_size, n_train)
        lengths = [n_train, batch] + ([n_train % batch] if n_train % batch else [])
        self.layouts = _layouts(n_features, n_outputs, lengths)
        self.val_layouts = _layouts(n_features, n_outputs, [max(self.val_rows.shape[0], 1)])
        max_chunks = int(max(self.layouts[:, 3].max(), self.val_layouts[:, 3].max()))
        self.config = engine_config(spec, batch_size=batch, seed=seed, standardize=state.standardize,
                                    early_stopping=validates)
        # Every step the whole data in order, unweighted: None, so the compiled loop has no gather kernel.
        whole = batch == n_train == X.shape[0] and self.weights.shape[0] == 0
        self.gather = None if whole else True
        if isinstance(X, cpu_sparse.SparseRows):  # sparse X: its kernels' scratch, O(n_samples), no F-wide partials
            # Mini-batch steps that move only the batch's features, where that is exact (O(batch non-zeros)).
            self.lazy_steps = not whole and cpu_train.lazy_steps_exact(self.config)
            self.work = cpu_sparse.engine_work(X, n_outputs, max_chunks, lazy=self.lazy_steps)
        else:
            # What the row kernels need: cpu._loss_grad's (full batches) and cpu_gather's (mini-batches).
            scratch = max(n_outputs, int(cpu._scratch_size(n_features, n_outputs)),
                          int(cpu_gather._scratch_size(n_features, n_outputs)))
            self.work = (np.zeros((max_chunks, scratch)), np.zeros((max_chunks, n_outputs, n_features)),
                         np.zeros((max_chunks, n_outputs)), np.zeros(max_chunks), np.zeros(max_chunks),
                         cpu.kernel_variant(X, Y))  # the row kernel cpu._loss_grad compiles, chosen here
        self.order = np.empty(n_train, np.int64)
        dtype = X.dtype
        # Wk, bk (the data's dtype), W_eff, b_eff, dW, db (float64)
        self.scratch = (np.empty((n_outputs, n_features), dtype), np.empty(n_outputs, dtype),
                        np.empty((n_outputs, n_features)), np.empty(n_outputs),
                        np.empty((n_outputs, n_features)), np.empty(n_outputs))

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if getattr(self, "lazy_steps", False):  # prev_W came from the file: the next lazy step syncs all of it
            steps = self.work[5]
            steps.previous[:] = np.arange(steps.previous.shape[0])
            steps.counts[1] = steps.previous.shape[0]

    def advance(self, n_epochs: int) -> int:
        n_epochs = self._can_advance(n_epochs)
        if not n_epochs:
            return 0
        cpu.launch_threads()
        if before_first_advance is not None:
            before_first_advance()
        done = cpu_train._train_epochs(
            self.X, self.Y, self.rows, self.weights, self.val_rows if self.validates else None, self.state.arrays,
            self.config, self.lr_by_epoch, self.first_epoch, n_epochs, self.loss_history, self.val_history,
            self.layouts, self.val_layouts, self.order, self.scratch, self.work, self.gather,
            self.work[5] if getattr(self, "lazy_steps", False) else None)
        return self._after_advance(done)


class GramRun(_CompiledRun):
    """``solver="gram"``: epochs of the spec's full-batch training on Gram statistics (``training.GramStatistics``),
    never touching the rows; ``validation`` the held-out rows' statistics for early stopping."""

    def __init__(self, statistics: training.GramStatistics, spec: Spec, state: EngineState, lr: float, epochs: int,
                 *, validation: training.GramStatistics | None = None) -> None:
        super().__init__(spec, state, lr, epochs, spec.early_stopping and validation is not None)
        n_outputs, n_features = state.W.shape
        self.statistics = statistics
        self.validation = validation or statistics  # unused unless validating
        self.config = engine_config(spec, standardize=state.standardize, early_stopping=self.validates)
        self.scratch = (np.empty((n_outputs, n_features)), np.empty(n_outputs), np.empty((n_outputs, n_features)),
                        np.empty(n_outputs))  # W_eff, b_eff, dW, db

    def advance(self, n_epochs: int) -> int:
        n_epochs = self._can_advance(n_epochs)
        if not n_epochs:
            return 0
        train, val = self.statistics, self.validation
        done = cpu_train._gram_epochs(
            train.G, train.C, train.yy, train.weight_total, val.G, val.C, val.yy, val.weight_total,
            self.state.arrays, self.config, self.lr_by_epoch, self.first_epoch, n_epochs, self.loss_history,
            self.val_history, *self.scratch)
        return self._after_advance(done)


def _layouts(n_features: int, n_outputs: int, lengths: list[int]) -> np.ndarray:
    rows = []
    for n in sorted(set(lengths)):
        chunk_rows, n_chunks = cpu.chunking(n)
        rows.append([n, int(n * n_features * n_outputs >= cpu.PARALLEL_MIN_WORK), chunk_rows, n_chunks])
    return np.array(rows, dtype=np.int64)
