"""The training rules that are plain maths: schedules, the standardising map, lr="auto", the exact solve, the split.

The options themselves (their defaults and validation) are declared in ``linreg.options``.

The objective (DESIGN.md section 1 plus the penalty; the bias is never penalised)::

    J(W, b) = sum_i s_i ||x_i W^T + b - y_i||^2 / (n_outputs * sum_i s_i)  +  alpha * R(W)
    R(W)    = (1 - l1_ratio) / 2 * ||W||_2^2 + l1_ratio * ||W||_1
              (penalty "l2": l1_ratio = 0; "l1": l1_ratio = 1; "elasticnet": as given)

with sample weights s (all 1 by default; then the data term is the seeds' mse).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from linreg.options import Spec


class ConvergenceWarning(UserWarning):
    """The epoch budget ended before the stopping rule (tol / early_stopping / adaptive) was met."""


class IllConditionedWarning(UserWarning):
    """The normal equations are singular or ill-conditioned; the exact solution may be inaccurate."""


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


@dataclasses.dataclass
class Statistics:
    """What one pass over the data gives: Gram statistics of ``A = [X 1]`` (``G = A^T S A``, ``C = A^T S Y``,
    ``yy = diag(Y^T S Y)``) and/or weighted column moments, from any source (rows in memory, chunks, ranks)."""

    G: np.ndarray | None = None
    C: np.ndarray | None = None
    yy: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    n_samples: int | None = None  # the rows they cover (all ranks)
    weighted: bool = False  # whether sample weights were applied
    #: Set when G, C, yy are those of the data shifted near its mean (``[X - shift_x, 1]``, ``Y - shift_y``:
    #: ``kernels.cpu_gram.centred_gram``), which keeps the exact solve accurate for data far from 0.
    shift_x: np.ndarray | None = None
    shift_y: np.ndarray | None = None
    #: Instead of G when G is too large to form (sparse X with many features, ``linreg.sparse``): the largest
    #: eigenvalue of the data term's Hessian 2/(n_outputs * sum s) * G in the coordinates the fit trains in.
    hessian_eigenvalue: float | None = None

    @property
    def weight_total(self) -> float:
        return float(self.G[-1, -1])

    def uncentred(self) -> Statistics:
        """The same statistics about 0 (what lr="auto", the Gram solver and inference read)."""
        if self.shift_x is None:
            return self
        from linreg.kernels import cpu_gram

        G, C, yy = cpu_gram.uncentre(self.G, self.C, self.yy, self.shift_x, self.shift_y)
        return dataclasses.replace(self, G=G, C=C, yy=yy, shift_x=None, shift_y=None)


def batch_rows(batch_size: int | None, n_rows: int) -> int:
    """Rows per batch: the whole data for None (full batch), at most ``n_rows``."""
    return n_rows if batch_size is None else min(batch_size, n_rows)


def standardization(statistics: Statistics, standardize: bool, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the reparametrisation: the column moments, constant columns left unscaled (as scikit-learn's
    StandardScaler); zeros and ones without ``standardize``."""
    if not standardize:
        return np.zeros(n_features), np.ones(n_features)
    return statistics.mean, np.where(statistics.std > 0, statistics.std, 1.0)


def to_original_units(W: np.ndarray, b: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
                      standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Parameters of the standardised features, as parameters of the original ones: ``W / sigma``,
    ``b - (W / sigma) @ mu`` (copies)."""
    if not standardize:
        return W.copy(), b.copy()
    W = W / sigma
    return W, b - W @ mu


def to_standardized_units(W: np.ndarray, b: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
                          standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of ``to_original_units``: ``W * sigma``, ``b + W @ mu``."""
    if not standardize:
        return W, b
    return W * sigma, b + W @ mu


def standardizing_map(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """T with [ (X - mu) / sigma, 1 ] = [X 1] @ T, (n_features + 1) square."""
    n_features = mu.shape[0]
    T = np.eye(n_features + 1)
    T[np.arange(n_features), np.arange(n_features)] = 1.0 / sigma
    T[n_features, :n_features] = -mu / sigma
    return T


def auto_lr(spec: Spec, statistics: Statistics, mu: np.ndarray, sigma: np.ndarray) -> float:
    """1 / L, L the largest eigenvalue of the objective's Hessian 2/(n_outputs * sum s) * G (+ alpha's L2 part
    and weight_decay), in the optimiser's coordinates (standardised by (mu, sigma) with ``spec.standardize``).

    A step of 1/L never increases a quadratic objective along any eigen-direction
    (the factor 1 - lr * lambda stays in [0, 1)), so full-batch gradient descent cannot diverge.
    """
    if statistics.G is None and statistics.hessian_eigenvalue is not None:
        largest = statistics.hessian_eigenvalue
    else:
        G = statistics.uncentred().G
        if spec.standardize:
            T = standardizing_map(mu, sigma)
            G = T.T @ G @ T
        hessian = 2.0 / (statistics.C.shape[1] * statistics.weight_total) * G
        largest = float(np.linalg.eigvalsh(hessian)[-1])
    largest += spec.alpha * (1.0 - spec.l1_share) * (spec.penalty is not None)
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
