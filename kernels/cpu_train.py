"""Compiled training loops on the CPU: mini-batches, optimisers, penalties, stopping, sufficient statistics.

Shapes (as in ``kernels.cpu``)::

    X (n_samples, n_features), Y (n_samples, n_outputs), data in float32 or float64
    W (n_outputs, n_features), b (n_outputs,)        parameters, float64 here
    rows (n_rows,) int64                            row indices; empty means rows 0..n_samples-1 in order
    weights (n_samples,) float64                    sample weights; empty means all 1
    G (F+1, F+1), C (F+1, O), yy (O,)               Gram statistics of A = [X 1]:
        G = A^T S A, C = A^T S Y, yy = diag(Y^T S Y), S = diag(weights)

Formulas. For a batch B with weights s (1 if none) and residual R = X W^T + b - Y::

    L_B  = sum_{i in B} s_i ||R_i||^2 / (n_outputs * sum_{i in B} s_i)
    dW   = 2 / (n_outputs * sum s) * sum_i s_i R_i^T X_i,   db = 2 / (n_outputs * sum s) * sum_i s_i R_i
    with Gram statistics, theta = [W b]^T (F+1, O):
    L    = sum_o (theta_o^T G theta_o - 2 theta_o^T C_o + yy_o) / (n_outputs * sum s)
    grad = 2 / (n_outputs * sum s) * (G theta - C)

The optimiser works on float64 "master" parameters; each step casts them to the
data dtype for the streaming kernel (as ``kernels.cpu`` wants) and receives
float64 gradients. Standardisation is a reparametrisation, not a copy of X:
with standardised parameters (Ws, bs), the kernel sees ``W = Ws / sigma`` and
``b = bs - W @ mu``, and the chain rule gives ``dWs = (dW - db mu^T) / sigma``,
``dbs = db``.

X may also be sparse (``kernels.cpu_sparse.SparseRows``): the loops take their batches through
``_data_batch`` / ``_data_whole_batch``, which pick the dense or the sparse kernels by X's type when
numba compiles the loop, so each compiled variant reaches only its own kind's kernels. A sparse run whose
options leave a weight with zero gradient unchanged (``lazy_steps_exact``) takes its mini-batch steps on
the batch's features only (``_lazy_apply_step`` -> ``_apply_step_at``), chosen by the loop's ``lazy`` argument.

Parallel strategy: as in ``kernels.cpu``: a batch's rows are cut into chunks
whose layout depends only on the batch length (``kernels.cpu.chunking``), each
chunk owns its partial sums, and the partials are combined in chunk order, so
results do not depend on the thread count. Mini-batches (a few hundred rows)
take the serial path. The shuffle is a Fisher-Yates pass driven by splitmix64
of (seed, epoch): the same on every machine and thread count.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from . import cpu, cpu_gather, cpu_gram, cpu_sparse
from .codes import (  # noqa: F401
    ADAM,
    ADAMW,
    ADAPTIVE_MIN_LR,
    ELASTICNET,
    K_EPOCH,
    K_NO_IMPROVE,
    K_STEP,
    K_STOP,
    L1,
    L2,
    NO_PENALTY,
    RUNNING,
    S_BEST,
    S_FIRST_LOSS,
    S_LR_FACTOR,
    SGD,
    STOP_ADAPTIVE,
    STOP_DIVERGED,
    STOP_EARLY,
    STOP_TOL,
)

EXPLOSION_FACTOR = cpu.EXPLOSION_FACTOR

_FASTMATH = {"reassoc", "contract"}


# --------------------------------------------------------------------------- shuffling


@njit(cache=True)
def _splitmix64(state):
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state, z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def _multiply_high(a, b):
    """The high 64 bits of the 128-bit product a * b of two uint64 (from 32-bit halves: numba has no uint128)."""
    low_mask = np.uint64(0xFFFFFFFF)
    half = np.uint64(32)
    a_lo, a_hi = a & low_mask, a >> half
    b_lo, b_hi = b & low_mask, b >> half
    lo_lo, hi_lo, lo_hi = a_lo * b_lo, a_hi * b_lo, a_lo * b_hi
    cross = (lo_lo >> half) + (hi_lo & low_mask) + lo_hi  # < 2**64: (2**32 - 1)**2 + 2 * (2**32 - 1)
    return a_hi * b_hi + (hi_lo >> half) + (cross >> half)


@njit(cache=True)
def _shuffle_rows(order, rows, n_samples, seed, epoch):
    """order = a permutation of ``rows`` (or of 0..n_samples-1) that depends only on (seed, epoch).

    Fisher-Yates from the top; position i swaps with j = floor(z * (i + 1) / 2**64) for
    the next splitmix64 output z (Lemire's multiply-shift: the bias is below
    (i + 1) / 2**64, as ``z % (i + 1)``'s). A 64-bit division per row made the pass
    ~4x slower: its latency kept the random swaps from overlapping.
    """
    n = order.shape[0]
    for p in range(n):
        order[p] = rows[p] if rows.shape[0] > 0 else p
    state = np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + np.uint64(epoch)
    for i in range(n - 1, 0, -1):
        state, z = _splitmix64(state)
        j = np.int64(_multiply_high(z, np.uint64(i + 1)))
        order[i], order[j] = order[j], order[i]


def epoch_order(seed: int, epoch: int, n_samples: int, rows: np.ndarray | None = None) -> np.ndarray:
    """The row order of ``epoch`` for ``seed``: what a shuffled fit visits (tests feed it to torch)."""
    rows = np.empty(0, np.int64) if rows is None else np.asarray(rows, np.int64)
    order = np.empty(rows.shape[0] if rows.shape[0] else n_samples, np.int64)
    _shuffle_rows(order, rows, n_samples, np.int64(seed), np.int64(epoch))
    return order


# --------------------------------------------------------------------------- streaming kernels


# The per-step path of a serial mini-batch is compiled inline into the training loop (inline="always"): a
# call of a compiled function increments and decrements the reference count of each array argument (atomic
# operations, ~10 ns each here), which made the calls of a step cost ~1.5 us against ~0.1 us of work for a
# batch of 32 rows. The row kernel itself stays a call: inlined into the loop it compiled to slower code.
_copy_params = njit(cache=True, inline="always")(cpu.copy_params.py_func)
_combine = njit(cache=True, inline="always")(cpu._combine.py_func)


@njit(cache=True, inline="always")
def _batch_result(dW, db, dW_parts, db_parts, loss_parts, weight_parts, n_chunks, n_outputs):
    """(loss, weight sum) of a batch from its chunks' partials, dW and db scaled (``cpu._combine``'s order).

    A batch whose weights are all 0 returns (0, 0) and zero gradients: the training loop skips its step.
    """
    weight_total = 0.0
    for c in range(n_chunks):
        weight_total += weight_parts[c]
    if weight_total == 0.0:  # every sample of the batch has weight 0: it carries no information
        for o in range(n_outputs):
            db[o] = 0.0
            for f in range(dW.shape[1]):
                dW[o, f] = 0.0
        return 0.0, 0.0
    # The weighted mean is the plain combine with n_samples replaced by the weight sum.
    return _combine(dW, db, dW_parts, db_parts, loss_parts, n_chunks, n_outputs * weight_total), weight_total


@njit(parallel=True, cache=True)
def _gather_loss_grad_parallel(X, Y, W, b, rows, weights, start, stop, dW, db, chunk_rows, n_chunks,
                               residuals, dW_parts, db_parts, loss_parts, weight_parts):
    """``_gather_loss_grad`` of a batch large enough for the parallel chunk loop (``_engine._layouts``)."""
    for c in prange(n_chunks):
        lo = start + c * chunk_rows
        loss_parts[c], weight_parts[c] = cpu_gather._gather_block_rows(
            X, Y, W, b, rows, weights, lo, min(lo + chunk_rows, stop), residuals[c], dW_parts[c], db_parts[c])
    return _batch_result(dW, db, dW_parts, db_parts, loss_parts, weight_parts, n_chunks, W.shape[0])


@njit(cache=True, inline="always")
def _gather_loss_grad(X, Y, W, b, rows, weights, start, stop, dW, db, parallel, chunk_rows, n_chunks,
                      residuals, dW_parts, db_parts, loss_parts, weight_parts):
    """Loss of positions [start, stop) (weighted mean, see module doc); float64 dW, db. Returns (loss, sum s).

    The rows are gathered with the next rows of ``rows`` prefetched (``kernels.cpu_gather``);
    ``residuals[c]`` is chunk c's scratch for that. The chunks are walked in parallel or in
    a plain loop (the same chunks, the same combine: the same result); the plain loop is
    inlined into the caller.

    A batch whose weights are all 0 returns (0, 0) and zero gradients: the training loop skips its step.
    """
    if parallel:
        return _gather_loss_grad_parallel(X, Y, W, b, rows, weights, start, stop, dW, db, chunk_rows, n_chunks,
                                          residuals, dW_parts, db_parts, loss_parts, weight_parts)
    for c in range(n_chunks):
        lo = start + c * chunk_rows
        loss_parts[c], weight_parts[c] = cpu_gather._gather_block_rows(
            X, Y, W, b, rows, weights, lo, min(lo + chunk_rows, stop), residuals[c], dW_parts[c], db_parts[c])
    return _batch_result(dW, db, dW_parts, db_parts, loss_parts, weight_parts, n_chunks, W.shape[0])


def gram(X: np.ndarray, Y: np.ndarray, rows: np.ndarray | None = None,
         weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gram statistics ``(G, C, yy)`` of ``A = [X 1]`` in one pass (float64), see the module doc.

    The kernel is ``kernels.cpu_gram`` (blocked float64 tiles of [X 1 Y]^T S [X 1 Y]).
    """
    return cpu_gram.gram(X, Y, rows, weights)


