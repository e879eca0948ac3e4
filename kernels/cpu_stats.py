"""Statistics for inference on the CPU: the heteroskedasticity-robust "meat" in one fused pass.

Shapes (as in ``kernels.cpu_train``)::

    X (n_samples, n_features), Y (n_samples, n_outputs), data in float32 or float64
    weights (n_samples,) float64         sample weights s_i; empty means all 1
    theta (F+1, O) float64               parameters [W b]^T of A = [X 1] (intercept last, as the Gram layout)
    B (k, F+1) float64                   any factor with B^T B = G^+ (G = A^T S A); only read for leverages
    M (O, F+1, F+1) float64              the meat, one matrix per output
    ssr (O,) float64                     weighted residual sums of squares

Formulas. With a_i = [x_i 1], residual r_io = a_i^T theta_o - y_io and the
leverage h_i = s_i a_i^T G^+ a_i = s_i ||B a_i||^2 (the diagonal of the hat
matrix of the whitened design sqrt(S) A, as statsmodels' WLS has it)::

    M_o   = sum_i (s_i r_io)^2 / (1 - h_i)^power  a_i a_i^T      power 0 (HC0, HC1), 1 (HC2), 2 (HC3)
    ssr_o = sum_i s_i r_io^2
    max_leverage = max_i h_i                                      (0 when power is 0: not computed)

The robust covariance is then ``G^+ M_o G^+`` (``linreg.inference``). ``B`` is
lower triangular when ``lower`` is true (the inverse Cholesky factor of the
scaled G), so the leverage costs (F+1)^2/2 multiply-adds per row, as M does.

Parallel strategy: as in ``kernels.cpu``: the rows are cut into chunks whose
layout depends only on n_samples (``kernels.cpu.chunking``), each chunk owns its
partial (M, ssr, max leverage), and the partials are combined by one thread in
chunk order, so results are bit-identical for any thread count. All
accumulation is in float64; float32 data is converted element by element.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cpu

_FASTMATH = {"reassoc", "contract"}


# error_model="numpy": a leverage of exactly 1 gives 1 / 0 = inf (then NaN standard errors, as statsmodels
# gives, and linreg.inference warns), not a ZeroDivisionError from inside the parallel region.
@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _meat_rows(X, Y, weights, theta, B, lower, power, start, stop, a, u, M, ssr):
    """M, ssr of rows [start, stop) into this chunk's parts (upper triangles of M); returns the max leverage."""
    n_features = X.shape[1]
    n_outputs = Y.shape[1]
    size = n_features + 1
    for o in range(n_outputs):
        ssr[o] = 0.0
        for f in range(size):
            for g in range(size):
                M[o, f, g] = 0.0
    max_leverage = 0.0
    for i in range(start, stop):
        s = weights[i] if weights.shape[0] > 0 else 1.0
        for f in range(n_features):
            a[f] = np.float64(X[i, f])
        a[n_features] = 1.0
        factor = 1.0
        if power > 0:
            leverage = 0.0
            for k in range(B.shape[0]):
                acc = 0.0
                for f in range(k + 1 if lower else size):
                    acc += B[k, f] * a[f]
                leverage += acc * acc  # h = s ||B a||^2
            leverage *= s
            max_leverage = max(max_leverage, leverage)
            factor = 1.0 / (1.0 - leverage)
            if power == 2:
                factor *= factor
        for o in range(n_outputs):
            r = -np.float64(Y[i, o])
            for f in range(size):
                r += a[f] * theta[f, o]
            ssr[o] += s * r * r
            u[o] = (s * r) * (s * r) * factor
        for o in range(n_outputs):
            c = u[o]
            for f in range(size):
                cf = c * a[f]
                for g in range(f, size):
                    M[o, f, g] += cf * a[g]
    return max_leverage


@njit(parallel=True, cache=True)
def _meat(X, Y, weights, theta, B, lower, power, parallel, chunk_rows, n_chunks, a_parts, u_parts, M_parts, ssr_parts,
          leverage_parts, M, ssr):
    n_samples = X.shape[0]
    if parallel:
        for c in prange(n_chunks):
            lo = c * chunk_rows
            leverage_parts[c] = _meat_rows(X, Y, weights, theta, B, lower, power, lo, min(lo + chunk_rows, n_samples),
                                           a_parts[c], u_parts[c], M_parts[c], ssr_parts[c])
    else:
        for c in range(n_chunks):
            lo = c * chunk_rows
            leverage_parts[c] = _meat_rows(X, Y, weights, theta, B, lower, power, lo, min(lo + chunk_rows, n_samples),
                                           a_parts[c], u_parts[c], M_parts[c], ssr_parts[c])
    size = M.shape[1]
    for o in range(M.shape[0]):
        for f in range(size):
            for g in range(f, size):
                acc = 0.0
                for c in range(n_chunks):
                    acc += M_parts[c, o, f, g]
                M[o, f, g] = acc
                M[o, g, f] = acc
        acc = 0.0
        for c in range(n_chunks):
            acc += ssr_parts[c, o]
        ssr[o] = acc
    max_leverage = 0.0
    for c in range(n_chunks):
        max_leverage = max(max_leverage, leverage_parts[c])
    return max_leverage


def robust_meat(X: np.ndarray, Y: np.ndarray, theta: np.ndarray, weights: np.ndarray | None = None,
                B: np.ndarray | None = None, lower: bool = False,
                power: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """``(M, ssr, max_leverage)`` of the module doc in one pass over (X, Y); ``B`` is needed for power 1 or 2."""
    if X.ndim != 2 or Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"robust_meat needs X (n, F) and Y (n, O), got {X.shape} and {Y.shape}")
    n_samples, n_features = X.shape
    n_outputs = Y.shape[1]
    size = n_features + 1
    if theta.shape != (size, n_outputs):
        raise ValueError(f"theta must have shape {(size, n_outputs)} (intercept last), got {theta.shape}")
    if power not in (0, 1, 2):
        raise ValueError(f"power must be 0 (HC0/HC1), 1 (HC2) or 2 (HC3), got {power}")
    if power > 0 and (B is None or B.ndim != 2 or B.shape[1] != size):
        raise ValueError(f"leverages (power {power}) need B with shape (k, {size}), got "
                         f"{None if B is None else B.shape}")
    weights = np.empty(0, np.float64) if weights is None else np.ascontiguousarray(weights, np.float64)
    B = np.zeros((0, size)) if power == 0 or B is None else np.ascontiguousarray(B, np.float64)
    theta = np.ascontiguousarray(theta, np.float64)
    chunk_rows, n_chunks = cpu.chunking(n_samples)
    work = n_samples * size * (size * n_outputs + (B.shape[0] if power else 0))
    parallel = work >= cpu.PARALLEL_MIN_WORK
    M, ssr = np.empty((n_outputs, size, size)), np.empty(n_outputs)
    max_leverage = _meat(X, Y, weights, theta, B, bool(lower), np.int64(power), parallel, chunk_rows, n_chunks,
                         np.empty((n_chunks, size)), np.empty((n_chunks, n_outputs)),
                         np.empty((n_chunks, n_outputs, size, size)), np.empty((n_chunks, n_outputs)),
                         np.empty(n_chunks), M, ssr)
    return M, ssr, float(max_leverage)
