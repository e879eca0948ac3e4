"""Statistical inference for a fitted ``LinearRegressor``: standard errors, p-values, intervals, a summary.

``LinearRegressor.inference(X=None, y=None, sample_weight=None, *, cov_type="nonrobust", alpha=0.05)``
returns an ``InferenceResult`` with statsmodels' names (``params``, ``bse``,
``tvalues``, ``pvalues``, ``conf_int()``, ``rsquared``, ``rsquared_adj``,
``fvalue``, ``f_pvalue``, ``df_model``, ``df_resid``, ``scale``, ``nobs``,
``cov_params()``, ``cov_type``, ``summary()``). The numbers are those of
``statsmodels.api.OLS(y, add_constant(X))`` (``WLS(..., weights=sample_weight)``
when weighted): the intercept comes first, named ``const``, then the features.

Where the numbers come from. Everything is a function of the Gram statistics of
``A = [X 1]`` (``kernels.cpu_train``: ``G = A^T S A``, ``C = A^T S Y``, ``yy``)
and, for the robust covariances, of one more fused pass over the rows
(``kernels.cpu_stats.robust_meat``). A fit that computed the Gram statistics
anyway (``solver="normal"`` or ``"gram"``, ``lr="auto"``) keeps them on the
model, so ``"nonrobust"`` inference needs no data; otherwise (a plain gradient
fit, a model loaded from a file: the model file does not store them) pass the
data the model was fitted on. With ``G^+`` the pseudo-inverse of G (its inverse
when the design has full rank), ``r_i`` the residual, ``s_i`` the weight,
``h_i = s_i a_i^T G^+ a_i`` the leverage, ``n`` the number of rows (zero-weight
rows included, as statsmodels counts them) and ``k`` the rank of the design::

    nonrobust   cov = scale * G^+,  scale = sum s_i r_i^2 / (n - k)
    HC0         cov = G^+ (sum (s_i r_i)^2 a_i a_i^T) G^+
    HC1         HC0 * n / (n - k)
    HC2         HC0 with (s_i r_i)^2 / (1 - h_i)
    HC3         HC0 with (s_i r_i)^2 / (1 - h_i)^2

What each assumes: "nonrobust" that the errors are independent with constant
variance (1 / s_i times one variance when weighted); the HC types only that
they are independent (any variance per row): HC0 is White's estimator, biased
down in small samples; HC1 scales it by n / (n - k); HC2 and HC3 weight each
residual by its leverage (HC3 approximates the jackknife and is the safest in
small samples). t statistics, p-values and intervals use Student's t with
``df_resid`` degrees of freedom for every covariance type (statsmodels'
``fit(cov_type=..., use_t=True)``; statsmodels' own default for the HC types is
the normal distribution). The F statistic is ``mse_model / mse_resid`` for
"nonrobust" and the Wald test of all slopes with the robust covariance for the
HC types, as statsmodels computes both.

When it applies. Inference is about the least-squares optimum. After
``solver="normal"`` the parameters are the exact float64 solution from the Gram
statistics (for float32 data ``coef_`` is its float32 rounding). After a
gradient fit the gradient ``g = G theta - C`` at the fitted parameters is
computed from the Gram statistics, and with it their distance from the optimum
in standard errors, ``d = sqrt(g^T G^+ g / scale)`` (the Mahalanobis distance
of the fitted parameters from the optimum under the nonrobust covariance; the
gradient's norm in the inverse-Hessian metric). The result reports the fitted
parameters when ``d <= OPTIMUM_TOL_SE`` (1e-3: the fit's error moves no
reported figure by more than a thousandth of a standard error) and refuses
otherwise, naming the gradient norm and d (use ``solver="normal"``, or train
longer). A relative gradient norm would not do: on uncentred data (seed 000's
features are around 55) the gradient at zero is dominated by the means, and a
bias that is off by 3 still has a gradient 4e-5 times that one. With a penalty
(``penalty``, ``weight_decay``) or ``early_stopping`` the parameters are not
the least-squares optimum of the data, and inference refuses. A singular or
ill-conditioned design gives an ``IllConditionedWarning``.

Sparse X (``scipy.sparse``, as ``fit`` takes it) is never densified: the Gram statistics and the meat go by
columns of its CSC copy (``kernels.cpu_sparse``; the leverages from ``G^+``, (nnz_i + 1)^2 per row), for up
to ``linreg.sparse.GRAM_MAX_FEATURES`` features (G is (F+1)^2 dense), beyond which inference raises as the
Gram solvers do.

Where the pass runs: in memory, out of core (``.npy`` paths or ``np.memmap``:
row chunks through ``linreg.outofcore``, bounded memory) and across ranks of
torch.distributed (``linreg.distributed.inference``: each rank streams its shard,
the statistics are summed). The GPU backend does not compute these statistics
yet: a model fitted with ``backend="cuda"`` gets its inference on the CPU from X, y.

scipy (``scipy.stats``, for the t and F distributions) is imported here, lazily:
``import linreg`` does not import it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from linreg import _validation as check
from linreg.training import IllConditionedWarning, Statistics

COV_TYPES = ("nonrobust", "HC0", "HC1", "HC2", "HC3")
#: A gradient fit is accepted when its parameters are within this many standard errors of the optimum.
OPTIMUM_TOL_SE = 1e-3
#: Above this condition number of the diagonally scaled G, about 10 of 16 digits are lost: warn.
ILL_CONDITIONED = 1e10
#: A row whose leverage is this close to 1 makes HC2 / HC3 divide by (nearly) zero.
LEVERAGE_ONE = 1e-10


class NotConvergedError(ValueError):
    """The fitted parameters are not the least-squares optimum: inference would be meaningless."""


# --------------------------------------------------------------------------- the result


class InferenceResult:
    """Inference at the least-squares optimum, with statsmodels' names.

    One output (a model fitted on a 1-D y): ``params`` etc. are 1-D over
    ``exog_names`` (``const`` first), ``rsquared`` etc. scalars. Several
    outputs: one row per output (``params`` (n_outputs, n_features + 1),
    ``conf_int()`` (n_outputs, n_features + 1, 2), ``cov_params()``
    (n_outputs, k, k), ``rsquared`` (n_outputs,)).
    """

    def __init__(self, *, params, cov, ssr, centered_tss, nobs, rank, cov_type, alpha, exog_names, one_output,
                 gradient_norm, optimum_distance, exact, condition_number, notes, weighted) -> None:
        from scipy import stats

        n_outputs = params.shape[0]
        self.cov_type = cov_type
        self.alpha = float(alpha)
        self.exog_names = list(exog_names)
        self.nobs = float(nobs)
        self.df_model = float(rank - 1)
        self.df_resid = float(nobs - rank)
        self.condition_number = float(condition_number)
        self.gradient_norm = float(gradient_norm)
        self.optimum_distance = float(optimum_distance)  # standard errors from the optimum (0 when exact)
        self.exact = exact
        self.weighted = bool(weighted)
        self.notes = list(notes)
        self._one = one_output
        self._params = params  # (O, k), const first
        self._cov = cov  # (O, k, k)
        df = np.float64(self.df_resid)  # NumPy scalars: no ZeroDivisionError when n = k (NaN / inf, as statsmodels)
        bse = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
        with np.errstate(divide="ignore", invalid="ignore"):
            tvalues = params / bse
            pvalues = 2.0 * stats.t.sf(np.abs(tvalues), df) if df > 0 else np.full_like(tvalues, np.nan)
            ssr = np.asarray(ssr, np.float64)
            centered_tss = np.asarray(centered_tss, np.float64)
            rsquared = 1.0 - ssr / centered_tss
            rsquared_adj = 1.0 - (self.nobs - 1.0) / df * (1.0 - rsquared)
            scale = ssr / df
            ess = centered_tss - ssr
            if cov_type == "nonrobust":
                fvalue = (ess / np.float64(self.df_model)) / scale
                f_df = self.df_model
            else:  # Wald test of all slopes with the robust covariance (statsmodels' f_test)
                fvalue = np.empty(n_outputs)
                for o in range(n_outputs):
                    slopes, block = params[o, 1:], cov[o, 1:, 1:]
                    fvalue[o] = slopes @ np.linalg.pinv(block) @ slopes / slopes.shape[0] \
                        if np.isfinite(block).all() else np.nan
                f_df = float(params.shape[1] - 1)
            f_pvalue = stats.f.sf(fvalue, f_df, df) if df > 0 and f_df > 0 else np.full(n_outputs, np.nan)
        self._f_df = f_df
        shown = (lambda a: a[0]) if one_output else (lambda a: a)
        self.params, self.bse, self.tvalues, self.pvalues = (shown(a) for a in (params, bse, tvalues, pvalues))
        as_scalar = (lambda a: float(a[0])) if one_output else (lambda a: np.asarray(a, np.float64))
        self.ssr, self.centered_tss, self.ess, self.scale = (as_scalar(a) for a in (ssr, centered_tss, ess, scale))
        self.rsquared, self.rsquared_adj = as_scalar(rsquared), as_scalar(rsquared_adj)
        self.fvalue, self.f_pvalue = as_scalar(fvalue), as_scalar(f_pvalue)

    @property
    def n_outputs(self) -> int:
        return self._params.shape[0]

    def cov_params(self) -> np.ndarray:
        """The covariance of ``params``: (k, k), or (n_outputs, k, k) for several outputs."""
        return self._cov[0].copy() if self._one else self._cov.copy()

    def conf_int(self, alpha: float | None = None) -> np.ndarray:
        """The ``1 - alpha`` intervals (default: the alpha given to ``inference``): (k, 2) or (n_outputs, k, 2)."""
        from scipy import stats

        alpha = self.alpha if alpha is None else _check_alpha(alpha)
        q = stats.t.ppf(1.0 - alpha / 2.0, self.df_resid)
        params = self._params
        half = q * np.sqrt(np.diagonal(self._cov, axis1=1, axis2=2))
        interval = np.stack([params - half, params + half], axis=-1)
        return interval[0] if self._one else interval

    def summary(self, alpha: float | None = None) -> str:
        """A text table per output: coef, std err, t, P>|t|, the interval; then the fit statistics."""
        alpha = self.alpha if alpha is None else _check_alpha(alpha)
        blocks = [self._summary_block(o, alpha) for o in range(self.n_outputs)]
        return "\n\n".join(blocks)

    def _summary_block(self, o: int, alpha: float) -> str:
        width = 78
        pick = (lambda v: v) if self._one else (lambda v: v[o])
        params, bse, tvalues, pvalues = (np.atleast_2d(a)[o] if not self._one else a
                                         for a in (self.params, self.bse, self.tvalues, self.pvalues))
        interval = self.conf_int(alpha)
        interval = interval if self._one else interval[o]
        name_width = max(8, *(len(n) for n in self.exog_names)) + 1
        title = "Least-squares inference (linreg)" + ("" if self._one else f": output {o}")
        left = [("Dep. Variable:", "y" if self._one else f"y[{o}]"),
                ("Model:", "WLS" if self.weighted else "OLS"),
                ("No. Observations:", f"{self.nobs:.0f}"),
                ("Df Residuals:", f"{self.df_resid:.0f}"),
                ("Df Model:", f"{self.df_model:.0f}"),
                ("Covariance Type:", self.cov_type),
                ("Solution:", "exact (normal)" if self.exact else "gradient fit")]
        right = [("R-squared:", _fmt(pick(self.rsquared), 3, fixed=True)),
                 ("Adj. R-squared:", _fmt(pick(self.rsquared_adj), 3, fixed=True)),
                 ("F-statistic:", _fmt(pick(self.fvalue), 4)),
                 ("Prob (F-statistic):", f"{pick(self.f_pvalue):.3g}"),
                 ("Scale (resid. var.):", _fmt(pick(self.scale), 4)),
                 ("Cond. No.:", f"{self.condition_number:.3g}"),
                 ("Gradient norm:", f"{self.gradient_norm:.2e}")]
        if not self.exact:
            left.append(("Distance to optimum:", f"{self.optimum_distance:.2g} se"))
            right.append(("", ""))
        lines = [title.center(width), "=" * width]
        for (lk, lv), (rk, rv) in zip(left, right, strict=True):
            lines.append(f"{lk:<20}{lv:>18}   {rk:<22}{rv:>15}")
        lo_label, hi_label = f"[{alpha / 2:.3g}", f"{1 - alpha / 2:.3g}]"
        lines += ["=" * width,
                  " " * name_width + f"{'coef':>11}{'std err':>11}{'t':>10}{'P>|t|':>9}{lo_label:>13}{hi_label:>12}",
                  "-" * width]
        for j, name in enumerate(self.exog_names):
            lines.append(f"{name:<{name_width}}{_fmt(params[j], 4):>11}{_fmt(bse[j], 3):>11}"
                         f"{_fmt(tvalues[j], 3):>10}{pvalues[j]:>9.3f}{_fmt(interval[j, 0], 3):>13}"
                         f"{_fmt(interval[j, 1], 3):>12}")
        lines.append("=" * width)
        notes = [_COV_NOTES[self.cov_type], *self.notes]
        lines += ["", "Notes:"] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<InferenceResult cov_type={self.cov_type!r} nobs={self.nobs:.0f} params={self.n_outputs}x" \
               f"{len(self.exog_names)}>"


_COV_NOTES = {
    "nonrobust": "Standard Errors assume that the covariance matrix of the errors is correctly specified.",
    "HC0": "Standard Errors are heteroscedasticity robust (HC0).",
    "HC1": "Standard Errors are heteroscedasticity robust (HC1).",
    "HC2": "Standard Errors are heteroscedasticity robust (HC2).",
    "HC3": "Standard Errors are heteroscedasticity robust (HC3).",
}


def _fmt(value: float, precision: int, fixed: bool = False) -> str:
    """statsmodels' ``forg``: fixed point, or %g for very large or very small magnitudes."""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if not fixed and value != 0 and (abs(value) >= 1e4 or abs(value) < 10.0 ** -precision):
        return f"{value:.{precision}g}"
    return f"{value:.{precision}f}"