@njit(cache=True)
def _gram_loss_grad(G, C, yy, weight_total, W, b, dW, db):
    """Loss and float64 gradients of (W, b) from the Gram statistics: O(n_features^2 * n_outputs)."""
    n_outputs, n_features = W.shape
    total = 0.0
    scale = 2.0 / (n_outputs * weight_total)
    for o in range(n_outputs):
        quadratic = 0.0
        linear = 0.0
        for f in range(n_features + 1):
            theta_f = W[o, f] if f < n_features else b[o]
            g_theta = 0.0
            for g in range(n_features):
                g_theta += G[f, g] * W[o, g]
            g_theta += G[f, n_features] * b[o]
            quadratic += theta_f * g_theta
            linear += theta_f * C[f, o]
            if f < n_features:
                dW[o, f] = scale * (g_theta - C[f, o])
            else:
                db[o] = scale * (g_theta - C[f, o])
        total += quadratic - 2.0 * linear + yy[o]
    return total / (n_outputs * weight_total)


# --------------------------------------------------------------------------- the epoch engine
#
# The engine's configuration is one typed value, ``EngineConfig`` (a namedtuple: numba compiles it as a
# struct of scalars); its state persists between calls in ``TrainState`` (arrays the loops update in place).
# One rule each, called by every loop (the in-memory ``_train_epochs``, the Gram loop ``_gram_epochs``, and
# from Python by the streaming run in ``linreg.outofcore``): ``_apply_step`` (penalty, divergence check,
# optimiser step), ``_diverge`` (what a divergence leaves behind) and ``_stopping_rule`` (tol, adaptive,
# early stopping).

