"""Training options, their validation, schedules, solvers and the CPU trainer around ``kernels.cpu_train``.

The objective (DESIGN.md section 1 plus the penalty; the bias is never penalised)::

    J(W, b) = sum_i s_i ||x_i W^T + b - y_i||^2 / (n_outputs * sum_i s_i)  +  alpha * R(W)
    R(W)    = (1 - l1_ratio) / 2 * ||W||_2^2 + l1_ratio * ||W||_1
              (penalty "l2": l1_ratio = 0; "l1": l1_ratio = 1; "elasticnet": as given)

with sample weights s (all 1 by default; then the data term is the seeds' mse).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from linreg import _validation as check

SOLVERS = ("gd", "normal", "gram")
OPTIMIZERS = ("sgd", "adam", "adamw")
PENALTIES = ("l2", "l1", "elasticnet", None)
SCHEDULES = ("constant", "invscaling", "step", "exponential", "cosine", "adaptive")
#: torch.optim's default weight decay per optimiser (weight_decay=None means this).
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 1e-2}


class ConvergenceWarning(UserWarning):
    """The epoch budget ended before the stopping rule (tol / early_stopping / adaptive) was met."""


class IllConditionedWarning(UserWarning):
    """The normal equations are singular or ill-conditioned; the exact solution may be inaccurate."""


@dataclass(frozen=True)
class Spec:
    """Validated training options (see LinearRegressor for their meaning)."""

    epochs: int
    lr: float | str
    solver: str
    batch_size: int | None
    shuffle: bool
    optimizer: str
    momentum: float
    dampening: float
    nesterov: bool
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    amsgrad: bool
    penalty: str | None
    alpha: float
    l1_ratio: float
    schedule: str
    power_t: float
    gamma: float
    step_size: int
    t_max: int | None
    eta_min: float
    tol: float | None
    n_iter_no_change: int
    early_stopping: bool
    validation_fraction: float
    standardize: bool

    def non_plain_options(self) -> list[str]:
        """The options that take this beyond the seeds' plain full-batch gradient descent."""
        plain = {"solver": "gd", "batch_size": None, "optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0,
                 "penalty": None, "schedule": "constant", "tol": None, "early_stopping": False,
                 "standardize": False}
        changed = [f"{name}={getattr(self, name)!r}" for name, value in plain.items() if getattr(self, name) != value]
        if self.lr == "auto":
            changed.append("lr='auto'")
        return changed

    @property
    def l1_share(self) -> float:
        return {"l1": 1.0, "elasticnet": self.l1_ratio}.get(self.penalty, 0.0)


