"""``LinearRegressor``: the public estimator, in scikit-learn's conventions.

Hyper-parameters are stored as given in ``__init__`` and validated in ``fit``;
fitted attributes end in ``_``. The objective and the options are documented
in ``linreg.training`` and the README.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import Any

import numpy as np

from linreg import _validation as check
from linreg import training
from linreg.backends import BACKENDS, get_backend
from linreg.training import ConvergenceWarning, Spec

INITS = ("ones", "zeros", "randn")
#: What ``stop_reason_`` can say.
STOP_REASONS = {0: "epochs", 1: "tol", 2: "early_stopping", 3: "adaptive", 4: "diverged", 5: "interrupted"}
#: Target wall time of one block of epochs between checks for Ctrl-C, progress and checkpoints.
BLOCK_SECONDS = 0.25


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss. The estimator keeps the last finite parameters."""


class NotFittedError(ValueError, AttributeError):
    """The estimator was used before ``fit``."""


class LinearRegressor:
    """Linear regression ``y = X @ coef_.T + intercept_`` trained on hand-written Numba kernels.

    The defaults are seed 000's: 500 epochs of full-batch gradient descent at
    lr 1e-5 from weights of ones. The objective is the mean squared error (the
    seeds' ``mse``) plus ``alpha * R(W)`` for a penalty; see ``linreg.training``.

    Parameters (keyword-only; see the README for each option's reference)
    ------------------------------------------------------------------------
    epochs : int, default 500            passes over the data
    lr : float or "auto", default 1e-5   "auto": 1/L from the Hessian's largest eigenvalue
    solver : "gd" | "normal" | "gram"    streaming (mini-batch) GD, exact least squares, GD on Gram statistics
    batch_size : int or None             None: full batch (the seeds)
    shuffle : bool, default True         reshuffle mini-batches each epoch (seeded by random_state)
    optimizer : "sgd" | "adam" | "adamw" torch.optim's update rules
    momentum, dampening, nesterov        torch.optim.SGD's
    weight_decay : float or None         torch's (None: torch's default, 0.01 for AdamW); weights only
    betas, eps, amsgrad                  torch.optim.Adam/AdamW's
    penalty : "l2" | "l1" | "elasticnet" | None, alpha, l1_ratio
    schedule : "constant" | "invscaling" | "step" | "exponential" | "cosine" | "adaptive"
    power_t, gamma, step_size, t_max, eta_min   schedule parameters (per epoch)
    tol, n_iter_no_change                stop when the loss stops improving by tol
    early_stopping, validation_fraction  stop on a held-out fraction's loss; keep the best parameters
    standardize : bool                   fit on standardised features, report coef_ in original units
    init : "ones" | "zeros" | "randn" | (W, b)
    backend : "cpu" | "torch" | "cuda"   "torch": the seeds' autograd loop; "cuda": our numba-cuda kernels, the
                                         loop on the GPU, host or device arrays (both plain full-batch GD only)
    warm_start : bool                    start fit from the previous coef_ and intercept_
    random_state : int or None           seeds init="randn", the shuffle and the validation split
    progress : bool                      tqdm progress bar with the live loss
    checkpoint_every, checkpoint_path    write the run's whole state every N epochs (atomically); fit(resume=True)

    Attributes
    ----------
    coef_ (n_outputs, n_features) or (n_features,) for a 1-D y; intercept_ (n_outputs,) or scalar;
    loss_history_ (n_iter_,): each epoch's objective (full batch: before the epoch's update; mini-batch:
    the weighted mean of the batch losses, each before its update); validation_loss_history_ with
    early_stopping; n_iter_; stop_reason_ ("epochs", "tol", "early_stopping", "adaptive", "diverged");
    lr_ (the learning rate used, e.g. from lr="auto"); n_features_in_; feature_names_in_ (DataFrames).
    """

    def __init__(self, *, epochs: int = 500, lr: float | str = 1e-5, solver: str = "gd",
                 batch_size: int | None = None, shuffle: bool = True, optimizer: str = "sgd",
                 momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float | None = None, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 amsgrad: bool = False, penalty: str | None = None, alpha: float = 1e-4, l1_ratio: float = 0.15,
                 schedule: str = "constant", power_t: float = 0.25, gamma: float = 0.1, step_size: int = 30,
                 t_max: int | None = None, eta_min: float = 0.0, tol: float | None = None,
                 n_iter_no_change: int = 5, early_stopping: bool = False, validation_fraction: float = 0.1,
                 standardize: bool = False, init: str | tuple = "ones", backend: str = "cpu",
                 warm_start: bool = False, random_state: int | None = None, progress: bool = False,
                 checkpoint_every: int | None = None, checkpoint_path: str | None = None) -> None:
        self.epochs = epochs
        self.lr = lr
        self.solver = solver
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.optimizer = optimizer
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.betas = betas
        self.eps = eps
        self.amsgrad = amsgrad
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.schedule = schedule
        self.power_t = power_t
        self.gamma = gamma
        self.step_size = step_size
        self.t_max = t_max
        self.eta_min = eta_min
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.standardize = standardize
        self.init = init
        self.backend = backend
        self.warm_start = warm_start
        self.random_state = random_state
        self.progress = progress
        self.checkpoint_every = checkpoint_every
        self.checkpoint_path = checkpoint_path

    # -- scikit-learn's estimator protocol ----------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        return [p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> LinearRegressor:
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator LinearRegressor. "
                                 f"Valid parameters are: {valid!r}.")
            setattr(self, name, value)
        return self

    _estimator_type = "regressor"

    def __sklearn_tags__(self):
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

        return Tags(estimator_type="regressor", target_tags=TargetTags(required=True, multi_output=True),
                    regressor_tags=RegressorTags(), input_tags=InputTags())

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, defaults.get(k))]
        return f"LinearRegressor({', '.join(changed)})"

    # -- validation ---------------------------------------------------------------------------
    def _spec(self) -> Spec:
        params = self.get_params()
        spec = training.make_spec(params)
        check.check_choice(self.backend, "backend", tuple(BACKENDS))
        if isinstance(self.init, str):
            check.check_choice(self.init, "init", INITS)
        elif not (isinstance(self.init, tuple | list) and len(self.init) == 2):
            raise TypeError(f"init must be one of {INITS} or a (W, b) pair of arrays, got {self.init!r}")
        if not isinstance(self.warm_start, bool) or not isinstance(self.progress, bool):
            raise TypeError("warm_start and progress must be True or False")
        if self.checkpoint_every is not None:
            check.check_positive(self.checkpoint_every, "checkpoint_every", integer=True)
            if self.checkpoint_path is None:
                raise ValueError("checkpoint_every needs checkpoint_path, the file to write the checkpoints to")
        if self.random_state is not None:
            if isinstance(self.random_state, bool) or not isinstance(self.random_state, int | np.integer):
                raise TypeError(f"random_state must be an int or None, got {self.random_state!r}")
            if not 0 <= self.random_state < 2**63:
                raise ValueError(f"random_state must be in [0, 2**63), got {self.random_state}")
        if self.checkpoint_path is not None:
            import os

            folder = os.path.dirname(os.path.abspath(os.fspath(self.checkpoint_path)))
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                raise ValueError(f"checkpoint_path {self.checkpoint_path!r}: the folder {folder!r} does not exist or "
                                 "is not writable")
        return spec

    def _initial_params(self, n_features: int, n_outputs: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        shape = (n_outputs, n_features)
        if self.warm_start and hasattr(self, "coef_"):
            W, b = np.atleast_2d(self.coef_), np.atleast_1d(self.intercept_)
            if W.shape != shape:
                raise ValueError(f"warm_start: the previous fit has coef_ shape {W.shape}, this data needs {shape}")
            return W.astype(dtype), b.astype(dtype)
        if self.init == "ones":
            return np.ones(shape, dtype), np.ones(n_outputs, dtype)
        if self.init == "zeros":
            return np.zeros(shape, dtype), np.zeros(n_outputs, dtype)
        if self.init == "randn":
            rng = np.random.default_rng(self.random_state)
            return rng.standard_normal(shape).astype(dtype), rng.standard_normal(n_outputs).astype(dtype)
        W = check.as_float_array(self.init[0], "init W")
        b = check.as_float_array(self.init[1], "init b")
        # A 1-D W and a scalar b are accepted for a single output, as seed 000 writes them.
        if W.shape not in {shape, (n_features,) if n_outputs == 1 else shape}:
            raise ValueError(f"init W must have shape {shape} for this data, got {W.shape}")
        if b.shape not in {(n_outputs,), () if n_outputs == 1 else (n_outputs,)}:
            raise ValueError(f"init b must have shape ({n_outputs},) for this data, got {b.shape}")
        check.check_finite(W.reshape(shape), "init W")
        check.check_finite(b.reshape(n_outputs), "init b")
        return W.reshape(shape).astype(dtype, copy=True), b.reshape(n_outputs).astype(dtype, copy=True)

    def _check_data(self, X: Any, y: Any, sample_weight: Any,
                    finite: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self.backend == "cuda":
            from linreg import cuda_backend

            if cuda_backend.is_device_data(X, y):  # validated on the device and used in place
                if sample_weight is not None:
                    raise ValueError("sample_weight needs backend='cpu' and host data")
                if self.checkpoint_path is not None:
                    raise ValueError("checkpoints fingerprint the data on the host: pass host arrays, or no "
                                     "checkpoint_path, with GPU data")
                self._names_seen = None
                self._y_was_1d = getattr(y, "ndim", None) == 1
                X2, Y2 = cuda_backend.check_device_X_y(X, y)
                return X2, Y2, None
        names = _feature_names(X)
        X2, Y2, self._y_was_1d = check.check_X_y(X, y, finite=finite)
        weights = check.check_sample_weight(sample_weight, X2.shape[0])
        self._names_seen = names
        return X2, Y2, weights

    def _seed(self) -> int:
        if self.random_state is None:
            return int(np.random.default_rng().integers(2**62))
        return int(self.random_state)

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, sample_weight: Any = None, *, resume: bool = False) -> LinearRegressor:
        """Train on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_outputs).

        ``sample_weight`` (n_samples,), non-negative: each sample's share of the loss.
        ``resume=True`` continues from the checkpoint at ``checkpoint_path`` (made
        by a fit with the same data and options, epochs aside) and ends exactly
        where an uninterrupted fit would; without a checkpoint file it starts fresh.

        Raises DivergenceError if the loss becomes non-finite or explodes; the
        fitted attributes then hold the last finite parameters and the history so
        far. On Ctrl-C (KeyboardInterrupt) they hold the last completed epoch, a
        checkpoint is written if one is configured, and the interrupt is re-raised.

        ``X``, ``y`` (and ``sample_weight``) may be ``.npy`` paths or ``np.memmap``
        arrays: then rows are streamed in chunks (``linreg.outofcore``), never loaded whole.
        """
        from linreg import outofcore

        if outofcore.is_out_of_core(X, y, sample_weight):  # .npy paths or np.memmap: stream row chunks
            if resume:
                raise ValueError("resume=True needs in-memory data: checkpoints are not supported for .npy paths or "
                                 "np.memmap inputs (out of core) yet")
            return outofcore.fit(self, X, y, sample_weight)
        spec = self._spec()
        # The Gram pass of the normal and gram solvers propagates NaN/Inf into its statistics: they check
        # those instead of a second pass over X (_fit_normal, _start_engine), and locate the first bad entry only then.
        fused_check = spec.solver in ("normal", "gram") and self.backend == "cpu"
        X2, Y2, weights = self._check_data(X, y, sample_weight, finite=not fused_check)
        one_output = self._y_was_1d
        self.__dict__.pop("_partial_state", None)  # a later partial_fit continues from this fit's coef_
        n_samples, n_features = X2.shape
        n_outputs = Y2.shape[1]
        W0, b0 = self._initial_params(n_features, n_outputs, X2.dtype)
        backend = get_backend(self.backend)
        unsupported = spec.non_plain_options() + (["sample_weight"] if weights is not None else [])
        checkpoint = self._checkpoint_setup(resume, X2, Y2, weights)
        seed = checkpoint["seed"] if checkpoint.get("meta") else self._seed()
        checkpoint["seed"] = seed

        if not unsupported:
            run = backend.start_gd(X2, Y2, W0, b0, float(spec.lr), spec.epochs)
            lr_used = float(spec.lr)
        elif backend.name != "cpu":
            raise ValueError(f"backend={backend.name!r} runs plain full-batch gradient descent only (the seeds' "
                             f"loop); these options need backend='cpu': {', '.join(unsupported)}")
        elif spec.solver == "normal":
            return self._fit_normal(spec, X2, Y2, weights, one_output, backend)
        else:
            run, lr_used = self._start_engine(spec, X2, Y2, weights, W0, b0, seed)
        if checkpoint.get("meta"):
            run.load_state_dict(checkpoint["state"])
            lr_used = checkpoint["meta"]["lr"]
        checkpoint["lr"] = lr_used

        interrupted = self._run_epochs(run, spec.epochs, checkpoint)
        self._finish(run, backend, one_output, n_features, X2.dtype, lr_used, interrupted)
        return self

    def _checkpoint_setup(self, resume: bool, X, Y, weights) -> dict:
        """What the block loop needs to write checkpoints, and the checkpoint to resume from, if any."""
        from linreg import checkpoint as checkpoints

        if not isinstance(resume, bool):
            raise TypeError(f"resume must be True or False, got {resume!r}")
        if resume and self.checkpoint_path is None:
            raise ValueError("resume=True reads the checkpoint at checkpoint_path: set checkpoint_path")
        if self.checkpoint_path is None:
            return {}
        setup = {"path": self.checkpoint_path, "every": self.checkpoint_every,
                 "data": checkpoints.fingerprint(X, Y, weights)}
        if resume:
            try:
                setup["meta"], setup["state"] = checkpoints.load(self.checkpoint_path, params=self.get_params(),
                                                                 data=setup["data"])
                setup["seed"] = setup["meta"]["seed"]
            except FileNotFoundError:
                warnings.warn(f"no checkpoint at {self.checkpoint_path}: starting from scratch", UserWarning,
                              stacklevel=3)
        return setup

    def _write_checkpoint(self, run, checkpoint: dict) -> None:
        from linreg import checkpoint as checkpoints

        checkpoints.save(checkpoint["path"], params=self.get_params(), state=run.state_dict(),
                         seed=checkpoint["seed"], lr=checkpoint["lr"], data=checkpoint["data"], n_done=run.n_done)

    def _start_engine(self, spec: Spec, X: np.ndarray, Y: np.ndarray, weights, W0, b0, seed: int):
        from kernels import cpu_train
        from linreg._engine import EngineRun, EngineState

        n_features, n_outputs = X.shape[1], Y.shape[1]
        rows = val_rows = None
        if spec.early_stopping:
            rows, val_rows = training.split_validation(X.shape[0], spec.validation_fraction, seed)
            if weights is not None:
                for name, part in (("training", rows), ("validation", val_rows)):
                    if not weights[part].sum() > 0:
                        raise ValueError(f"the {name} split has only zero sample weights; change random_state, "
                                         "validation_fraction or the weights")
        if spec.standardize:
            mu, sigma = cpu_train.column_moments(X, rows, weights)
            sigma = np.where(sigma > 0, sigma, 1.0)  # constant columns: as StandardScaler, leave unscaled
        else:
            mu, sigma = np.zeros(n_features), np.ones(n_features)
        gram = val_gram = None
        lr = spec.lr
        if spec.solver == "gram" or lr == "auto":
            G, C, yy = cpu_train.gram(X, Y, rows, weights)
            weight_total = G[n_features, n_features]
            if spec.solver == "gram":
                gram = (G, C, yy, weight_total)
                if val_rows is not None:
                    Gv, Cv, yyv = cpu_train.gram(X, Y, val_rows, weights)
                    val_gram = (Gv, Cv, yyv, Gv[n_features, n_features])
                # fit skipped the NaN/Inf scan for this solver: the statistics of every row tell instead.
                statistics = (G, C, yy) + (val_gram[:3] if val_gram else ())
                if not all(np.isfinite(s).all() for s in statistics):
                    check.check_X_y_finite(X, Y, self._y_was_1d)
            if lr == "auto":
                T = training.standardizing_map(mu, sigma) if spec.standardize else np.eye(n_features + 1)
                lr = training.auto_lr(spec, T.T @ G @ T, weight_total, n_outputs)
        state = EngineState(W0.astype(np.float64), b0.astype(np.float64), mu, sigma, spec.standardize)
        run = EngineRun(X, Y, spec, state, float(lr), spec.epochs, weights=weights, rows=rows, val_rows=val_rows,
                        seed=seed, gram=gram, val_gram=val_gram)
        return run, float(lr)

    def _fit_normal(self, spec: Spec, X, Y, weights, one_output: bool, backend) -> LinearRegressor:
        from kernels import cpu_gram, cpu_train

        n_features = X.shape[1]
        # Statistics of the data shifted near its mean (cpu_gram.centred_gram): the same W, and an exact
        # solve even for features far from 0; normal_solution shifts the intercept back.
        G, C, yy, shift_x, shift_y = cpu_gram.centred_gram(X, Y, None, weights)
        if not (np.isfinite(G).all() and np.isfinite(C).all() and np.isfinite(yy).all()):
            check.check_X_y_finite(X, Y, one_output)  # names the first NaN/Inf (else: overflow, as before)
        if spec.standardize:
            mu, sigma = cpu_train.column_moments(X, None, weights)
            sigma = np.where(sigma > 0, sigma, 1.0)
        else:
            mu, sigma = np.zeros(n_features), np.ones(n_features)
        W, b, objective = training.normal_solution(spec, G, C, yy, G[n_features, n_features], mu, sigma,
                                                   shift_x, shift_y)
        self._set_fitted(W.astype(X.dtype), b.astype(X.dtype), np.array([objective]), 1, "epochs", backend,
                         one_output, n_features, None, lr=None)
        return self

    def _run_epochs(self, run, epochs: int, checkpoint: dict) -> bool:
        """Advance ``run`` to ``epochs`` in blocks of about BLOCK_SECONDS; return True if interrupted.

        Between blocks (never inside the compiled loop): Ctrl-C is noticed, the
        progress bar and checkpoints are updated. Blocks grow from a few epochs to
        BLOCK_SECONDS' worth, so a fast fit still makes only a couple of calls.
        """
        import time

        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs, initial=run.n_done, desc=f"fit ({self.backend})", unit="epoch")
        every = checkpoint.get("every")
        block = 4
        try:
            with _interrupt_flag() as interrupt:
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
                        self._write_checkpoint(run, checkpoint)
                    if interrupt.is_set():
                        if checkpoint.get("path"):
                            self._write_checkpoint(run, checkpoint)
                        return True
                    if done < size:  # a stopping rule or divergence ended the run
                        break
        finally:
            if bar is not None:
                bar.close()
        if checkpoint.get("path") and not run.diverged:
            self._write_checkpoint(run, checkpoint)
        return False

    def _finish(self, run, backend, one_output: bool, n_features: int, dtype: np.dtype, lr: float,
                interrupted: bool = False) -> None:
        W, b, history = run.result()
        stop_code = getattr(run, "stop_code", 4 if run.diverged else 0)
        if interrupted:
            stop_code = 5
        if self.early_stopping and stop_code == 0 and hasattr(run, "best_result"):
            W, b = run.best_result()  # the epochs ran out first: still keep the best validated parameters
        val_history = getattr(run, "val_history", None)
        if val_history is not None and self.early_stopping:
            val_history = val_history[: run.n_done].copy()
        else:
            val_history = None
        self._set_fitted(W.astype(dtype), b.astype(dtype), history[: run.n_done], run.n_done,
                         STOP_REASONS[stop_code], backend, one_output, n_features, val_history, lr=lr)
        if interrupted:
            where = f"; checkpoint written to {self.checkpoint_path}" if self.checkpoint_path else ""
            raise KeyboardInterrupt(f"fit interrupted after epoch {run.n_done}: the model holds that epoch's "
                                    f"parameters and history{where}")
        if run.diverged:
            value = history[-1] if len(history) > run.n_done else float("nan")
            kind = "became non-finite" if not np.isfinite(value) else "exploded"
            raise DivergenceError(
                f"loss {kind} ({value:.6g}) at epoch {run.n_done} with lr={lr:g}; the model keeps the "
                f"parameters before the last step (its loss was the last finite one, "
                f"{self.loss_history_[-1] if run.n_done else float('nan'):.6g}). "
                "Try standardize=True, lr='auto' or a smaller lr."
            )
        uses_tol = self.tol is not None or self.early_stopping
        if uses_tol and self.stop_reason_ == "epochs":
            warnings.warn(f"stopped at the epoch budget ({self.epochs}) before the loss stopped improving by "
                          f"tol={self.tol}; increase epochs or tol", ConvergenceWarning, stacklevel=3)

    def _set_fitted(self, W, b, history, n_iter, reason, backend, one_output, n_features, val_history, *,
                    lr: float | None) -> None:
        """Every fitted attribute, all at once: nothing from an earlier fit survives."""
        self._backend = backend
        self._one_output = one_output
        self.n_features_in_ = n_features
        if self._names_seen is not None:
            self.feature_names_in_ = self._names_seen
        else:
            self.__dict__.pop("feature_names_in_", None)
        self.coef_ = W[0] if one_output else W
        self.intercept_ = b[0] if one_output else b
        self.loss_history_ = history
        self.n_iter_ = int(n_iter)
        self.stop_reason_ = reason
        if val_history is not None:
            self.validation_loss_history_ = val_history
        else:
            self.__dict__.pop("validation_loss_history_", None)
        self.lr_ = lr  # None for solver="normal": no learning rate

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinearRegressor:
        """One epoch over (X, y), continuing from the current parameters and optimiser state.

        The first call initialises from ``init``. Stopping rules (tol,
        early_stopping) do not apply; schedules advance one epoch per call.
        standardize and lr="auto" need the whole data set: use fit.
        """
        spec = self._spec()
        if spec.standardize or spec.lr == "auto" or spec.solver != "gd":
            raise ValueError("partial_fit needs solver='gd', standardize=False and a numeric lr: standardisation, "
                             "lr='auto' and the normal/gram solvers need the whole data set, use fit")
        if self.backend != "cpu":
            raise ValueError(f"partial_fit runs on backend='cpu', got backend={self.backend!r}")
        X2, Y2, weights = self._check_data(X, y, sample_weight)
        n_features, n_outputs = X2.shape[1], Y2.shape[1]
        from kernels import cpu_train
        from linreg._engine import EngineRun, EngineState

        state = getattr(self, "_partial_state", None)
        if state is None:
            if hasattr(self, "coef_"):  # after fit (or load): continue from its parameters, as scikit-learn
                W0, b0 = np.atleast_2d(self.coef_), np.atleast_1d(self.intercept_)
                if W0.shape != (n_outputs, n_features):
                    raise ValueError(f"partial_fit: X and y give shape {(n_outputs, n_features)}, the fitted "
                                     f"coef_ {W0.shape}")
            else:
                W0, b0 = self._initial_params(n_features, n_outputs, X2.dtype)
            state = EngineState(W0.astype(np.float64), b0.astype(np.float64), np.zeros(n_features),
                                np.ones(n_features), False)
            self._partial_state = state
            self._partial_seed = self._seed()
            self._partial_history = []
        elif state.W.shape != (n_outputs, n_features):
            raise ValueError(f"partial_fit: X and y give shape {(n_outputs, n_features)}, earlier calls "
                             f"{state.W.shape}")
        # One epoch per call; the cosine period stays the configured one (t_max, else epochs).
        single = dataclasses.replace(spec, tol=None, early_stopping=False, epochs=1, t_max=spec.t_max or spec.epochs)
        run = EngineRun(X2, Y2, single, state, float(spec.lr), 1, weights=weights, seed=self._partial_seed)
        state.counters[cpu_train.K_STOP] = cpu_train.RUNNING  # no stopping rule in partial_fit
        run.advance(1)
        W, b, history = run.result()
        self._partial_history.extend(history[: run.n_done].tolist())
        self._set_fitted(W.astype(X2.dtype), b.astype(X2.dtype), np.asarray(self._partial_history),
                         len(self._partial_history), "diverged" if run.diverged else "epochs",
                         get_backend("cpu"), self._y_was_1d, n_features, None, lr=float(spec.lr))
        if run.diverged:
            raise DivergenceError(f"loss became non-finite in partial_fit with lr={spec.lr:g}; "
                                  "try a smaller lr or standardised features")
        return self

    # -- using the fit ------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("This LinearRegressor instance is not fitted yet. Call 'fit' with appropriate "
                                 "arguments before using this estimator.")

    def predict(self, X: Any) -> np.ndarray:
        """Predictions ``X @ coef_.T + intercept_``: 1-D if fitted on a 1-D y."""
        self._check_fitted()
        names = _feature_names(X)
        fitted_names = getattr(self, "feature_names_in_", None)
        if names is not None and fitted_names is not None and list(names) != list(fitted_names):
            raise ValueError(f"The feature names should match those that were passed during fit: fitted with "
                             f"{list(fitted_names)}, got {list(names)}")
        device = False
        if self.backend == "cuda":
            from linreg import cuda_backend

            device = cuda_backend.is_device_data(X)
        X = cuda_backend.check_device_X(X) if device else check.check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but LinearRegressor is expecting "
                             f"{self.n_features_in_} features as input")
        W = np.atleast_2d(self.coef_)
        b = np.atleast_1d(self.intercept_)
        dtype = np.promote_types(X.dtype, W.dtype)
        if device:
            X = X if X.dtype == dtype else cuda_backend.require_cuda().cast(X, dtype)
        else:
            X = X.astype(dtype, copy=False)
        P = self._backend.predict(X, W.astype(dtype), b.astype(dtype))
        return P[:, 0] if self._one_output else P

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Coefficient of determination R^2, averaged uniformly over outputs (as scikit-learn)."""
        self._check_fitted()
        if self.backend == "cuda":
            from linreg import cuda_backend

            if cuda_backend.is_device_data(X, y):  # R^2 is a small host computation: bring the data over
                kernels = cuda_backend.require_cuda()
                X, y = (kernels.to_host(kernels.as_device_array(a)) if cuda_backend.is_device_data(a) else a
                        for a in (X, y))
        X2, Y2, _ = check.check_X_y(X, y)
        weights = check.check_sample_weight(sample_weight, X2.shape[0])
        n_outputs = 1 if self._one_output else np.shape(self.coef_)[0]
        if Y2.shape[1] != n_outputs:
            raise ValueError(f"y has {Y2.shape[1]} outputs, but this model was fitted with {n_outputs}")
        P = np.asarray(self.predict(X), dtype=np.float64).reshape(Y2.shape)
        Y64 = Y2.astype(np.float64)
        s = np.ones(len(Y64)) if weights is None else weights
        residual = (s[:, None] * (Y64 - P) ** 2).sum(axis=0)
        total = (s[:, None] * (Y64 - np.average(Y64, axis=0, weights=s)) ** 2).sum(axis=0)
        # scikit-learn's force_finite convention for constant targets.
        r2 = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), np.where(residual == 0, 1.0, 0.0))
        return float(r2.mean())

    def save(self, path) -> None:
        """Write the fitted model to ``path`` (.npz, readable without unpickling); see ``linreg.load``."""
        from linreg.persistence import save

        save(self, path)


class _interrupt_flag:
    """While active, Ctrl-C sets a flag instead of raising in the middle of a block (main thread only).

    A second Ctrl-C raises at once. Outside the main thread, or when the program
    has its own SIGINT handler, nothing changes.
    """

    def __enter__(self):
        import signal
        import threading

        self._set = False
        self._installed = (threading.current_thread() is threading.main_thread()
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


def _feature_names(X: Any) -> np.ndarray | None:
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = np.asarray(list(columns), dtype=object)
    return names if all(isinstance(name, str) for name in names) else None


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return a is b