#: The engine's options, all scalars (see ``linreg.options`` for their meaning). ``make_config`` fixes the types.
EngineConfig = namedtuple("EngineConfig", [
    "optimizer", "momentum", "dampening", "nesterov", "weight_decay", "beta1", "beta2", "eps", "amsgrad",
    "penalty", "alpha", "l1_ratio", "use_tol", "tol", "n_iter_no_change", "early_stopping", "adaptive",
    "batch_size", "shuffle", "seed", "standardize"])

#: What persists between calls (and partial_fit calls), float64 unless said: parameters in the optimiser's
#: (possibly standardised) space, the standardising shift and scale, optimiser buffers (momentum, Adam's
#: exp_avg, exp_avg_sq, max_exp_avg_sq), int64 counters (K_*), scalars (S_*), the best validated and the
#: previous parameters.
TrainState = namedtuple("TrainState", ["W", "b", "mu", "sigma", "buffers_W", "buffers_b", "counters", "scalars",
                                       "best_W", "best_b", "prev_W", "prev_b"])


def make_config(*, optimizer: int, momentum: float, dampening: float, nesterov: bool, weight_decay: float,
                beta1: float, beta2: float, eps: float, amsgrad: bool, penalty: int, alpha: float, l1_ratio: float,
                use_tol: bool, tol: float, n_iter_no_change: int, early_stopping: bool, adaptive: bool,
                batch_size: int, shuffle: bool, seed: int, standardize: bool) -> EngineConfig:
    """An ``EngineConfig`` with each field of one fixed type, so that the loops compile once."""
    return EngineConfig(int(optimizer), float(momentum), float(dampening), bool(nesterov), float(weight_decay),
                        float(beta1), float(beta2), float(eps), bool(amsgrad), int(penalty), float(alpha),
                        float(l1_ratio), bool(use_tol), float(tol), int(n_iter_no_change), bool(early_stopping),
                        bool(adaptive), int(batch_size), bool(shuffle), int(seed), bool(standardize))


@njit(cache=True)
def _sign(w):
    """np.sign for a float (NaN stays NaN), written out: numba-cuda has no np.sign, and the rules compile there."""
    if w > 0.0:
        return 1.0
    if w < 0.0:
        return -1.0
    return w  # 0.0 or -0.0 (kept, as numba's np.sign does) or NaN


@njit(cache=True, inline="always")
def _penalty(W, dW, kind, alpha, l1_ratio):
    """Add the penalty's (sub)gradient to dW and return its value. The bias is never penalised."""
    if kind == NO_PENALTY or alpha == 0.0:
        return 0.0
    l1 = 1.0 if kind == L1 else (l1_ratio if kind == ELASTICNET else 0.0)
    l2 = 1.0 - l1
    value = 0.0
    for o in range(W.shape[0]):
        for f in range(W.shape[1]):
            w = W[o, f]
            value += alpha * (l1 * abs(w) + 0.5 * l2 * w * w)
            dW[o, f] += alpha * (l1 * _sign(w) + l2 * w)
    return value


@njit(cache=True, inline="always")
def _optimizer_step(theta, grad, buffers, step, lr, config, penalised):
    """One torch.optim step on a flat float64 parameter view.

    ``buffers`` rows: momentum buffer, Adam's exp_avg, exp_avg_sq, max_exp_avg_sq.
    ``step`` is the 1-based step number. Weight decay acts only where ``penalised``
    (the weights, not the bias): torch.optim with the bias in a weight_decay=0 group.
    """
    weight_decay, step_size, bias_correction2_sqrt = _step_constants(step, lr, config, penalised)
    if config.optimizer == SGD and config.momentum == 0.0:  # no momentum buffer to read or write
        for k in range(theta.shape[0]):
            theta[k], _ = _sgd_update(theta[k], grad[k], 0.0, step, lr, config, weight_decay)
        return
    if config.optimizer == SGD:
        for k in range(theta.shape[0]):
            theta[k], buffers[0, k] = _sgd_update(theta[k], grad[k], buffers[0, k], step, lr, config, weight_decay)
        return
    for k in range(theta.shape[0]):
        theta[k], buffers[1, k], buffers[2, k], buffers[3, k] = _adam_update(
            theta[k], grad[k], buffers[1, k], buffers[2, k], buffers[3, k], lr, config, weight_decay, step_size,
            bias_correction2_sqrt)