# --------------------------------------------------------------------------- validation


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating | np.integer) \
            or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be a number in (0, 1) (0.05 gives 95% intervals), got {alpha!r}")
    return float(alpha)


def _check_cov_type(cov_type: Any) -> str:
    if cov_type not in COV_TYPES:
        raise ValueError(f"cov_type must be one of {COV_TYPES}, got {cov_type!r}")
    return cov_type


def _check_applies(model) -> None:
    """Refuse fits whose parameters are not the plain least-squares optimum of the data."""
    from linreg import options

    spec = options.make_spec(model.get_params())
    if spec.penalty is not None and spec.alpha > 0:
        raise ValueError(f"inference is for the least-squares optimum; this model was fitted with "
                         f"penalty={spec.penalty!r}, alpha={spec.alpha:g}, whose standard errors are not the OLS ones. "
                         "Refit with penalty=None for inference")
    if spec.solver != "normal" and spec.weight_decay > 0:
        raise ValueError(f"inference is for the least-squares optimum; this model was fitted with "
                         f"weight_decay={spec.weight_decay:g} (an L2 penalty) on optimizer={spec.optimizer!r}. "
                         "Refit with weight_decay=0, or solver='normal'")
    if spec.early_stopping:
        raise ValueError("inference is for the least-squares optimum of all the rows; early_stopping fits a "
                         "random subset and keeps the parameters of the best validation loss. Refit with "
                         "early_stopping=False (solver='normal' is exact)")