def _real(value: Any, name: str, *, low: float, high: float = math.inf, low_open: bool = False,
          high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (math.isfinite(value) and ok_low and ok_high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or high == math.inf else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def make_spec(params: dict[str, Any]) -> Spec:
    """Validate the estimator's hyper-parameters; errors name the parameter, the expectation and the value."""
    p = params
    epochs = check.check_positive(p["epochs"], "epochs", integer=True)
    lr = p["lr"]
    if isinstance(lr, str):
        if lr != "auto":
            raise ValueError(f"lr must be a positive number or 'auto', got {lr!r}")
    else:
        lr = float(check.check_positive(lr, "lr"))
    solver = check.check_choice(p["solver"], "solver", SOLVERS)
    batch_size = p["batch_size"]
    if batch_size is not None:
        batch_size = int(check.check_positive(batch_size, "batch_size", integer=True))
    optimizer = check.check_choice(p["optimizer"], "optimizer", OPTIMIZERS)
    penalty = p["penalty"]
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of 'l2', 'l1', 'elasticnet' or None; got {penalty!r}")
    schedule = check.check_choice(p["schedule"], "schedule", SCHEDULES)
    weight_decay = DEFAULT_WEIGHT_DECAY[optimizer] if p["weight_decay"] is None else p["weight_decay"]
    betas = p["betas"]
    if not (isinstance(betas, tuple | list) and len(betas) == 2):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    tol = p["tol"]
    if tol is not None:
        tol = _real(tol, "tol", low=0.0)
    t_max = p["t_max"]
    if t_max is not None:
        t_max = int(check.check_positive(t_max, "t_max", integer=True))
    spec = Spec(
        epochs=int(epochs), lr=lr, solver=solver, batch_size=batch_size, shuffle=_flag(p["shuffle"], "shuffle"),
        optimizer=optimizer, momentum=_real(p["momentum"], "momentum", low=0.0),
        dampening=_real(p["dampening"], "dampening", low=0.0, high=1.0), nesterov=_flag(p["nesterov"], "nesterov"),
        weight_decay=_real(weight_decay, "weight_decay", low=0.0),
        betas=(_real(betas[0], "betas[0]", low=0.0, high=1.0, high_open=True),
               _real(betas[1], "betas[1]", low=0.0, high=1.0, high_open=True)),
        eps=_real(p["eps"], "eps", low=0.0), amsgrad=_flag(p["amsgrad"], "amsgrad"), penalty=penalty,
        alpha=_real(p["alpha"], "alpha", low=0.0), l1_ratio=_real(p["l1_ratio"], "l1_ratio", low=0.0, high=1.0),
        schedule=schedule, power_t=_real(p["power_t"], "power_t", low=0.0),
        gamma=_real(p["gamma"], "gamma", low=0.0, low_open=True),
        step_size=int(check.check_positive(p["step_size"], "step_size", integer=True)), t_max=t_max,
        eta_min=_real(p["eta_min"], "eta_min", low=0.0), tol=tol,
        n_iter_no_change=int(check.check_positive(p["n_iter_no_change"], "n_iter_no_change", integer=True)),
        early_stopping=_flag(p["early_stopping"], "early_stopping"),
        validation_fraction=_real(p["validation_fraction"], "validation_fraction", low=0.0, high=1.0,
                                  low_open=True, high_open=True),
        standardize=_flag(p["standardize"], "standardize"),
    )
    _check_combinations(spec)
    return spec


def _check_combinations(spec: Spec) -> None:
    if spec.nesterov and (spec.momentum <= 0 or spec.dampening != 0):
        raise ValueError("nesterov=True needs momentum > 0 and dampening=0 (as torch.optim.SGD)")
    if spec.optimizer != "sgd" and (spec.momentum or spec.nesterov or spec.dampening):
        raise ValueError(f"momentum, dampening and nesterov are SGD options; optimizer={spec.optimizer!r} "
                         "uses betas instead")
    if spec.lr == "auto" and spec.optimizer != "sgd":
        raise ValueError(f"lr='auto' is the gradient-descent step 1/L from the loss curvature; it needs "
                         f"optimizer='sgd', got {spec.optimizer!r} (Adam's step is not curvature-scaled)")
    if spec.schedule in ("adaptive",) and spec.tol is None:
        raise ValueError("schedule='adaptive' divides lr by 5 when the loss stops improving by tol: set tol "
                         "(scikit-learn uses 1e-3)")
    if spec.early_stopping and spec.tol is None:
        raise ValueError("early_stopping=True stops when the validation loss stops improving by tol: set tol "
                         "(scikit-learn uses 1e-3)")
    if spec.solver == "normal":
        if spec.penalty in ("l1", "elasticnet"):
            raise ValueError(f"solver='normal' solves least squares or ridge exactly; penalty={spec.penalty!r} has "
                             "no closed form: use solver='gd' or 'gram'")
        if spec.early_stopping:
            raise ValueError("early_stopping applies to iterative solvers, not solver='normal'")
    if spec.solver in ("normal", "gram") and spec.batch_size is not None:
        raise ValueError(f"solver={spec.solver!r} works on the whole data set's statistics; batch_size must be "
                         f"None, got {spec.batch_size}")


def learning_rates(spec: Spec, lr: float, epochs: int) -> np.ndarray:
    """Per-epoch learning rates of the schedule (adaptive: the constant base, divided in the loop).

    constant: lr; invscaling: lr / (epoch + 1) ** power_t (scikit-learn's, stepped per epoch);
    step: lr * gamma ** (epoch // step_size) (torch StepLR); exponential: lr * gamma ** epoch
    (torch ExponentialLR); cosine: eta_min + (lr - eta_min) * (1 + cos(pi * epoch / t_max)) / 2
    (torch CosineAnnealingLR; t_max defaults to epochs).
    """
    epoch = np.arange(epochs, dtype=np.float64)
    if spec.schedule in ("constant", "adaptive"):
        return np.full(epochs, lr)
    if spec.schedule == "invscaling":
        return lr / (epoch + 1.0) ** spec.power_t
    if spec.schedule == "step":
        return lr * spec.gamma ** np.floor(epoch / spec.step_size)
    if spec.schedule == "exponential":
        return lr * spec.gamma**epoch
    t_max = spec.t_max or spec.epochs
    return spec.eta_min + (lr - spec.eta_min) * (1.0 + np.cos(np.pi * epoch / t_max)) / 2.0


def standardizing_map(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """T with [ (X - mu) / sigma, 1 ] = [X 1] @ T, (n_features + 1) square."""
    n_features = mu.shape[0]
    T = np.eye(n_features + 1)
    T[np.arange(n_features), np.arange(n_features)] = 1.0 / sigma
    T[n_features, :n_features] = -mu / sigma
    return T


def auto_lr(spec: Spec, G: np.ndarray, weight_total: float, n_outputs: int) -> float:
    """1 / L, L the largest eigenvalue of the objective's Hessian 2/(n_outputs * sum s) * G (+ alpha's L2 part
    and weight_decay).

    A step of 1/L never increases a quadratic objective along any eigen-direction
    (the factor 1 - lr * lambda stays in [0, 1)), so full-batch gradient descent cannot diverge.
    """
    hessian = 2.0 / (n_outputs * weight_total) * G
    largest = float(np.linalg.eigvalsh(hessian)[-1]) + spec.alpha * (1.0 - spec.l1_share) * (spec.penalty is not None)
    # torch-style weight decay adds weight_decay * W to the gradient: curvature too.
    return 1.0 / (largest + spec.weight_decay)


def solve_normal(spec: Spec, G: np.ndarray, C: np.ndarray, weight_total: float,
                 n_outputs: int) -> np.ndarray:
    """theta = [W b]^T minimising the objective exactly: (G + ridge) theta = C, ridge on the weights only.

    The system is scaled by its diagonal before solving (Jacobi equilibration),
    which removes the ill-conditioning that comes only from feature scale, then
    solved by Cholesky; singular systems get the minimum-norm lstsq solution.
    """
    n_features = G.shape[0] - 1
    system = G.copy()
    if spec.penalty == "l2" and spec.alpha > 0:
        ridge = n_outputs * weight_total * spec.alpha / 2.0
        system[np.arange(n_features), np.arange(n_features)] += ridge
    scale = np.sqrt(np.diag(system))
    scale[scale == 0] = 1.0
    scaled = system / np.outer(scale, scale)
    condition = np.linalg.cond(scaled)
    if not np.isfinite(condition) or condition > 1.0 / np.finfo(np.float64).eps:
        warnings.warn(f"the normal equations are singular (condition number {condition:.3g} after scaling): "
                      "returning the minimum-norm least-squares solution; consider penalty='l2' with alpha > 0",
                      IllConditionedWarning, stacklevel=4)
        theta = np.linalg.lstsq(scaled, C / scale[:, None], rcond=None)[0]
    else:
        if condition > 1e10:
            warnings.warn(f"the normal equations are ill-conditioned (condition number {condition:.3g} after "
                          f"scaling): expect to lose about {math.log10(condition):.0f} of 16 digits; consider "
                          "penalty='l2' with alpha > 0", IllConditionedWarning, stacklevel=4)
        theta = _cholesky_solve(scaled, C / scale[:, None])
    return theta / scale[:, None]


def _cholesky_solve(system: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve the symmetric system by Cholesky (half the work of LU and no pivoting: it is positive
    definite once scaled and regular); one that is not (rounding at the edge of singularity) falls
    back to the minimum-norm least-squares solution."""
    try:
        lower = np.linalg.cholesky(system)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(system, rhs, rcond=None)[0]
    n = lower.shape[0]
    z = np.empty_like(rhs, dtype=np.float64)
    for i in range(n):  # forward substitution: lower @ z = rhs
        z[i] = (rhs[i] - lower[i, :i] @ z[:i]) / lower[i, i]
    theta = np.empty_like(z)
    for i in range(n - 1, -1, -1):  # back substitution: lower.T @ theta = z
        theta[i] = (z[i] - lower[i + 1:, i] @ theta[i + 1:]) / lower[i, i]
    return theta


def normal_solution(spec: Spec, G: np.ndarray, C: np.ndarray, yy: np.ndarray, weight_total: float,
                    mu: np.ndarray, sigma: np.ndarray, shift_x: np.ndarray | None = None,
                    shift_y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """The exact minimiser ``(W, b)`` in original units from the Gram statistics, and its objective.

    With ``spec.standardize`` the system is solved for the standardised features
    (``mu``, ``sigma``), so an L2 penalty applies to the standardised coefficients
    ``W * sigma``, as gradient descent with standardize=True does.

    ``shift_x``, ``shift_y``: the statistics are those of ``[X - shift_x, 1]`` and
    ``Y - shift_y`` (``kernels.cpu_gram.centred_gram``, accurate for data far from 0);
    W is the same and the intercept is shifted back here.
    """
    n_features, n_outputs = G.shape[0] - 1, C.shape[1]
    shift_x = np.zeros(n_features) if shift_x is None else shift_x
    shift_y = np.zeros(n_outputs) if shift_y is None else shift_y
    T = standardizing_map(mu - shift_x, sigma) if spec.standardize else np.eye(n_features + 1)
    theta = T @ solve_normal(spec, T.T @ G @ T, T.T @ C, weight_total, n_outputs)
    W, b = theta[:n_features].T, theta[n_features] + shift_y - theta[:n_features].T @ shift_x
    # The residuals of the shifted problem at theta are those of the original one at (W, b).
    data_term = sum(theta[:, o] @ G @ theta[:, o] - 2 * theta[:, o] @ C[:, o] + yy[o] for o in range(n_outputs))
    objective = float(data_term / (n_outputs * weight_total))
    if spec.penalty == "l2":
        penalised = W * sigma if spec.standardize else W
        objective += spec.alpha / 2 * float((penalised * penalised).sum())
    return W, b, objective


def split_validation(n_samples: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train_rows, validation_rows), validation = ceil(fraction * n) rows as scikit-learn."""
    n_validation = math.ceil(fraction * n_samples)
    if n_validation < 1 or n_samples - n_validation < 1:
        raise ValueError(f"validation_fraction={fraction} leaves {n_samples - n_validation} training and "
                         f"{n_validation} validation samples out of {n_samples}; need at least 1 of each")
    order = np.random.default_rng(seed).permutation(n_samples)
    return np.sort(order[n_validation:]).astype(np.int64), np.sort(order[:n_validation]).astype(np.int64)