@njit(cache=True, inline="always")
def _optimizer_step_at(theta, grad, buffers, step, lr, config, penalised, coords, n_coords):
    """``_optimizer_step`` on the coordinates ``coords[:n_coords]`` only (distinct): each gets the same
    arithmetic (``_sgd_update`` / ``_adam_update``), so the same bits, as in a step over all of them (the sparse
    mini-batch steps)."""
    weight_decay, step_size, bias_correction2_sqrt = _step_constants(step, lr, config, penalised)
    if config.optimizer == SGD and config.momentum == 0.0:  # no momentum buffer to read or write
        for t in range(n_coords):
            k = coords[t]
            theta[k], _ = _sgd_update(theta[k], grad[k], 0.0, step, lr, config, weight_decay)
        return
    if config.optimizer == SGD:
        for t in range(n_coords):
            k = coords[t]
            theta[k], buffers[0, k] = _sgd_update(theta[k], grad[k], buffers[0, k], step, lr, config, weight_decay)
        return
    for t in range(n_coords):
        k = coords[t]
        theta[k], buffers[1, k], buffers[2, k], buffers[3, k] = _adam_update(
            theta[k], grad[k], buffers[1, k], buffers[2, k], buffers[3, k], lr, config, weight_decay, step_size,
            bias_correction2_sqrt)


@njit(cache=True)
def _step_constants(step, lr, config, penalised):
    """(weight decay, Adam's step size, Adam's sqrt of the second bias correction) of a step."""
    weight_decay = config.weight_decay if penalised else 0.0
    if config.optimizer == SGD:
        return weight_decay, lr, 1.0
    bias_correction1 = 1.0 - config.beta1**step
    bias_correction2_sqrt = math.sqrt(1.0 - config.beta2**step)  # math, not np: the rules also compile for CUDA
    return weight_decay, lr / bias_correction1, bias_correction2_sqrt


# The per-coordinate rules take and return scalars, not arrays: a function's array arguments would each cost
# two atomic reference-count updates per coordinate (~40 ns a coordinate measured here). They are plain calls,
# which LLVM inlines: numba's own inlining (inline="always") of them at their six call sites doubled the first
# compile of a default fit (standardize, lr="auto": 9.7 s -> 18-20 s with an empty cache).
@njit(cache=True)
def _sgd_update(theta, grad, momentum_buffer, step, lr, config, weight_decay):
    """torch.optim.SGD on one coordinate: (new value, new momentum buffer)."""
    g = grad + weight_decay * theta
    momentum = config.momentum
    if momentum != 0.0:
        if step == 1:
            momentum_buffer = g
        else:
            momentum_buffer = momentum * momentum_buffer + (1.0 - config.dampening) * g
        g = g + momentum * momentum_buffer if config.nesterov else momentum_buffer
    return theta - lr * g, momentum_buffer


@njit(cache=True)
def _adam_update(theta, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, config, weight_decay, step_size,
                 bias_correction2_sqrt):
    """torch.optim.Adam / AdamW on one coordinate: (new value, exp_avg, exp_avg_sq, max_exp_avg_sq)."""
    g = grad
    if config.optimizer == ADAMW:
        theta *= 1.0 - lr * weight_decay
    else:
        g = g + weight_decay * theta
    exp_avg += (g - exp_avg) * (1.0 - config.beta1)  # torch: exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq = config.beta2 * exp_avg_sq + (1.0 - config.beta2) * g * g
    second = exp_avg_sq
    if config.amsgrad:
        max_exp_avg_sq = max(max_exp_avg_sq, second)
        second = max_exp_avg_sq
    theta -= step_size * exp_avg / (math.sqrt(second) / bias_correction2_sqrt + config.eps)
    return theta, exp_avg, exp_avg_sq, max_exp_avg_sq


@njit(cache=True, inline="always")
def _effective_params(W, b, mu, sigma, standardize, W_eff, b_eff):
    """Parameters of the original feature space from the (possibly standardised) float64 ones."""
    n_outputs, n_features = W.shape
    for o in range(n_outputs):
        shift = 0.0
        for f in range(n_features):
            w = W[o, f] / sigma[f] if standardize else W[o, f]
            W_eff[o, f] = w
            shift += w * mu[f] if standardize else 0.0
        b_eff[o] = b[o] - shift


@njit(cache=True, inline="always")
def _to_optimizer_space(dW, db, mu, sigma, standardize):
    """Chain rule from gradients of the kernel's (original-unit) parameters to the optimiser's."""
    if standardize:
        for o in range(dW.shape[0]):
            for f in range(dW.shape[1]):
                dW[o, f] = (dW[o, f] - db[o] * mu[f]) / sigma[f]