# --------------------------------------------------------------------------- data sources


@dataclasses.dataclass
class _Rows:
    """The rows inference reads: in memory (one chunk) or streamed (a rank's chunks); counts are global."""

    chunks: Any  # callable -> iterator of (X, Y, weights or None)
    n_samples: int
    n_features: int
    n_outputs: int
    weighted: bool
    team: Any
    gram: Any  # callable -> (G, C, yy) over all rows (all ranks)
    close: Any = None


def _in_memory_rows(X, y, sample_weight) -> _Rows:
    from linreg.outofcore import SingleProcess

    if check.is_sparse(X):
        from linreg import sparse

        return sparse.inference_rows(X, y, sample_weight, SingleProcess())
    X2, Y2, _ = check.check_X_y(X, y)
    weights = check.check_sample_weight(sample_weight, X2.shape[0])

    def gram():
        from linreg.kernels import cpu_train

        return cpu_train.gram(X2, Y2, None, weights)

    return _Rows(lambda: iter([(X2, Y2, weights)]), X2.shape[0], X2.shape[1], Y2.shape[1], weights is not None,
                 SingleProcess(), gram)


def _streamed_rows(X, y, sample_weight, team, shards, chunk_bytes) -> _Rows:
    from linreg import outofcore

    team = team or outofcore.SingleProcess()
    data = outofcore.open_dataset(X, y, sample_weight)
    try:
        n = data.n_samples
        team.check_same(np.array([n, data.n_features, data.n_outputs, data.dtype.itemsize], np.int64),
                        "the data's shape and dtype")
        shards = outofcore.even_shards(n, team.world_size) if shards is None else \
            outofcore.check_shards(shards, n, team.world_size)
        team.check_same(np.array(shards, np.int64).ravel(), "the shards (row ranges) of the ranks")
        lo, hi = shards[team.rank]
        if data.weights is not None:
            outofcore._check_weights(data, lo, hi, team)
        reader = outofcore.ShardReader(data, lo, hi, outofcore.chunk_rows_for(
            data, outofcore.CHUNK_BYTES if chunk_bytes is None else chunk_bytes))
    except BaseException:
        data.close()
        raise

    def chunks() -> Iterator[tuple]:
        for k in range(reader.n_chunks):
            yield reader.read(k)

    def gram():
        stats = outofcore.statistics_pass(reader, team, gram=True, moments=False)
        return stats.G, stats.C, stats.yy

    return _Rows(chunks, n, data.n_features, data.n_outputs, data.weights is not None, team, gram, data.close)


