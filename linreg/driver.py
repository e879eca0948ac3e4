"""The one training driver: plan a fit, run it in blocks of epochs, return its fitted state.

Every fit goes through ``fit`` (and ``partial_fit``), whatever feeds it. A *source*
provides the data's statistics and the run of epochs (``linreg.runs.GDRun``):

* ``InMemory`` here: validated rows in memory (the compiled engine, ``linreg._engine``),
* ``linreg.outofcore.Streamed``: chunks of ``.npy`` files / memmaps, one rank's shard
  of them with a collective across ranks (``linreg.distributed``),
* the Gram statistics of either (``solver="gram"``, ``_engine.GramRun``), and the
  backends' plain gradient descent (``linreg.backends``: cpu, torch, cuda).

The plan (``fit``): initial parameters, the validation split, one statistics pass
(column moments for standardisation, Gram statistics for ``solver="normal"``/``"gram"``
and ``lr="auto"``), the exact solution or the run, a checkpoint to resume from. Then
``run_blocks`` advances the run in blocks of about ``BLOCK_SECONDS``, between which
(never inside the compiled loop) Ctrl-C is noticed, the progress bar and checkpoints
are updated. ``finish`` turns the run into a ``FittedState`` and the error or warning
it ended with. The rules themselves are in one place each: options in
``linreg.options``; schedules, standardisation, lr="auto" and the exact solve in
``linreg.training``; the optimiser step, divergence and stopping rules in
``kernels.cpu_train`` (compiled, also called from Python by the streaming run).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

import numpy as np

from linreg import _validation as check
from linreg import training
from linreg.backends import get_backend
from linreg.kernels import codes
from linreg.options import Spec
from linreg.runs import GDRun
from linreg.training import ConvergenceWarning, Statistics

#: Target wall time of one block of epochs between checks for Ctrl-C, progress and checkpoints.
BLOCK_SECONDS = 0.25


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss. The estimator keeps the last finite parameters."""


@dataclasses.dataclass
class FittedState:
    """Everything a fit leaves: what ``LinearRegressor`` exposes as fitted attributes, and ``save`` writes."""

    coef: np.ndarray  # (n_outputs, n_features), the data's dtype
    intercept: np.ndarray  # (n_outputs,)
    loss_history: np.ndarray  # (n_iter,) float64
    n_iter: int
    stop_reason: str
    lr: float | None  # the base learning rate used; None for solver="normal"
    one_output: bool  # y was 1-D: predictions are 1-D
    backend: str = "cpu"  # where predict runs
    feature_names: np.ndarray | None = None
    validation_loss_history: np.ndarray | None = None
    #: The Gram statistics of the whole training data, when the fit computed them (for inference).
    statistics: Statistics | None = None
    #: Seconds spent compiling (or loading from the cache) the fit's kernels before it trained.
    compile_seconds: float = 0.0

    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])


@dataclasses.dataclass
class Outcome:
    """What ``fit`` returns: the fitted state, and the error to raise once the caller has stored it."""

    state: FittedState
    error: BaseException | None = None
    run: GDRun | None = None

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


# --------------------------------------------------------------------------- the in-memory source