@njit(cache=True, inline="always")
def _kernel_params(state, config, Wk, bk, W_eff, b_eff):
    """The parameters in original units (float64 W_eff, b_eff) and in the data's dtype (Wk, bk)."""
    _effective_params(state.W, state.b, state.mu, state.sigma, config.standardize, W_eff, b_eff)
    for o in range(Wk.shape[0]):
        bk[o] = b_eff[o]
        for f in range(Wk.shape[1]):
            Wk[o, f] = W_eff[o, f]


@njit(cache=True, inline="always")
def _layout(layouts, n):
    """(parallel, chunk_rows, n_chunks) of a batch of n rows (``_engine._layouts``)."""
    layout = 0
    for k in range(layouts.shape[0]):
        if layouts[k, 0] == n:
            layout = k
    return layouts[layout, 1] != 0, layouts[layout, 2], layouts[layout, 3]


@njit(cache=True)
def _whole_batch(X, Y, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work):
    """``_batch`` over all of X in order, unweighted: the streaming kernel of kernels.cpu (full-batch fits, which
    then never compile the gather kernel)."""
    _kernel_params(state, config, Wk, bk, W_eff, b_eff)
    # work's last item: kernels.cpu.kernel_variant(X, Y), the row kernel cpu._loss_grad compiles (by its type).
    residuals, dW_parts, db_parts, loss_parts, weight_parts, variant = work
    n = X.shape[0]
    parallel, chunk_rows, n_chunks = _layout(layouts, n)
    value = cpu._loss_grad(X, Y, Wk, bk, dW, db, parallel, chunk_rows, n_chunks, residuals, dW_parts, db_parts,
                           loss_parts, variant)
    _to_optimizer_space(dW, db, state.mu, state.sigma, config.standardize)
    return value, np.float64(n)


@njit(cache=True, inline="always")
def _batch(X, Y, weights, order, start, stop, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work):
    """Loss, float64 gradients with respect to the optimiser's parameters, and the batch weight sum, for the
    positions [start, stop) of ``order`` (rows in order if empty), weighted."""
    n = stop - start
    if order.shape[0] == 0 and weights.shape[0] == 0 and start == 0 and n == X.shape[0]:
        return _whole_batch(X, Y, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work)
    _kernel_params(state, config, Wk, bk, W_eff, b_eff)
    residuals, dW_parts, db_parts, loss_parts, weight_parts, variant = work
    parallel, chunk_rows, n_chunks = _layout(layouts, n)
    value, batch_weight = _gather_loss_grad(X, Y, Wk, bk, order, weights, start, stop, dW, db, parallel,
                                            chunk_rows, n_chunks, residuals, dW_parts, db_parts,
                                            loss_parts, weight_parts)
    _to_optimizer_space(dW, db, state.mu, state.sigma, config.standardize)
    return value, batch_weight


def _data_whole_batch(X, Y, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work):
    """``_whole_batch`` of the data's kind, chosen by X's *type* at compile time (compiled code only): a dense
    array takes ``_whole_batch``, a sparse X (``kernels.cpu_sparse.SparseRows``) its own kernels; each compiled
    loop reaches only its own kind's kernels."""
    raise NotImplementedError("compiled code only")


def _data_batch(X, Y, weights, order, start, stop, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work):
    """``_batch`` of the data's kind (see ``_data_whole_batch``; compiled code only)."""
    raise NotImplementedError("compiled code only")


@overload(_data_whole_batch, inline="always")  # no call per step: see _copy_params
def _data_whole_batch_overload(X, Y, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work):
    if isinstance(X, types.Array):
        return lambda X, Y, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work: _whole_batch(
            X, Y, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work)

    def sparse_whole_batch(X, Y, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work):
        return _sparse_batch(X, Y, np.empty(0), np.empty(0, np.int64), np.int64(0), X.shape[0], state, config,
                             layouts, Wk, bk, W_eff, b_eff, dW, db, work)
    return sparse_whole_batch


@overload(_data_batch, inline="always")
def _data_batch_overload(X, Y, weights, order, start, stop, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db,
                         work):
    if isinstance(X, types.Array):
        return lambda X, Y, weights, order, start, stop, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work: (
            _batch(X, Y, weights, order, start, stop, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work))
    if isinstance(work[6], types.NoneType):
        return lambda X, Y, weights, order, start, stop, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work: (
            _sparse_batch(X, Y, weights, order, start, stop, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db,
                          work))
    return lambda X, Y, weights, order, start, stop, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work: (
        _sparse_lazy_batch(X, Y, weights, order, start, stop, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db,
                           work))


@njit(cache=True, inline="always")  # no call per step: see _copy_params
def _lazy_apply_step(state, dW, db, value, config, lr, steps):
    """``_apply_step`` of a sparse run taking lazy steps (``kernels.cpu_sparse.engine_work(lazy=True)``, chosen
    in Python by ``lazy_steps_exact``): ``_apply_step_at`` on the features the batch touched."""
    touched, previous, counts = steps.touched, steps.previous, steps.counts
    value, stepped = _apply_step_at(state, dW, db, value, config, lr, touched, counts[0], previous, counts[1])
    if stepped:  # this step's features are the next one's previous
        for t in range(counts[0]):
            previous[t] = touched[t]
        counts[1] = counts[0]
    return value, stepped