# --------------------------------------------------------------------------- the computation


@dataclasses.dataclass
class _Design:
    """The pseudo-inverse of G, a leverage factor B (B^T B = G^+), the rank and the conditioning."""

    G_pinv: np.ndarray
    B: np.ndarray
    lower: bool
    rank: int
    scaled_condition: float
    condition_number: float


def _decompose(G: np.ndarray) -> _Design:
    """Pseudo-inverse of G through the eigen-decomposition of its diagonally scaled form (Jacobi scaling)."""
    size = G.shape[0]
    scale = np.sqrt(np.diag(G))
    scale[scale == 0] = 1.0
    scaled = G / np.outer(scale, scale)
    eigenvalues, vectors = np.linalg.eigh(scaled)
    tolerance = size * np.finfo(np.float64).eps * eigenvalues[-1]
    keep = eigenvalues > tolerance
    rank = int(keep.sum())
    scaled_condition = eigenvalues[-1] / eigenvalues[0] if eigenvalues[0] > 0 else math.inf
    raw = np.linalg.eigvalsh(G)
    condition_number = math.sqrt(raw[-1] / raw[0]) if raw[0] > 0 else math.inf  # statsmodels' "Cond. No."
    pinv_scaled = (vectors[:, keep] / eigenvalues[keep]) @ vectors[:, keep].T
    G_pinv = pinv_scaled / np.outer(scale, scale)
    G_pinv = (G_pinv + G_pinv.T) / 2.0
    B, lower = None, False
    if rank == size:
        try:  # the inverse Cholesky factor: lower triangular, half the work per row in the leverage pass
            B = np.linalg.inv(np.linalg.cholesky(scaled)) / scale[None, :]
            lower = True
        except np.linalg.LinAlgError:
            B = None
    if B is None:
        B = (vectors[:, keep] / np.sqrt(eigenvalues[keep])).T / scale[None, :]
    return _Design(G_pinv, np.ascontiguousarray(B), lower, rank, float(scaled_condition), condition_number)


