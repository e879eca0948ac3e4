"""``LinearRegressor``: the public estimator, in scikit-learn's conventions.

Hyper-parameters are stored as given in ``__init__`` and validated in ``fit``;
fitted attributes end in ``_``.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from linreg import _validation as check
from linreg.backends import BACKENDS, get_backend

INITS = ("ones", "zeros", "randn")


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss. The estimator keeps the last finite parameters."""


class NotFittedError(ValueError, AttributeError):
    """The estimator was used before ``fit``."""


class LinearRegressor:
    """Linear regression ``y = X @ coef_.T + intercept_`` trained by gradient descent on our kernels.

    Parameters (keyword-only)
    -------------------------
    epochs : int, default 500
        Full-batch gradient-descent epochs (seed 000's value).
    lr : float, default 1e-5
        Learning rate (seed 000's value). The update is ``W -= lr * dW``.
    init : {"ones", "zeros", "randn"} or (W, b), default "ones"
        Initial parameters. "ones" is seed 000's, "randn" seed 003's (standard
        normal from ``numpy.random.default_rng(random_state)``). Explicit
        arrays: W of shape (n_outputs, n_features) (or (n_features,) for a
        1-D y) and b of shape (n_outputs,) (or a scalar).
    backend : {"cpu", "torch"}, default "cpu"
        "cpu" runs our Numba kernels; "torch" runs the seeds' autograd loop
        (the reference; needs PyTorch).
    random_state : int or None
        Seed of the "randn" initialisation.
    progress : bool, default False
        Show a tqdm progress bar with the live loss. The compiled loop then
        returns to Python about 100 times per fit instead of once.

    Attributes
    ----------
    coef_ : ndarray (n_outputs, n_features), or (n_features,) when y is 1-D
    intercept_ : ndarray (n_outputs,), or a scalar when y is 1-D
    loss_history_ : ndarray (n_iter_,) float64, the loss of each epoch before its update
    n_iter_ : int, epochs run
    n_features_in_ : int
    """

    def __init__(self, *, epochs: int = 500, lr: float = 1e-5, init: str | tuple = "ones",
                 backend: str = "cpu", random_state: int | None = None, progress: bool = False) -> None:
        self.epochs = epochs
        self.lr = lr
        self.init = init
        self.backend = backend
        self.random_state = random_state
        self.progress = progress

    # -- scikit-learn's parameter protocol ------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        return [p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> LinearRegressor:
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for LinearRegressor; valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, defaults.get(k))]
        return f"LinearRegressor({', '.join(changed)})"

    # -- fitting ----------------------------------------------------------------------------
    def _check_params(self) -> None:
        check.check_positive(self.epochs, "epochs", integer=True)
        check.check_positive(self.lr, "lr")
        check.check_choice(self.backend, "backend", tuple(BACKENDS))
        if isinstance(self.init, str):
            check.check_choice(self.init, "init", INITS)
        elif not (isinstance(self.init, tuple | list) and len(self.init) == 2):
            raise TypeError(f"init must be one of {INITS} or a (W, b) pair of arrays, got {self.init!r}")

    def _initial_params(self, n_features: int, n_outputs: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        shape = (n_outputs, n_features)
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

    def fit(self, X: Any, y: Any) -> LinearRegressor:
        """Train on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_outputs).

        Raises DivergenceError if the loss becomes non-finite; the fitted
        attributes then hold the last finite parameters and the history so far.
        """
        self._check_params()
        X2, Y2 = check.check_X_y(X, y)
        one_output = np.ndim(y) == 1
        n_samples, n_features = X2.shape
        n_outputs = Y2.shape[1]
        W0, b0 = self._initial_params(n_features, n_outputs, X2.dtype)
        backend = get_backend(self.backend)

        run = backend.start_gd(X2, Y2, W0, b0, float(self.lr), int(self.epochs))
        epochs = int(self.epochs)
        if self.progress:
            self._advance_with_progress(run, epochs)
        else:
            run.advance(epochs)
        W, b, history = run.result()

        self._backend = backend
        self._one_output = one_output
        self.n_features_in_ = n_features
        self.coef_ = W[0] if one_output else W
        self.intercept_ = b[0] if one_output else b
        self.n_iter_ = run.n_done
        self.loss_history_ = history[: run.n_done]
        if run.diverged:
            raise DivergenceError(
                f"loss became non-finite ({history[-1]}) at epoch {run.n_done} with lr={self.lr}; "
                f"the model keeps the parameters of epoch {max(run.n_done - 1, 0)} (last finite loss). "
                "Try a smaller lr or scale the features."
            )
        return self

    def _advance_with_progress(self, run, epochs: int) -> None:
        from tqdm.auto import tqdm

        block = max(1, epochs // 100)
        with tqdm(total=epochs, desc=f"fit ({self.backend})", unit="epoch") as bar:
            while run.n_done < epochs and not run.diverged:
                done = run.advance(min(block, epochs - run.n_done))
                bar.update(done)
                history = run.result()[2]
                if len(history):
                    bar.set_postfix(loss=f"{history[-1]:.6g}", refresh=False)

    # -- using the fit --------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this LinearRegressor is not fitted yet; call fit(X, y) first")

    def predict(self, X: Any) -> np.ndarray:
        """Predictions ``X @ coef_.T + intercept_``: 1-D if fitted on a 1-D y."""
        self._check_fitted()
        X = check.check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but this model was fitted with {self.n_features_in_}")
        W = np.atleast_2d(self.coef_)
        b = np.atleast_1d(self.intercept_)
        dtype = np.promote_types(X.dtype, W.dtype)
        P = self._backend.predict(X.astype(dtype, copy=False), W.astype(dtype), b.astype(dtype))
        return P[:, 0] if self._one_output else P

    def score(self, X: Any, y: Any) -> float:
        """Coefficient of determination R^2, averaged uniformly over outputs (as scikit-learn)."""
        self._check_fitted()
        X2, Y2 = check.check_X_y(X, y)
        n_outputs = 1 if self._one_output else np.shape(self.coef_)[0]
        if Y2.shape[1] != n_outputs:
            raise ValueError(f"y has {Y2.shape[1]} outputs, but this model was fitted with {n_outputs}")
        P = np.asarray(self.predict(X2), dtype=np.float64).reshape(Y2.shape)
        Y64 = Y2.astype(np.float64)
        residual = ((Y64 - P) ** 2).sum(axis=0)
        total = ((Y64 - Y64.mean(axis=0)) ** 2).sum(axis=0)
        # scikit-learn's force_finite convention for constant targets.
        r2 = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), np.where(residual == 0, 1.0, 0.0))
        return float(r2.mean())


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return a is b