def lazy_steps_exact(config: EngineConfig) -> bool:
    """Whether a weight whose data gradient is 0 provably keeps its value in a step of ``config`` (so a sparse
    mini-batch step may update only its rows' features: ``_apply_step_at``): plain SGD (no momentum, whose
    buffer would move it), no penalty and no weight decay (which shrink every weight), raw features
    (standardising shifts every weight by db * mu / sigma). Momentum, Adam, penalties and standardize keep the
    dense rule."""
    return (config.optimizer == SGD and config.momentum == 0.0 and config.weight_decay == 0.0
            and (config.penalty == NO_PENALTY or config.alpha == 0.0) and not config.standardize)


@njit(cache=True)
def _sparse_batch(X, Y, weights, order, start, stop, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db, work):
    """``_batch`` for a sparse X (``kernels.cpu_sparse``): residuals by rows, the gradient by columns."""
    _kernel_params(state, config, Wk, bk, W_eff, b_eff)
    _, chunk_rows, n_chunks = _layout(layouts, stop - start)
    value, batch_weight = cpu_sparse._batch_loss_grad(X, Y, Wk, bk, order, weights, start, stop, dW, db,
                                                      chunk_rows, n_chunks, work)
    _to_optimizer_space(dW, db, state.mu, state.sigma, config.standardize)
    return value, batch_weight


@njit(cache=True, inline="always")  # no call per step: see _copy_params
def _sparse_lazy_batch(X, Y, weights, order, start, stop, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db,
                       work):
    """``_sparse_batch`` of a run taking lazy steps (``_lazy_apply_step``): O(batch non-zeros), not
    O(n_features). The kernel parameters follow the weights: all of them at an epoch's first batch (and for
    the validation rows), then only the features the last step moved (``lazy_steps_exact``: raw features, so
    they are the weights themselves; W_eff, b_eff are then left as the epoch's first batch set them)."""
    steps = work[5]
    if start == 0:
        _kernel_params(state, config, Wk, bk, W_eff, b_eff)
    else:
        previous, n_previous, W = steps.previous, steps.counts[1], state.W
        for o in range(Wk.shape[0]):
            bk[o] = state.b[o]
            for t in range(n_previous):
                Wk[o, previous[t]] = W[o, previous[t]]
    _, chunk_rows, n_chunks = _layout(layouts, stop - start)
    return cpu_sparse._batch_loss_grad(X, Y, Wk, bk, order, weights, start, stop, dW, db, chunk_rows, n_chunks,
                                       work)


@njit(cache=True)
def _gram_batch(G, C, yy, weight_total, state, config, W_eff, b_eff, dW, db):
    """``_batch`` from Gram statistics instead of rows: loss and gradients in the optimiser's space."""
    _effective_params(state.W, state.b, state.mu, state.sigma, config.standardize, W_eff, b_eff)
    value = _gram_loss_grad(G, C, yy, weight_total, W_eff, b_eff, dW, db)
    _to_optimizer_space(dW, db, state.mu, state.sigma, config.standardize)
    return value


@njit(cache=True, inline="always")
def _diverged(value, scalars):
    """The divergence rule of ``kernels.cpu.is_divergent``, against the fit's first objective."""
    if np.isnan(scalars[S_FIRST_LOSS]):
        scalars[S_FIRST_LOSS] = value
    return cpu.is_divergent(value, scalars[S_FIRST_LOSS])


@njit(cache=True, inline="always")
def _apply_step(state, dW, db, value, config, lr):
    """Penalty, then one optimiser step from the data gradients (dW, db) in the optimiser's space.

    Returns the objective (data loss + penalty) at the parameters before the step
    and whether the step was taken: a diverged objective (``_diverged``) takes
    none, and the caller ends training with ``_diverge``.
    """
    value += _penalty(state.W, dW, config.penalty, config.alpha, config.l1_ratio)
    if _diverged(value, state.scalars):
        return value, False
    _copy_params(state.prev_W, state.prev_b, state.W, state.b)
    counters = state.counters
    counters[K_STEP] += 1
    step = counters[K_STEP]
    # Row by row (each element's update is independent, so the same bits as one flat pass): a reshape would
    # call numba's C helper numba_attempt_nocopy_reshape, which the CUDA target (kernels.cuda_train) lacks.
    for o in range(state.W.shape[0]):
        _optimizer_step(state.W[o], dW[o], state.buffers_W[:, o], step, lr, config, True)
    _optimizer_step(state.b, db, state.buffers_b, step, lr, config, False)
    return value, True