def _warn_conditioning(design: _Design, size: int) -> list[str]:
    if design.rank < size:
        message = (f"the design [X 1] is singular: rank {design.rank} of {size} columns (condition number "
                   f"{design.scaled_condition:.3g} after scaling); some coefficients are not identified, and the "
                   "minimum-norm solution's standard errors (from the pseudo-inverse) describe only the "
                   "identified combinations. Remove collinear or constant columns")
    elif design.scaled_condition > ILL_CONDITIONED:
        message = (f"the design [X 1] is ill-conditioned (condition number {design.scaled_condition:.3g} after "
                   f"scaling): expect to lose about {math.log10(design.scaled_condition):.0f} of 16 digits in the "
                   "parameters and standard errors; this may indicate strong multicollinearity")
    else:
        return []
    warnings.warn(message, IllConditionedWarning, stacklevel=5)  # the caller of .inference
    return [message[0].upper() + message[1:] + "."]


def compute(model, X: Any = None, y: Any = None, sample_weight: Any = None, *, cov_type: str = "nonrobust",
            alpha: float = 0.05, team: Any = None, shards: Sequence[tuple[int, int]] | None = None,
            chunk_bytes: int | None = None) -> InferenceResult:
    """What ``LinearRegressor.inference`` returns; ``team``/``shards``: a rank's part of a distributed run."""
    from linreg import outofcore

    fitted = model.fitted_state()  # NotFittedError before a fit
    cov_type = _check_cov_type(cov_type)
    alpha = _check_alpha(alpha)
    _check_applies(model)
    kept: Statistics | None = fitted.statistics
    if (X is None) != (y is None):
        raise ValueError("pass both X and y (the data the model was fitted on), or neither")
    if X is None:
        if sample_weight is not None:
            raise ValueError("sample_weight without X and y: pass the data the model was fitted on with its weights")
        if kept is None:
            raise ValueError("inference needs X and y: this model keeps no Gram statistics (they are kept by fits "
                             "with solver='normal' or 'gram' or lr='auto', and not saved in model files); pass the "
                             "data it was fitted on: model.inference(X, y[, sample_weight])")
        if cov_type != "nonrobust":
            raise ValueError(f"cov_type={cov_type!r} needs one more pass over the data (the residuals and "
                             "leverages of every row): pass the data the model was fitted on, "
                             f"model.inference(X, y[, sample_weight], cov_type={cov_type!r})")
        rows = None
    elif team is not None or outofcore.is_out_of_core(X, y, sample_weight):
        rows = _streamed_rows(X, y, sample_weight, team, shards, chunk_bytes)
    else:
        names, fitted_names = check.feature_names(X), fitted.feature_names
        if names is not None and fitted_names is not None and list(names) != list(fitted_names):
            raise ValueError(f"X's columns should be those the model was fitted with: fitted with "
                             f"{list(fitted_names)}, got {list(names)}")
        rows = _in_memory_rows(X, y, sample_weight)
    try:
        return _compute(model, rows, kept, cov_type, alpha)
    finally:
        if rows is not None and rows.close is not None:
            rows.close()