class InMemory:
    """Validated rows in memory: X (n_samples, n_features), Y (n_samples, n_outputs), optional weights."""

    streams = False

    def __init__(self, X: np.ndarray, Y: np.ndarray, weights: np.ndarray | None, *, checked_finite: bool = True,
                 y_was_1d: bool = False) -> None:
        self.X, self.Y, self.weights = X, Y, weights
        self.n_samples, self.n_features = X.shape
        self.n_outputs = Y.shape[1]
        self.dtype = np.dtype(X.dtype)
        self.weighted = weights is not None
        # The exact solvers skip the scan for NaN/Inf (a whole pass over X): non-finite values propagate into
        # the Gram statistics, which check_statistics looks at instead.
        self.checked_finite, self.y_was_1d = checked_finite, y_was_1d

    def agree(self, W0: np.ndarray, b0: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
        return W0, b0, seed  # one process: nothing to agree on

    def split(self, spec: Spec, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rows, val_rows = training.split_validation(self.n_samples, spec.validation_fraction, seed)
        if self.weights is not None:
            for name, part in (("training", rows), ("validation", val_rows)):
                if not self.weights[part].sum() > 0:
                    raise ValueError(f"the {name} split has only zero sample weights; change random_state, "
                                     "validation_fraction or the weights")
        return rows, val_rows

    def statistics(self, rows: np.ndarray | None, *, gram: bool, moments: bool, centred: bool = False) -> Statistics:
        """Column moments and/or the Gram statistics of ``rows`` (all if None); ``centred``: about a shift
        near the mean (``Statistics.shift_x``), for the exact solve."""
        from linreg.kernels import cpu_gram, cpu_train

        stats = Statistics()
        if moments:
            stats.mean, stats.std = cpu_train.column_moments(self.X, rows, self.weights)
        if gram and centred:
            stats.G, stats.C, stats.yy, stats.shift_x, stats.shift_y = cpu_gram.centred_gram(self.X, self.Y, rows,
                                                                                             self.weights)
        elif gram:
            stats.G, stats.C, stats.yy = cpu_train.gram(self.X, self.Y, rows, self.weights)
        if rows is None:
            stats.n_samples, stats.weighted = self.n_samples, self.weighted
        if gram and not self.checked_finite and not all(np.isfinite(a).all() for a in (stats.G, stats.C, stats.yy)):
            check.check_X_y_finite(self.X, self.Y, self.y_was_1d)  # names the first NaN/Inf (else: overflow)
        return stats

    def start_gd(self, spec: Spec, state, lr: float, rows, val_rows, seed: int) -> GDRun:
        from linreg._engine import EngineRun

        return EngineRun(self.X, self.Y, spec, state, lr, spec.epochs, weights=self.weights, rows=rows,
                         val_rows=val_rows, seed=seed)

    def fingerprint(self) -> str:
        from linreg import checkpoint

        return checkpoint.fingerprint(self.X, self.Y, self.weights)


# --------------------------------------------------------------------------- the plan


def initial_params(params: dict[str, Any], n_features: int, n_outputs: int, dtype: np.dtype,
                   previous: FittedState | None) -> tuple[np.ndarray, np.ndarray]:
    """``init`` (or, with ``warm_start``, the previous fit's parameters) for this data's shapes."""
    shape = (n_outputs, n_features)
    init = params["init"]
    if params["warm_start"] and previous is not None:
        if previous.coef.shape != shape:
            raise ValueError(f"warm_start: the previous fit has coef_ shape {previous.coef.shape}, this data needs "
                             f"{shape}")
        return previous.coef.astype(dtype), previous.intercept.astype(dtype)
    if init == "ones":
        return np.ones(shape, dtype), np.ones(n_outputs, dtype)
    if init == "zeros":
        return np.zeros(shape, dtype), np.zeros(n_outputs, dtype)
    if init == "randn":
        rng = np.random.default_rng(params["random_state"])
        return rng.standard_normal(shape).astype(dtype), rng.standard_normal(n_outputs).astype(dtype)
    W = check.as_float_array(init[0], "init W")
    b = check.as_float_array(init[1], "init b")
    # A 1-D W and a scalar b are accepted for a single output, as seed 000 writes them.
    if W.shape not in {shape, (n_features,) if n_outputs == 1 else shape}:
        raise ValueError(f"init W must have shape {shape} for this data, got {W.shape}")
    if b.shape not in {(n_outputs,), () if n_outputs == 1 else (n_outputs,)}:
        raise ValueError(f"init b must have shape ({n_outputs},) for this data, got {b.shape}")
    check.check_finite(W.reshape(shape), "init W")
    check.check_finite(b.reshape(n_outputs), "init b")
    return W.reshape(shape).astype(dtype, copy=True), b.reshape(n_outputs).astype(dtype, copy=True)


def new_seed(params: dict[str, Any]) -> int:
    """The fit's seed: ``random_state``, or a fresh one (recorded in checkpoints, so a resume keeps it)."""
    if params["random_state"] is None:
        return int(np.random.default_rng().integers(2**62))
    return int(params["random_state"])


def fit(spec: Spec, params: dict[str, Any], source, *, one_output: bool, feature_names: np.ndarray | None = None,
        previous: FittedState | None = None, resume: bool = False, interruptible: bool = True,
        progress_desc: str | None = None) -> Outcome:
    """Plan and run one fit of ``spec`` (``params``: all the estimator's options) on ``source``."""
    n_features, n_outputs, dtype = source.n_features, source.n_outputs, source.dtype
    W0, b0 = initial_params(params, n_features, n_outputs, dtype, previous)
    backend = get_backend(params["backend"])
    weights = getattr(source, "weights", None)
    checkpointing = Checkpointing.setup(params, source, resume)
    seed = checkpointing.seed if checkpointing and checkpointing.seed is not None else new_seed(params)
    W0, b0, seed = source.agree(W0, b0, seed)
    if checkpointing:
        checkpointing.seed = seed
    finishing = dict(params=params, one_output=one_output, feature_names=feature_names, dtype=dtype,
                     backend=backend.name)

    unsupported = spec.non_plain_options() + (["sample_weight"] if weights is not None else [])
    statistics = None
    # The other backends run the seeds' plain loop; lr="auto" is only its step, found by a host Gram pass.
    auto_step_only = (backend.name != "cpu" and unsupported == ["lr='auto'"] and not source.streams
                      and isinstance(source.X, np.ndarray))
    sparse = getattr(source, "sparse", False)  # sparse X (linreg.sparse) always trains on the engine
    # backend="cuda" beyond the seeds' loop: the same plan below, on a source whose rows and steps are on the GPU
    # (streamed sources come already on the GPU: linreg.cuda_stream.DeviceStreamed).
    on_device = backend.name == "cuda" and (source.streams or (bool(unsupported) and not auto_step_only))
    if on_device and not source.streams:
        from linreg.cuda_engine import DeviceRows

        source = DeviceRows(source)
    if (not unsupported or auto_step_only) and not source.streams and not sparse:  # the seeds' plain loop
        lr = spec.lr
        if auto_step_only:
            statistics = source.statistics(None, gram=True, moments=False)
            lr = training.auto_lr(spec, statistics, *training.standardization(statistics, False, n_features))
        lr = float(lr)
        run = backend.start_gd(source.X, source.Y, W0, b0, lr, spec.epochs)
    elif backend.name != "cpu" and not on_device and unsupported == ["lr='auto'"]:
        raise ValueError(f"lr='auto' (the default step) comes from a Gram pass over host data; with device arrays "
                         f"on backend={backend.name!r} pass a numeric lr, e.g. lr=1e-3, or host arrays")
    elif backend.name != "cpu" and not on_device:
        raise ValueError(f"backend={backend.name!r} runs plain full-batch gradient descent only (the seeds' "
                         f"loop); these options need backend='cpu': {', '.join(unsupported)}")
    else:
        from linreg._engine import EngineState, GramRun

        rows, val_rows = source.split(spec, seed) if spec.early_stopping else (None, None)
        need_gram = spec.solver in ("normal", "gram") or spec.lr == "auto"
        stats = Statistics()
        exact = spec.solver == "normal"
        if need_gram or spec.standardize:
            stats = source.statistics(rows, gram=need_gram, moments=spec.standardize, centred=exact)
        if need_gram and rows is None and stats.G is not None:  # all the rows: kept for inference (linreg.inference)
            statistics = stats.uncentred()
        mu, sigma = training.standardization(stats, spec.standardize, n_features)
        if exact:
            W, b, objective = training.normal_solution(spec, stats.G, stats.C, stats.yy, stats.weight_total, mu,
                                                       sigma, stats.shift_x, stats.shift_y)
            state = _fitted(W, b, np.array([objective]), 1, codes.RUNNING, None, statistics=statistics,
                            **finishing)
            return Outcome(state)
        lr = float(training.auto_lr(spec, stats, mu, sigma) if spec.lr == "auto" else spec.lr)
        engine_state = EngineState(W0, b0, mu, sigma, spec.standardize)
        if spec.solver == "gram":
            validation = (source.statistics(val_rows, gram=True, moments=False) if val_rows is not None else None)
            run = GramRun(stats, spec, engine_state, lr, spec.epochs, validation=validation)
        else:
            run = source.start_gd(spec, engine_state, lr, rows, val_rows, seed)
    if checkpointing:
        lr = checkpointing.restore(run, lr)
    interrupted = run_blocks(run, spec.epochs, progress=params["progress"],
                             desc=progress_desc or f"fit ({backend.name})", checkpointing=checkpointing,
                             interruptible=interruptible)
    outcome = finish(run, lr, interrupted, statistics=statistics, **finishing)
    outcome.run = run
    return outcome


def engine_run(params: dict[str, Any], X: np.ndarray, Y: np.ndarray, *, seed: int = 0) -> GDRun:
    """The compiled engine's run of ``params`` (a numeric ``lr``, solver "gd") on validated in-memory X (n_samples,
    n_features) and Y (n_samples, n_outputs): what benchmarks time epoch by epoch, without fit's validation."""
    from linreg import options
    from linreg._engine import EngineState

    spec = options.make_spec(params)
    source = InMemory(X, Y, None)
    W0, b0 = initial_params(params, source.n_features, source.n_outputs, source.dtype, None)
    return source.start_gd(spec, EngineState.raw(W0, b0), float(spec.lr), None, None, seed)


# --------------------------------------------------------------------------- the block loop


def run_blocks(run: GDRun, epochs: int, *, progress: bool = False, desc: str = "fit",
               checkpointing: Checkpointing | None = None, interruptible: bool = True) -> bool:
    """Advance ``run`` to ``epochs`` in blocks of about BLOCK_SECONDS; return True if interrupted (Ctrl-C).

    Between blocks (never inside the compiled loop): Ctrl-C is noticed, the
    progress bar and checkpoints are updated. Blocks grow from a few epochs to
    BLOCK_SECONDS' worth, so a fast fit still makes only a couple of calls.
    ``interruptible=False`` (several ranks, which must stop together) leaves
    Ctrl-C to raise where it lands.
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=run.n_done, desc=desc, unit="epoch")
    every = checkpointing.every if checkpointing else None
    block = 4
    try:
        with _interrupt_flag(interruptible) as interrupt:
            while run.n_done < epochs and not run.diverged:
                size = min(block, epochs - run.n_done)
                if bar is not None:
                    size = min(size, max(1, epochs // 100))
                if every:
                    size = min(size, every - run.n_done % every)
                start = time.perf_counter()
                done = run.advance(size)
                elapsed = time.perf_counter() - start
                block = int(min(max(1, block * 8), max(1, size * BLOCK_SECONDS / max(elapsed, 1e-9))))
                if bar is not None:
                    bar.update(done)
                    history = run.result()[2]
                    if len(history):
                        bar.set_postfix(loss=f"{history[-1]:.6g}", refresh=False)
                if every and done and run.n_done % every == 0 and not run.diverged:
                    checkpointing.write(run)
                if interruptible and interrupt.is_set():
                    if checkpointing:
                        checkpointing.write(run)
                    return True
                if done < size:  # a stopping rule or divergence ended the run
                    break
    finally:
        if bar is not None:
            bar.close()
    if checkpointing and not run.diverged:
        checkpointing.write(run)
    return False


class _interrupt_flag:
    """While active, Ctrl-C sets a flag instead of raising in the middle of a block (main thread only).

    A second Ctrl-C raises at once. Outside the main thread, or when the program
    has its own SIGINT handler, nothing changes.
    """

    def __init__(self, enabled: bool = True) -> None:
        self._enabled = enabled

    def __enter__(self):
        import signal
        import threading

        self._set = False
        self._installed = (self._enabled and threading.current_thread() is threading.main_thread()
                           and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        if self._installed:
            def handler(signum, frame):
                if self._set:
                    raise KeyboardInterrupt
                self._set = True

            self._previous = signal.signal(signal.SIGINT, handler)
        return self

    def is_set(self) -> bool:
        return self._set

    def __exit__(self, *exc):
        if self._installed:
            import signal

            signal.signal(signal.SIGINT, self._previous)
        return False


# --------------------------------------------------------------------------- checkpoints


class Checkpointing:
    """Writing a run's checkpoints (``checkpoint_path`` every ``checkpoint_every`` epochs) and resuming from one."""

    def __init__(self, params: dict[str, Any], path, every: int | None, data: str) -> None:
        self.params, self.path, self.every, self.data = params, path, every, data
        self.seed: int | None = None
        self.lr: float | None = None
        self.meta: dict | None = None
        self.saved_state: dict | None = None

    @classmethod
    def setup(cls, params: dict[str, Any], source, resume: bool) -> Checkpointing | None:
        from linreg import checkpoint

        if not isinstance(resume, bool):
            raise TypeError(f"resume must be True or False, got {resume!r}")
        path = params["checkpoint_path"]
        if resume and path is None:
            raise ValueError("resume=True reads the checkpoint at checkpoint_path: set checkpoint_path")
        if path is None:
            return None
        if source.streams:
            raise ValueError("checkpoints (checkpoint_path) are not supported out of core or distributed yet; "
                             f"got checkpoint_path={path!r}")
        setup = cls(params, path, params["checkpoint_every"], source.fingerprint())
        if resume:
            try:
                setup.meta, setup.saved_state = checkpoint.load(path, params=params, data=setup.data)
                setup.seed = setup.meta["seed"]
            except FileNotFoundError:
                warnings.warn(f"no checkpoint at {path}: starting from scratch", UserWarning, stacklevel=4)
        return setup

    def restore(self, run: GDRun, lr: float) -> float:
        """Continue ``run`` from the checkpoint loaded at setup, if any; returns the learning rate to use."""
        if self.meta is not None:
            run.load_state_dict(self.saved_state)
            lr = self.meta["lr"]
        self.lr = lr
        return lr

    def write(self, run: GDRun) -> None:
        from linreg import checkpoint

        checkpoint.save(self.path, params=self.params, state=run.state_dict(), seed=self.seed, lr=self.lr,
                        data=self.data, n_done=run.n_done)


# --------------------------------------------------------------------------- the end of a fit


def _fitted(W, b, history, n_iter, stop_code, lr, *, params, one_output, feature_names, dtype, backend,
            validation_loss_history=None, statistics=None) -> FittedState:
    return FittedState(coef=np.asarray(W).astype(dtype), intercept=np.asarray(b).astype(dtype),
                       loss_history=history, n_iter=int(n_iter), stop_reason=codes.STOP_REASONS[stop_code], lr=lr,
                       one_output=one_output, backend=backend, feature_names=feature_names,
                       validation_loss_history=validation_loss_history, statistics=statistics)


def finish(run: GDRun, lr: float, interrupted: bool, *, params: dict[str, Any], statistics=None,
           **fitted) -> Outcome:
    """The fitted state a run leaves, and the error (divergence, interrupt) or warning it ended with."""
    W, b, history = run.result()
    stop_code = codes.INTERRUPTED if interrupted else run.stop_code
    best = run.best_result()
    if params["early_stopping"] and stop_code == codes.RUNNING and best is not None:
        W, b = best  # the epochs ran out first: still keep the best validated parameters
    val_history = run.validation_history() if params["early_stopping"] else None
    state = _fitted(W, b, history[: run.n_done], run.n_done, stop_code, lr, params=params,
                    validation_loss_history=val_history, statistics=statistics, **fitted)
    error = None
    if interrupted:
        path = params["checkpoint_path"]
        where = f"; checkpoint written to {path}" if path else ""
        error = KeyboardInterrupt(f"fit interrupted after epoch {run.n_done}: the model holds that epoch's "
                                  f"parameters and history{where}")
    elif run.diverged:
        value = history[-1] if len(history) > run.n_done else float("nan")
        kind = "became non-finite" if not np.isfinite(value) else "exploded"
        last = state.loss_history[-1] if run.n_done else float("nan")
        error = DivergenceError(
            f"loss {kind} ({value:.6g}) at epoch {run.n_done} with lr={lr:g}; the model keeps the "
            f"parameters before the last step (its loss was the last finite one, {last:.6g}). "
            "Try standardize=True, lr='auto' or a smaller lr.")
    elif (params["tol"] is not None or params["early_stopping"]) and state.stop_reason == "epochs":
        warnings.warn(f"stopped at the epoch budget ({params['epochs']}) before the loss stopped improving by "
                      f"tol={params['tol']}; increase epochs or tol", ConvergenceWarning, stacklevel=4)
    return Outcome(state, error)


# --------------------------------------------------------------------------- partial_fit


@dataclasses.dataclass
class PartialSession:
    """What persists between partial_fit calls: the engine state, the seed, the history so far."""

    state: Any
    seed: int
    history: list
    lr: float = 0.0


def check_partial_fit(spec: Spec, params: dict[str, Any]) -> None:
    """The options partial_fit cannot honour, as errors (before the data is looked at).

    The defaults are partial_fit's own: ``standardize=None`` is False (one batch cannot give the data's
    moments) and ``lr=None`` is ``1/L`` of the first batch's curvature, kept for the later calls.
    """
    if params["standardize"] or params["lr"] == "auto" or spec.solver != "gd":
        raise ValueError("partial_fit needs solver='gd', standardize=False and a numeric lr: standardisation, "
                         "lr='auto' and the normal/gram solvers need the whole data set, use fit")
    if params["backend"] not in ("cpu", "cuda"):
        raise ValueError(f"partial_fit runs on backend='cpu' or 'cuda', got backend={params['backend']!r}")


def partial_fit(spec: Spec, params: dict[str, Any], source: InMemory, session: PartialSession | None,
                current: FittedState | None, *, one_output: bool,
                feature_names: np.ndarray | None) -> tuple[Outcome, PartialSession]:
    """One epoch over ``source``, continuing ``session`` (or starting from ``current``, a fit's result, or init)."""
    from linreg._engine import EngineRun, EngineState

    check_partial_fit(spec, params)
    on_device = params["backend"] == "cuda"  # the same epoch with its steps on the GPU (linreg.cuda_engine)
    if on_device:
        from linreg.cuda_engine import DeviceRows

        source = DeviceRows(source)
    n_features, n_outputs = source.n_features, source.n_outputs
    expected = current.coef.shape if session is None and current is not None else (
        session.state.W.shape if session is not None else None)
    if expected is not None and expected[1] != n_features:
        raise ValueError(f"X has {n_features} features, but LinearRegressor is expecting {expected[1]} features as "
                         "input (partial_fit continues the earlier calls or fit)")
    if expected is not None and expected[0] != n_outputs:
        raise ValueError(f"y has {n_outputs} outputs, but LinearRegressor was fitted with {expected[0]} "
                         "(partial_fit continues the earlier calls or fit)")
    if session is None:
        if current is not None:  # after fit (or load): continue from its parameters, as scikit-learn
            W0, b0 = current.coef, current.intercept
        else:
            W0, b0 = initial_params(params, n_features, n_outputs, source.dtype, None)
        state = EngineState.raw(W0, b0)
        lr = spec.lr
        if params["lr"] is None and lr == "auto":  # the default step: the first batch's curvature
            stats = source.statistics(None, gram=True, moments=False)
            lr = training.auto_lr(spec, stats, *training.standardization(stats, False, n_features))
        session = PartialSession(state, new_seed(params), [], float(lr))
    # One epoch per call; the cosine period stays the configured one (t_max, else epochs).
    single = dataclasses.replace(spec, tol=None, early_stopping=False, epochs=1, t_max=spec.t_max or spec.epochs,
                                 lr=session.lr, standardize=False)
    session.state.counters[codes.K_STOP] = codes.RUNNING  # no stopping rule in partial_fit (set before the run
    # starts: the cuda run copies the state to the device when it starts)
    if on_device:
        run = source.start_gd(single, session.state, session.lr, None, None, session.seed)
    else:
        run = EngineRun(source.X, source.Y, single, session.state, session.lr, 1, weights=source.weights,
                        seed=session.seed)
    run.advance(1)
    W, b, history = run.result()
    session.history.extend(history[: run.n_done].tolist())
    stop = codes.STOP_DIVERGED if run.diverged else codes.RUNNING
    state = _fitted(W, b, np.asarray(session.history), len(session.history), stop, session.lr, params=params,
                    one_output=one_output, feature_names=feature_names, dtype=source.dtype,
                    backend=params["backend"])
    error = None
    if run.diverged:
        error = DivergenceError(f"loss became non-finite in partial_fit with lr={session.lr:g}; "
                                "try a smaller lr or standardised features")
    return Outcome(state, error, run), session