@njit(cache=True, inline="always")
def _apply_step_at(state, dW, db, value, config, lr, touched, n_touched, previous, n_previous):
    """``_apply_step`` when only the weights of the features ``touched[:n_touched]`` (distinct) can move: their
    gradient is the only non-zero one and the option set leaves a weight with zero gradient as it is (plain
    SGD, no penalty, no weight decay; chosen in Python, ``linreg._engine``). Costs O(n_touched), not
    O(n_features), with the same bits as ``_apply_step``: the same penalty (0), divergence test and
    optimiser arithmetic on the coordinates that change.

    ``prev_W`` (what a divergence restores) is kept equal to the parameters before the last step by copying
    only what differs: it holds the parameters before the previous step, which differ from the current ones
    at that step's features only (``previous[:n_previous]``; the caller then sets them to this step's).
    """
    value += _penalty(state.W, dW, config.penalty, config.alpha, config.l1_ratio)
    if _diverged(value, state.scalars):
        return value, False
    W, prev_W = state.W, state.prev_W
    for o in range(W.shape[0]):
        state.prev_b[o] = state.b[o]
        for t in range(n_previous):
            prev_W[o, previous[t]] = W[o, previous[t]]
    counters = state.counters
    counters[K_STEP] += 1
    step = counters[K_STEP]
    for o in range(W.shape[0]):
        _optimizer_step_at(W[o], dW[o], state.buffers_W[:, o], step, lr, config, True, touched, n_touched)
    _optimizer_step(state.b, db, state.buffers_b, step, lr, config, False)
    return value, True


@njit(cache=True)
def _diverge(state, loss_history, index, value):
    """What a divergence leaves: the parameters before the last step, the diverging objective recorded."""
    if state.counters[K_STEP] > 0:
        _copy_params(state.W, state.b, state.prev_W, state.prev_b)
    loss_history[index] = value
    state.counters[K_STOP] = STOP_DIVERGED


@njit(cache=True)
def _stopping_rule(metric, lr, state, config):
    """scikit-learn's rule after an epoch whose metric (loss, or validation loss) is ``metric``.

    Counts epochs above ``best - tol``; after ``n_iter_no_change`` of them the adaptive
    schedule divides lr by 5 (until it is below ADAPTIVE_MIN_LR), otherwise training
    stops (``counters[K_STOP]``). With early stopping the best validated parameters are
    kept, and restored when it stops. Returns True when training stops.
    """
    if not config.use_tol:
        return False
    counters, scalars = state.counters, state.scalars
    if metric > scalars[S_BEST] - config.tol:
        counters[K_NO_IMPROVE] += 1
    else:
        counters[K_NO_IMPROVE] = 0
    if metric < scalars[S_BEST]:
        scalars[S_BEST] = metric
        if config.early_stopping:
            _copy_params(state.best_W, state.best_b, state.W, state.b)
    if counters[K_NO_IMPROVE] < config.n_iter_no_change:
        return False
    if config.adaptive and lr > ADAPTIVE_MIN_LR:
        scalars[S_LR_FACTOR] /= 5.0
        counters[K_NO_IMPROVE] = 0
        return False
    if config.early_stopping:
        _copy_params(state.W, state.b, state.best_W, state.best_b)
    counters[K_STOP] = STOP_ADAPTIVE if config.adaptive else (STOP_EARLY if config.early_stopping else STOP_TOL)
    return True


@njit(cache=True)
def _train_epochs(X, Y, rows, weights, val_rows, state, config, lr_by_epoch, first_epoch, n_epochs,
                  loss_history, val_history, layouts, val_layouts, order, scratch, work, gather, lazy):
    """Run up to ``n_epochs`` epochs over the rows of (X, Y) from epoch ``counters[K_EPOCH]``; return the number
    completed.

    ``lr_by_epoch``, ``loss_history`` and ``val_history`` are indexed by epoch - first_epoch.
    ``gather`` None: every step is the whole data in order, unweighted; ``val_rows`` None: no early stopping
    (each None is typed, so numba compiles the loop without the kernels it would not call). ``lazy``: the
    ``SparseSteps`` of a sparse run taking lazy steps (``_lazy_apply_step``), else None.
    ``scratch`` = (Wk, bk, W_eff, b_eff, dW, db): parameters in the data's dtype, in original units, gradients.
    Stops early (``counters[K_STOP]``) on ``_stopping_rule`` or on divergence (``_diverge``).
    """
    Wk, bk, W_eff, b_eff, dW, db = scratch
    n_train = rows.shape[0] if rows.shape[0] > 0 else X.shape[0]
    batch_size = config.batch_size  # rows per batch, clamped once (training.batch_rows)
    counters, scalars = state.counters, state.scalars
    done = 0
    for _ in range(n_epochs):
        epoch = counters[K_EPOCH]
        run_epoch = epoch - first_epoch
        lr = lr_by_epoch[run_epoch] * scalars[S_LR_FACTOR]
        batch_rows = rows
        if config.shuffle and batch_size < n_train:
            _shuffle_rows(order, rows, X.shape[0], config.seed, epoch)
            batch_rows = order
        epoch_loss = 0.0
        epoch_weight = 0.0
        for start in range(0, n_train, batch_size):
            stop = min(start + batch_size, n_train)
            if gather is None:  # full batch, in order, unweighted: this compiles without the gather kernel
                value, batch_weight = _data_whole_batch(X, Y, state, config, layouts, Wk, bk, W_eff, b_eff, dW, db,
                                                        work)
            else:
                value, batch_weight = _data_batch(X, Y, weights, batch_rows, start, stop, state, config,
                                                  layouts, Wk, bk, W_eff, b_eff, dW, db, work)
            if batch_weight == 0.0:
                continue  # all weights 0: nothing to learn from this batch, and no step
            # lazy None (typed: every run but a sparse one taking lazy steps) compiles without the lazy step.
            # A choice by an overload on the data's type instead cost ~3 s of the default fit's first compile.
            if lazy is None:
                value, stepped = _apply_step(state, dW, db, value, config, lr)
            else:
                value, stepped = _lazy_apply_step(state, dW, db, value, config, lr, lazy)
            if not stepped:
                _diverge(state, loss_history, run_epoch, value)
                return done
            epoch_loss += value * batch_weight
            epoch_weight += batch_weight
        loss_history[run_epoch] = epoch_loss / epoch_weight
        counters[K_EPOCH] += 1
        done += 1
        metric = loss_history[run_epoch]
        if val_rows is not None:  # None (no early stopping) compiles without the validation pass
            metric, _ = _data_batch(X, Y, weights, val_rows, np.int64(0), val_rows.shape[0], state, config,
                                    val_layouts, Wk, bk, W_eff, b_eff, dW, db, work)
            val_history[run_epoch] = metric
        if _stopping_rule(metric, lr, state, config):
            return done
    return done