def _compute(model, rows: _Rows | None, kept: Statistics | None, cov_type: str, alpha: float) -> InferenceResult:
    W = np.atleast_2d(np.asarray(model.coef_, np.float64))
    b = np.atleast_1d(np.asarray(model.intercept_, np.float64))
    n_outputs, n_features = W.shape
    size = n_features + 1
    if rows is not None:
        if (rows.n_features, rows.n_outputs) != (n_features, n_outputs):
            raise ValueError(f"X and y give {rows.n_features} features and {rows.n_outputs} outputs; the model was "
                             f"fitted with {n_features} features and {n_outputs} outputs: pass the data it was "
                             "fitted on")
        if kept is not None and kept.n_samples != rows.n_samples:
            raise ValueError(f"X and y have {rows.n_samples} rows; the model was fitted on {kept.n_samples}: pass the "
                             "data it was fitted on")
        if kept is not None and kept.weighted != rows.weighted:
            raise ValueError("the model was fitted " + ("with" if kept.weighted else "without") + " sample_weight; "
                             "pass the same sample_weight as the fit (weighted least squares needs the weights)")
    if kept is not None:
        G, C, yy, nobs, weighted = kept.G, kept.C, kept.yy, kept.n_samples, kept.weighted
    else:
        G, C, yy = rows.gram()
        nobs, weighted = rows.n_samples, rows.weighted
    if not G[n_features, n_features] > 0:
        raise ValueError("the weights sum to 0: no row carries information")
    design = _decompose(G)
    notes = _warn_conditioning(design, size)
    if nobs <= design.rank:
        message = (f"no residual degrees of freedom: {nobs} rows for {design.rank} independent columns of [X 1]; "
                   "the fit interpolates the data and standard errors, t, p and intervals are undefined (NaN)")
        warnings.warn(message, IllConditionedWarning, stacklevel=4)  # the caller of .inference
        notes.append(message[0].upper() + message[1:] + ".")

    theta_exact = design.G_pinv @ C  # (F+1, O), intercept last
    exact = model.solver == "normal"
    theta = theta_exact if exact else np.vstack([W.T, b[None, :]])
    weight_total = G[n_features, n_features]
    gradient = G @ theta - C
    gradient_norm = 2.0 / (n_outputs * weight_total) * float(np.linalg.norm(gradient))  # of the loss (MSE)
    df_resid = nobs - design.rank
    optimum_distance = 0.0
    if not exact:
        excess = np.maximum(np.einsum("fo,fo->o", gradient, design.G_pinv @ gradient), 0.0)  # ssr - ssr at optimum
        ssr_optimum = np.maximum(_ssr(theta_exact, G, C, yy), 0.0)
        scale_optimum = ssr_optimum / df_resid if df_resid > 0 else np.full(n_outputs, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = np.where(excess == 0.0, 0.0, np.sqrt(excess / scale_optimum))
        optimum_distance = float(np.max(np.where(np.isnan(distance), np.inf, distance)))
        if not optimum_distance <= OPTIMUM_TOL_SE:
            raise NotConvergedError(
                f"the fitted parameters are not the least-squares optimum: they are {optimum_distance:.3g} standard "
                f"errors from it (the gradient norm of the loss there is {gradient_norm:.3g}); inference needs at "
                f"most {OPTIMUM_TOL_SE:g} (linreg.inference.OPTIMUM_TOL_SE) to mean anything. Fit with "
                "solver='normal' (exact), or train to convergence (more epochs, a smaller tol, lr='auto' with "
                "standardize=True)")

    if cov_type == "nonrobust" or rows is None:
        ssr = np.maximum(_ssr(theta, G, C, yy), 0.0)  # the expansion can cancel below zero for an exact fit
        cov = np.stack([ssr[o] / df_resid * design.G_pinv for o in range(n_outputs)]) if df_resid > 0 else \
            np.full((n_outputs, size, size), np.nan)
    else:
        ssr, cov, notes_robust = _robust(rows, theta, design, cov_type, nobs, n_outputs, size)
        notes += notes_robust
    centered_tss = yy - C[n_features] ** 2 / weight_total
    order = np.r_[n_features, 0:n_features]  # statsmodels' add_constant order: const first
    names = getattr(model, "feature_names_in_", None)
    names = [str(n) for n in names] if names is not None else [f"x{j}" for j in range(n_features)]
    return InferenceResult(params=theta[order].T.copy(), cov=cov[:, order][:, :, order], ssr=ssr,
                           centered_tss=centered_tss, nobs=nobs, rank=design.rank, cov_type=cov_type, alpha=alpha,
                           exog_names=["const", *names], one_output=bool(model.fitted_state().one_output),
                           gradient_norm=gradient_norm, optimum_distance=optimum_distance, exact=exact,
                           condition_number=design.condition_number, notes=notes, weighted=weighted)


def _ssr(theta: np.ndarray, G: np.ndarray, C: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Weighted residual sums of squares from the Gram statistics: theta^T G theta - 2 theta^T C + yy per output."""
    return np.einsum("fo,fo->o", theta, G @ theta - 2.0 * C) + yy


def _robust(rows: _Rows, theta: np.ndarray, design: _Design, cov_type: str, nobs: int, n_outputs: int,
            size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One pass: the meat and the residual sums of squares of every chunk, summed (over ranks too)."""
    from linreg.kernels import cpu_sparse, cpu_stats

    power = {"HC0": 0, "HC1": 0, "HC2": 1, "HC3": 2}[cov_type]
    M, ssr = np.zeros((n_outputs, size, size)), np.zeros(n_outputs)
    near_one = 0.0
    for X, Y, weights in rows.chunks():
        if X.shape[0] == 0:
            continue
        if isinstance(X, cpu_sparse.SparseRows):  # sparse X: the leverages from G^+ (small: F <= the Gram limit)
            M_k, ssr_k, max_leverage = cpu_sparse.robust_meat(X, Y, theta, weights, design.G_pinv, power)
        else:
            M_k, ssr_k, max_leverage = cpu_stats.robust_meat(X, Y, theta, weights, design.B, design.lower, power)
        M += M_k
        ssr += ssr_k
        near_one += float(max_leverage >= 1.0 - LEVERAGE_ONE)
    total = rows.team.sum(np.concatenate([M.ravel(), ssr, [near_one]]), "the robust covariance statistics")
    M, ssr, near_one = total[:M.size].reshape(M.shape), total[M.size:M.size + n_outputs], total[-1]
    notes = []
    if power and near_one > 0:
        message = (f"some rows have leverage 1 (within {LEVERAGE_ONE:g}): {cov_type} divides their residuals by "
                   "1 - leverage, so its standard errors are not finite or not meaningful; use HC0 or HC1")
        warnings.warn(message, IllConditionedWarning, stacklevel=6)  # the caller of .inference
        notes.append(message[0].upper() + message[1:] + ".")
    df_resid = nobs - design.rank
    correction = nobs / df_resid if cov_type == "HC1" and df_resid > 0 else (math.nan if cov_type == "HC1" else 1.0)
    with np.errstate(invalid="ignore", over="ignore"):  # a leverage of 1 gives NaN (warned above)
        cov = np.stack([correction * design.G_pinv @ M[o] @ design.G_pinv for o in range(n_outputs)])
    return ssr, (cov + np.swapaxes(cov, 1, 2)) / 2.0, notes
