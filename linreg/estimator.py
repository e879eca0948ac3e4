"""``LinearRegressor``: the public estimator, in scikit-learn's conventions.

Hyper-parameters are stored as given in ``__init__`` and validated in ``fit``;
fitted attributes end in ``_``. The objective and the options are documented
in ``linreg.training`` and the README.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from linreg import _validation as check
from linreg import driver, options
from linreg.backends import get_backend
from linreg.driver import DivergenceError  # noqa: F401  (linreg.DivergenceError)
from linreg.options import Spec


class NotFittedError(ValueError, AttributeError):
    """The estimator was used before ``fit``.

    Raised as a subclass that is also scikit-learn's ``sklearn.exceptions.NotFittedError``
    when scikit-learn is installed (imported only then: it costs 0.7 s), so code
    written for either library catches it.
    """


def _not_fitted_error(message: str) -> NotFittedError:
    global _SKLEARN_NOT_FITTED
    if _SKLEARN_NOT_FITTED is None:
        try:
            from sklearn.exceptions import NotFittedError as SklearnNotFittedError
        except ImportError:
            _SKLEARN_NOT_FITTED = NotFittedError
        else:
            _SKLEARN_NOT_FITTED = type("NotFittedError", (NotFittedError, SklearnNotFittedError),
                                       {"__module__": __name__, "__doc__": NotFittedError.__doc__})
    return _SKLEARN_NOT_FITTED(message)


_SKLEARN_NOT_FITTED: type | None = None


class LinearRegressor:
    """Linear regression ``y = X @ coef_.T + intercept_`` trained on hand-written Numba kernels.

    The defaults fit any finite data: 500 epochs of full-batch gradient descent with
    the curvature-scaled step (lr="auto") on standardised features
    (``linreg.options.resolve_defaults``). Seed 000's settings are
    ``LinearRegressor(epochs=500, lr=1e-5, init="ones")``. The objective is the mean squared error (the
    seeds' ``mse``) plus ``alpha * R(W)`` for a penalty; see ``linreg.training``.

    Parameters are keyword-only; each is declared once in ``linreg.options.OPTIONS``
    (its default, its check, its ``linreg train`` flag and its documentation,
    the README's options table). They are listed at the end of this docstring.

    Attributes
    ----------
    coef_ (n_outputs, n_features) or (n_features,) for a 1-D y; intercept_ (n_outputs,) or scalar;
    loss_history_ (n_iter_,): each epoch's objective (full batch: before the epoch's update; mini-batch:
    the weighted mean of the batch losses, each before its update); validation_loss_history_ with
    early_stopping; n_iter_; stop_reason_ ("epochs", "tol", "early_stopping", "adaptive", "diverged");
    lr_ (the learning rate used, e.g. from lr="auto"); n_features_in_; feature_names_in_ (DataFrames).
    """

    def __init__(self, **params: Any) -> None:  # the signature is OPTIONS' (set below the class)
        unknown = sorted(set(params) - set(options.DEFAULTS))
        if unknown:
            raise TypeError(f"LinearRegressor() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                            f"the options are {', '.join(options.DEFAULTS)}")
        for name, default in options.DEFAULTS.items():
            setattr(self, name, params.get(name, default))

    # -- scikit-learn's estimator protocol ----------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        return list(options.DEFAULTS)

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
                    regressor_tags=RegressorTags(), input_tags=InputTags(sparse=True))

    def __repr__(self) -> str:
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, options.DEFAULTS[k])]
        return f"LinearRegressor({', '.join(changed)})"

    # -- validation ---------------------------------------------------------------------------
    def _spec(self) -> Spec:
        """The training options, validated; every other option is checked too (errors before any work)."""
        params = self.get_params()
        spec = options.make_spec(params)
        return spec

    def _check_data(self, X: Any, y: Any, sample_weight: Any, *, finite: bool = True):
        """The validated data as an in-memory source, whether y was 1-D, and X's column names.

        ``finite=False``: the NaN/Inf scan is left to the source's Gram pass (the exact solvers)."""
        if self.backend == "cuda":
            from linreg import cuda_backend

            if cuda_backend.is_device_data(X, y, sample_weight):  # validated on the device and used in place
                from linreg.cuda_engine import DeviceData

                X2, Y2 = cuda_backend.check_device_X_y(X, y)
                one_output = getattr(y, "ndim", None) == 1
                return DeviceData(X2, Y2, *cuda_backend.check_device_sample_weight(sample_weight, X2.shape[0]),
                                  y_was_1d=one_output), one_output, None
        if check.is_sparse(X):  # scipy.sparse: its own source and kernels, never densified (linreg.sparse)
            from linreg import sparse

            source, one_output = sparse.source(X, y, sample_weight, self._spec(), self.get_params())
            return source, one_output, None
        names = check.feature_names(X)
        X2, Y2, one_output = check.check_X_y(X, y, finite=finite)
        weights = check.check_sample_weight(sample_weight, X2.shape[0])
        return driver.InMemory(X2, Y2, weights, checked_finite=finite, y_was_1d=one_output), one_output, names

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
        ``X`` may be Parquet data (a ``.parquet`` file, a directory of them, a
        ``pyarrow.dataset.Dataset`` or a ``linreg.parquet.Parquet``), streamed the same way,
        with ``y`` (and ``sample_weight``) naming columns: ``fit("data.parquet", y="price")``.
        """
        from linreg import outofcore

        if outofcore.is_out_of_core(X, y, sample_weight):  # .npy paths or np.memmap: stream row chunks
            if resume:
                raise ValueError("resume=True needs in-memory data: checkpoints are not supported for .npy paths or "
                                 "np.memmap inputs (out of core) yet")
            return outofcore.fit(self, X, y, sample_weight)
        spec = self._spec()
        # The Gram pass of the exact solvers propagates NaN/Inf into its statistics: it checks those instead of a
        # separate pass over X, and locates the first bad entry only then.
        fused_check = spec.solver in ("normal", "gram") and self.backend == "cpu"
        source, one_output, names = self._check_data(X, y, sample_weight, finite=not fused_check)
        # Compile (or load) this fit's kernels first, timed apart from training; Ctrl-C here leaves the model
        # untouched, with a message saying nothing was trained.
        from linreg import compilation  # imports numba: not at import linreg

        preparation = compilation.prepare_fit(self, getattr(source, "matrix", source.X), source.Y, source.weights,
                                              validated=True)
        self._partial_session = None  # a later partial_fit continues from this fit's coef_
        outcome = driver.fit(spec, self.get_params(), source, one_output=one_output, feature_names=names,
                             previous=self.fitted_state() if hasattr(self, "coef_") else None, resume=resume,
                             interruptible=not compilation.warming_up())
        outcome.state.compile_seconds = preparation.seconds
        self.load_fitted_state(outcome.state)
        outcome.raise_error()
        return self

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinearRegressor:
        """One epoch over (X, y), continuing from the current parameters and optimiser state.

        The first call initialises from ``init``. Stopping rules (tol,
        early_stopping) do not apply; schedules advance one epoch per call.
        standardize and lr="auto" need the whole data set: use fit.
        """
        spec = self._spec()
        driver.check_partial_fit(spec, self.get_params())
        source, one_output, names = self._check_data(X, y, sample_weight)
        session = getattr(self, "_partial_session", None)
        current = self.fitted_state() if session is None and hasattr(self, "coef_") else None
        outcome, self._partial_session = driver.partial_fit(spec, self.get_params(), source, session, current,
                                                            one_output=one_output, feature_names=names)
        self.load_fitted_state(outcome.state)
        outcome.raise_error()
        return self

    # -- the fitted state ---------------------------------------------------------------------
    def fitted_state(self) -> driver.FittedState:
        """The fit's result as one object (what ``save`` writes and ``load_fitted_state`` restores)."""
        self._check_fitted()
        return driver.FittedState(
            coef=np.atleast_2d(self.coef_), intercept=np.atleast_1d(self.intercept_), loss_history=self.loss_history_,
            n_iter=self.n_iter_, stop_reason=self.stop_reason_, lr=self.lr_, one_output=self._one_output,
            backend=self._backend.name, feature_names=getattr(self, "feature_names_in_", None),
            validation_loss_history=getattr(self, "validation_loss_history_", None),
            statistics=getattr(self, "_statistics", None))

    def load_fitted_state(self, state: driver.FittedState) -> LinearRegressor:
        """Every fitted attribute from ``state``, all at once: nothing from an earlier fit survives."""
        self._backend = get_backend(state.backend)
        self._one_output = state.one_output
        self._statistics = state.statistics
        self.n_features_in_ = state.n_features
        for name, value in (("feature_names_in_", state.feature_names),
                            ("validation_loss_history_", state.validation_loss_history)):
            if value is not None:
                setattr(self, name, value)
            else:
                self.__dict__.pop(name, None)
        self.coef_ = state.coef[0] if state.one_output else state.coef
        self.intercept_ = state.intercept[0] if state.one_output else state.intercept
        self.loss_history_ = state.loss_history
        self.n_iter_ = int(state.n_iter)
        self.stop_reason_ = state.stop_reason
        self.lr_ = state.lr  # None for solver="normal": no learning rate
        self.compile_seconds_ = state.compile_seconds
        return self

    # -- using the fit ------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise _not_fitted_error("This LinearRegressor instance is not fitted yet. Call 'fit' with appropriate "
                                    "arguments before using this estimator.")

    def predict(self, X: Any) -> np.ndarray:
        """Predictions ``X @ coef_.T + intercept_``: 1-D if fitted on a 1-D y."""
        self._check_fitted()
        names = check.feature_names(X)
        fitted_names = getattr(self, "feature_names_in_", None)
        if names is not None and fitted_names is not None and list(names) != list(fitted_names):
            raise ValueError(f"The feature names should match those that were passed during fit: fitted with "
                             f"{list(fitted_names)}, got {list(names)}")
        if check.is_sparse(X):  # the sparse kernels, whatever the backend
            from linreg import sparse

            P = sparse.predict(X, np.atleast_2d(self.coef_), np.atleast_1d(self.intercept_), self.n_features_in_)
            return P[:, 0] if self._one_output else P
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
        if check.is_sparse(X):
            from linreg import sparse

            X2, Y2, _ = sparse.check_X_y(X, y)
        else:
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

    def inference(self, X: Any = None, y: Any = None, sample_weight: Any = None, *, cov_type: str = "nonrobust",
                  alpha: float = 0.05):
        """Standard errors, t and p values, intervals and a summary at the least-squares optimum (statsmodels' names).

        ``cov_type``: "nonrobust", "HC0", "HC1", "HC2" or "HC3"; ``alpha``: 0.05 gives
        95% intervals. A fit that computed the Gram statistics (solver="normal" or
        "gram", lr="auto") keeps them, so "nonrobust" needs no data; otherwise, and
        always for the HC types (one more pass over the rows), pass the data the
        model was fitted on (and the same ``sample_weight``): arrays, or ``.npy``
        paths / memmaps (streamed). Refuses penalised or early-stopped fits (ValueError)
        and gradient fits farther than 1e-3 standard errors from the optimum
        (``linreg.NotConvergedError``). Returns a ``linreg.inference.InferenceResult``;
        see that module for the formulas and what each covariance type assumes.
        """
        from linreg import inference

        return inference.compute(self, X, y, sample_weight, cov_type=cov_type, alpha=alpha)

    def save(self, path) -> None:
        """Write the fitted model to ``path`` (.npz, readable without unpickling); see ``linreg.load``."""
        from linreg.persistence import save

        save(self, path)


LinearRegressor.__doc__ += "\n    Parameters\n    ----------\n" + options.signature_doc() + "\n"
LinearRegressor.__init__.__signature__ = inspect.Signature(
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=option.default)
       for option in options.OPTIONS])


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return a is b