@njit(cache=True)
def _gram_epochs(G, C, yy, weight_total, G_val, C_val, yy_val, val_weight_total, state, config, lr_by_epoch,
                 first_epoch, n_epochs, loss_history, val_history, W_eff, b_eff, dW, db):
    """``_train_epochs`` for ``solver="gram"``: full-batch epochs on the Gram statistics (G, C, yy), each
    O(n_features^2 * n_outputs) whatever the number of rows; the validation rows' statistics for early stopping."""
    counters, scalars = state.counters, state.scalars
    done = 0
    for _ in range(n_epochs):
        run_epoch = counters[K_EPOCH] - first_epoch
        lr = lr_by_epoch[run_epoch] * scalars[S_LR_FACTOR]
        value = _gram_batch(G, C, yy, weight_total, state, config, W_eff, b_eff, dW, db)
        value, stepped = _apply_step(state, dW, db, value, config, lr)
        if not stepped:
            _diverge(state, loss_history, run_epoch, value)
            return done
        loss_history[run_epoch] = value * weight_total / weight_total  # as _train_epochs' one-batch epoch mean
        counters[K_EPOCH] += 1
        done += 1
        metric = loss_history[run_epoch]
        if config.early_stopping:
            metric = _gram_batch(G_val, C_val, yy_val, val_weight_total, state, config, W_eff, b_eff, dW, db)
            val_history[run_epoch] = metric
        if _stopping_rule(metric, lr, state, config):
            return done
    return done


# --------------------------------------------------------------------------- column moments


@njit(cache=True, fastmath=_FASTMATH)
def _moment_rows(X, rows, weights, start, stop, center, out):
    """out[f] = sum s * (x_f - center_f)^k for k = 1 (center empty: plain sums) or 2; returns sum s."""
    n_features = X.shape[1]
    out[:] = 0.0
    weight_total = 0.0
    for p in range(start, stop):
        i = rows[p] if rows.shape[0] > 0 else p
        s = weights[i] if weights.shape[0] > 0 else 1.0
        weight_total += s
        for f in range(n_features):
            if center.shape[0] > 0:
                d = np.float64(X[i, f]) - center[f]
                out[f] += s * d * d
            else:
                out[f] += s * np.float64(X[i, f])
    return weight_total


@njit(parallel=True, cache=True)
def _moment(X, rows, weights, n_rows, center, parallel, chunk_rows, n_chunks, parts, weight_parts, out):
    if parallel:
        for c in prange(n_chunks):
            lo = c * chunk_rows
            weight_parts[c] = _moment_rows(X, rows, weights, lo, min(lo + chunk_rows, n_rows), center, parts[c])
    else:
        for c in range(n_chunks):
            lo = c * chunk_rows
            weight_parts[c] = _moment_rows(X, rows, weights, lo, min(lo + chunk_rows, n_rows), center, parts[c])
    weight_total = 0.0
    for c in range(n_chunks):
        weight_total += weight_parts[c]
    for f in range(out.shape[0]):
        acc = 0.0
        for c in range(n_chunks):
            acc += parts[c, f]
        out[f] = acc / weight_total


def column_moments(X: np.ndarray, rows: np.ndarray | None = None,
                   weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted column means and standard deviations (float64), two passes for accuracy."""
    rows = np.empty(0, np.int64) if rows is None else rows
    weights = np.empty(0, np.float64) if weights is None else weights
    n_rows = rows.shape[0] if rows.shape[0] else X.shape[0]
    n_features = X.shape[1]
    chunk_rows, n_chunks = cpu.chunking(n_rows)
    parallel = n_rows * n_features >= cpu.PARALLEL_MIN_WORK
    parts, weight_parts = np.zeros((n_chunks, n_features)), np.zeros(n_chunks)
    mean, variance = np.empty(n_features), np.empty(n_features)
    _moment(X, rows, weights, n_rows, np.empty(0), parallel, chunk_rows, n_chunks, parts, weight_parts, mean)
    _moment(X, rows, weights, n_rows, mean, parallel, chunk_rows, n_chunks, parts, weight_parts, variance)
    return mean, np.sqrt(variance)
