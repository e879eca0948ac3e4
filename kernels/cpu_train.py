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

Parallel strategy: as in ``kernels.cpu``: a batch's rows are cut into chunks
whose layout depends only on the batch length (``kernels.cpu.chunking``), each
chunk owns its partial sums, and the partials are combined in chunk order, so
results do not depend on the thread count. Mini-batches (a few hundred rows)
take the serial path. The shuffle is a Fisher-Yates pass driven by splitmix64
of (seed, epoch): the same on every machine and thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cpu

# Optimiser, penalty and stop codes shared with linreg.training.
SGD, ADAM, ADAMW = 0, 1, 2
NO_PENALTY, L2, L1, ELASTICNET = 0, 1, 2, 3
RUNNING, STOP_TOL, STOP_EARLY, STOP_ADAPTIVE, STOP_DIVERGED = 0, 1, 2, 3, 4
#: The adaptive schedule stops once the learning rate falls below this (scikit-learn's rule).
ADAPTIVE_MIN_LR = 1e-6

# Layout of the small float64 hyper-parameter vector ``hyper``.
H_MOMENTUM, H_DAMPENING, H_NESTEROV, H_WEIGHT_DECAY, H_BETA1, H_BETA2, H_EPS, H_AMSGRAD, H_ALPHA, H_L1_RATIO, \
    H_TOL = range(11)
N_HYPER = 11
# Layout of the int64 configuration vector ``config``.
C_OPTIMIZER, C_PENALTY, C_N_ITER_NO_CHANGE, C_EARLY_STOPPING, C_ADAPTIVE, C_BATCH_SIZE, C_SHUFFLE, C_SEED, \
    C_STANDARDIZE, C_USE_TOL, C_GRAM = range(11)
N_CONFIG = 11
# Layout of the int64 counters and float64 scalars that persist between calls (and partial_fit calls).
K_STEP, K_EPOCH, K_NO_IMPROVE, K_STOP = range(4)
S_BEST, S_LR_FACTOR, S_FIRST_LOSS = range(3)
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


@njit(cache=True)
def _shuffle_rows(order, rows, n_samples, seed, epoch):
    """order = a permutation of ``rows`` (or of 0..n_samples-1) that depends only on (seed, epoch)."""
    n = order.shape[0]
    for p in range(n):
        order[p] = rows[p] if rows.shape[0] > 0 else p
    state = np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + np.uint64(epoch)
    for i in range(n - 1, 0, -1):
        state, z = _splitmix64(state)
        j = np.int64(z % np.uint64(i + 1))
        order[i], order[j] = order[j], order[i]


def epoch_order(seed: int, epoch: int, n_samples: int, rows: np.ndarray | None = None) -> np.ndarray:
    """The row order of ``epoch`` for ``seed``: what a shuffled fit visits (tests feed it to torch)."""
    rows = np.empty(0, np.int64) if rows is None else np.asarray(rows, np.int64)
    order = np.empty(rows.shape[0] if rows.shape[0] else n_samples, np.int64)
    _shuffle_rows(order, rows, n_samples, np.int64(seed), np.int64(epoch))
    return order


# --------------------------------------------------------------------------- streaming kernels


@njit(cache=True, fastmath=_FASTMATH)
def _gather_rows(X, Y, W, b, rows, weights, start, stop, residual, dW_part, db_part):
    """Weighted squared-residual sum and weight sum of positions [start, stop); R^T S X and R^T s into the parts."""
    n_outputs, n_features = W.shape
    for o in range(n_outputs):
        db_part[o] = 0.0
        for f in range(n_features):
            dW_part[o, f] = 0.0
    total = 0.0
    weight_total = 0.0
    for p in range(start, stop):
        i = rows[p] if rows.shape[0] > 0 else p
        s = weights[i] if weights.shape[0] > 0 else 1.0
        weight_total += s
        for o in range(n_outputs):
            r = np.float64(b[o]) - np.float64(Y[i, o])
            for f in range(n_features):
                r += np.float64(X[i, f]) * np.float64(W[o, f])
            total += s * r * r
            residual[o] = s * r
            db_part[o] += s * r
        for o in range(n_outputs):
            r = residual[o]
            for f in range(n_features):
                dW_part[o, f] += r * np.float64(X[i, f])
    return total, weight_total


@njit(parallel=True, cache=True)
def _gather_loss_grad(X, Y, W, b, rows, weights, start, stop, dW, db, parallel, chunk_rows, n_chunks,
                      residuals, dW_parts, db_parts, loss_parts, weight_parts):
    """Loss of positions [start, stop) (weighted mean, see module doc); float64 dW, db. Returns (loss, sum s).

    A batch whose weights are all 0 returns (0, 0) and zero gradients: the training loop skips its step.
    """
    n_outputs = W.shape[0]
    if parallel:
        for c in prange(n_chunks):
            lo = start + c * chunk_rows
            loss_parts[c], weight_parts[c] = _gather_rows(X, Y, W, b, rows, weights, lo, min(lo + chunk_rows, stop),
                                                          residuals[c], dW_parts[c], db_parts[c])
    else:
        for c in range(n_chunks):
            lo = start + c * chunk_rows
            loss_parts[c], weight_parts[c] = _gather_rows(X, Y, W, b, rows, weights, lo, min(lo + chunk_rows, stop),
                                                          residuals[c], dW_parts[c], db_parts[c])
    weight_total = 0.0
    for c in range(n_chunks):
        weight_total += weight_parts[c]
    if weight_total == 0.0:  # every sample of the batch has weight 0: it carries no information
        dW[:] = 0.0
        db[:] = 0.0
        return 0.0, 0.0
    # The weighted mean is the plain combine with n_samples replaced by the weight sum.
    return cpu._combine(dW, db, dW_parts, db_parts, loss_parts, n_chunks, n_outputs * weight_total), weight_total


@njit(cache=True, fastmath=_FASTMATH)
def _gram_rows(X, Y, rows, weights, start, stop, G, C, yy):
    n_features = X.shape[1]
    n_outputs = Y.shape[1]
    G[:] = 0.0
    C[:] = 0.0
    yy[:] = 0.0
    for p in range(start, stop):
        i = rows[p] if rows.shape[0] > 0 else p
        s = weights[i] if weights.shape[0] > 0 else 1.0
        for f in range(n_features):
            sx = s * np.float64(X[i, f])
            for g in range(f, n_features):
                G[f, g] += sx * np.float64(X[i, g])
            G[f, n_features] += sx
            for o in range(n_outputs):
                C[f, o] += sx * np.float64(Y[i, o])
        G[n_features, n_features] += s
        for o in range(n_outputs):
            y = np.float64(Y[i, o])
            C[n_features, o] += s * y
            yy[o] += s * y * y


@njit(parallel=True, cache=True)
def _gram(X, Y, rows, weights, n_rows, parallel, chunk_rows, n_chunks, G_parts, C_parts, yy_parts, G, C, yy):
    """G = A^T S A, C = A^T S Y, yy = diag(Y^T S Y) for A = [X 1] over the first n_rows positions."""
    if parallel:
        for c in prange(n_chunks):
            lo = c * chunk_rows
            _gram_rows(X, Y, rows, weights, lo, min(lo + chunk_rows, n_rows), G_parts[c], C_parts[c], yy_parts[c])
    else:
        for c in range(n_chunks):
            lo = c * chunk_rows
            _gram_rows(X, Y, rows, weights, lo, min(lo + chunk_rows, n_rows), G_parts[c], C_parts[c], yy_parts[c])
    size = G.shape[0]
    for f in range(size):
        for g in range(f, size):
            acc = 0.0
            for c in range(n_chunks):
                acc += G_parts[c, f, g]
            G[f, g] = acc
            G[g, f] = acc
        for o in range(C.shape[1]):
            acc = 0.0
            for c in range(n_chunks):
                acc += C_parts[c, f, o]
            C[f, o] = acc
    for o in range(yy.shape[0]):
        acc = 0.0
        for c in range(n_chunks):
            acc += yy_parts[c, o]
        yy[o] = acc


def gram(X: np.ndarray, Y: np.ndarray, rows: np.ndarray | None = None,
         weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gram statistics ``(G, C, yy)`` of ``A = [X 1]`` in one pass (float64), see the module doc."""
    rows = np.empty(0, np.int64) if rows is None else rows
    weights = np.empty(0, np.float64) if weights is None else weights
    n_rows = rows.shape[0] if rows.shape[0] else X.shape[0]
    n_features, n_outputs = X.shape[1], Y.shape[1]
    chunk_rows, n_chunks = cpu.chunking(n_rows)
    parallel = n_rows * (n_features + 1) * (n_features + 2 + n_outputs) // 2 >= cpu.PARALLEL_MIN_WORK
    size = n_features + 1
    G, C, yy = np.empty((size, size)), np.empty((size, n_outputs)), np.empty(n_outputs)
    _gram(X, Y, rows, weights, n_rows, parallel, chunk_rows, n_chunks, np.zeros((n_chunks, size, size)),
          np.zeros((n_chunks, size, n_outputs)), np.zeros((n_chunks, n_outputs)), G, C, yy)
    return G, C, yy


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


@njit(cache=True)
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
            dW[o, f] += alpha * (l1 * np.sign(w) + l2 * w)
    return value


@njit(cache=True)
def _optimizer_step(theta, grad, buffers, step, lr, kind, hyper, penalised):
    """One torch.optim step on a flat float64 parameter view.

    ``buffers`` rows: momentum buffer, Adam's exp_avg, exp_avg_sq, max_exp_avg_sq.
    ``step`` is the 1-based step number. Weight decay acts only where ``penalised``
    (the weights, not the bias): torch.optim with the bias in a weight_decay=0 group.
    """
    weight_decay = hyper[H_WEIGHT_DECAY] if penalised else 0.0
    if kind == SGD:
        momentum = hyper[H_MOMENTUM]
        dampening = hyper[H_DAMPENING]
        nesterov = hyper[H_NESTEROV] != 0.0
        for k in range(theta.shape[0]):
            g = grad[k] + weight_decay * theta[k]
            if momentum != 0.0:
                if step == 1:
                    buffers[0, k] = g
                else:
                    buffers[0, k] = momentum * buffers[0, k] + (1.0 - dampening) * g
                g = g + momentum * buffers[0, k] if nesterov else buffers[0, k]
            theta[k] -= lr * g
        return
    beta1 = hyper[H_BETA1]
    beta2 = hyper[H_BETA2]
    eps = hyper[H_EPS]
    amsgrad = hyper[H_AMSGRAD] != 0.0
    bias_correction1 = 1.0 - beta1**step
    bias_correction2_sqrt = np.sqrt(1.0 - beta2**step)
    step_size = lr / bias_correction1
    for k in range(theta.shape[0]):
        g = grad[k]
        if kind == ADAMW:
            theta[k] *= 1.0 - lr * weight_decay
        else:
            g = g + weight_decay * theta[k]
        buffers[1, k] += (g - buffers[1, k]) * (1.0 - beta1)  # torch: exp_avg.lerp_(grad, 1 - beta1)
        buffers[2, k] = beta2 * buffers[2, k] + (1.0 - beta2) * g * g
        second = buffers[2, k]
        if amsgrad:
            buffers[3, k] = max(buffers[3, k], second)
            second = buffers[3, k]
        theta[k] -= step_size * buffers[1, k] / (np.sqrt(second) / bias_correction2_sqrt + eps)


@njit(cache=True)
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


@njit(cache=True)
def _batch(X, Y, rows, weights, order, start, stop, W, b, mu, sigma, config, layouts, Wk, bk, W_eff, b_eff,
           dW, db, G, C, yy, weight_total, work):
    """Loss, float64 gradients with respect to the optimiser's parameters, and the batch weight sum."""
    standardize = config[C_STANDARDIZE] != 0
    _effective_params(W, b, mu, sigma, standardize, W_eff, b_eff)
    if config[C_GRAM] != 0:
        value = _gram_loss_grad(G, C, yy, weight_total, W_eff, b_eff, dW, db)
        batch_weight = weight_total
    else:
        for o in range(Wk.shape[0]):
            bk[o] = b_eff[o]
            for f in range(Wk.shape[1]):
                Wk[o, f] = W_eff[o, f]
        # work's last item: kernels.cpu.kernel_variant(X, Y), the row kernel cpu._loss_grad compiles (by its type).
        residuals, dW_parts, db_parts, loss_parts, weight_parts, variant = work
        n = stop - start
        layout = 0
        for k in range(layouts.shape[0]):
            if layouts[k, 0] == n:
                layout = k
        parallel, chunk_rows, n_chunks = layouts[layout, 1] != 0, layouts[layout, 2], layouts[layout, 3]
        if order.shape[0] == 0 and weights.shape[0] == 0 and start == 0 and n == X.shape[0]:
            # Whole data set, in order, unweighted: the streaming kernel of kernels.cpu.
            value = cpu._loss_grad(X, Y, Wk, bk, dW, db, parallel, chunk_rows, n_chunks,
                                   residuals, dW_parts, db_parts, loss_parts, variant)
            batch_weight = np.float64(n)
        else:
            value, batch_weight = _gather_loss_grad(X, Y, Wk, bk, order, weights, start, stop, dW, db, parallel,
                                                    chunk_rows, n_chunks, residuals, dW_parts, db_parts,
                                                    loss_parts, weight_parts)
    _to_optimizer_space(dW, db, mu, sigma, standardize)
    return value, batch_weight


@njit(cache=True)
def _to_optimizer_space(dW, db, mu, sigma, standardize):
    """Chain rule from gradients of the kernel's (original-unit) parameters to the optimiser's."""
    if standardize:
        for o in range(dW.shape[0]):
            for f in range(dW.shape[1]):
                dW[o, f] = (dW[o, f] - db[o] * mu[f]) / sigma[f]


@njit(cache=True)
def _diverged(value, scalars):
    """Non-finite, or EXPLOSION_FACTOR times the first objective of the fit (caught long before overflow)."""
    if np.isnan(scalars[S_FIRST_LOSS]):
        scalars[S_FIRST_LOSS] = value
    first = scalars[S_FIRST_LOSS]
    return not np.isfinite(value) or (first > 0 and value > EXPLOSION_FACTOR * first)


@njit(cache=True)
def _apply_step(W, b, dW, db, value, hyper, config, buffers_W, buffers_b, counters, scalars, lr, prev_W, prev_b):
    """Penalty, then one optimiser step from the data gradients (dW, db) in the optimiser's space.

    Returns the objective (data loss + penalty) at the parameters before the step
    and whether the step was taken: a diverged objective (``_diverged``) takes
    none, and the caller stops training and restores ``prev_W``/``prev_b``.
    """
    value += _penalty(W, dW, config[C_PENALTY], hyper[H_ALPHA], hyper[H_L1_RATIO])
    if _diverged(value, scalars):
        return value, False
    prev_W[:] = W
    prev_b[:] = b
    counters[K_STEP] += 1
    step = counters[K_STEP]
    _optimizer_step(W.reshape(-1), dW.reshape(-1), buffers_W.reshape(4, -1), step, lr, config[C_OPTIMIZER], hyper,
                    True)
    _optimizer_step(b, db, buffers_b, step, lr, config[C_OPTIMIZER], hyper, False)
    return value, True


@njit(cache=True)
def _train_epochs(X, Y, rows, weights, val_rows, W, b, mu, sigma, hyper, config, lr_by_epoch, first_epoch, n_epochs,
                  buffers_W, buffers_b, counters, scalars, best_W, best_b, prev_W, prev_b,
                  loss_history, val_history, layouts, val_layouts, order, Wk, bk, W_eff, b_eff, dW, db,
                  G, C, yy, weight_total, G_val, C_val, yy_val, val_weight_total, work):
    """Run up to ``n_epochs`` epochs from epoch ``counters[K_EPOCH]``; return the number completed.

    ``lr_by_epoch``, ``loss_history`` and ``val_history`` are indexed by epoch - first_epoch.

    Stops early (``counters[K_STOP]``) on the tol / early-stopping / adaptive rules
    or on a non-finite loss (parameters restored to those before the last step).
    """
    batch_size = config[C_BATCH_SIZE]
    n_train = rows.shape[0] if rows.shape[0] > 0 else X.shape[0]
    if batch_size <= 0 or batch_size > n_train:
        batch_size = n_train
    tol = hyper[H_TOL]
    use_tol = config[C_USE_TOL] != 0
    early = config[C_EARLY_STOPPING] != 0
    adaptive = config[C_ADAPTIVE] != 0
    done = 0
    for _ in range(n_epochs):
        epoch = counters[K_EPOCH]
        run_epoch = epoch - first_epoch
        lr = lr_by_epoch[run_epoch] * scalars[S_LR_FACTOR]
        if config[C_SHUFFLE] != 0 and batch_size < n_train:
            _shuffle_rows(order, rows, X.shape[0], config[C_SEED], epoch)
            batch_rows = order
        else:
            batch_rows = rows
        epoch_loss = 0.0
        epoch_weight = 0.0
        for start in range(0, n_train, batch_size):
            stop = min(start + batch_size, n_train)
            value, batch_weight = _batch(X, Y, rows if config[C_GRAM] != 0 else batch_rows, weights,
                                         batch_rows, start, stop, W, b, mu, sigma, config, layouts, Wk, bk,
                                         W_eff, b_eff, dW, db, G, C, yy, weight_total, work)
            if batch_weight == 0.0:
                continue  # all weights 0: nothing to learn from this batch, and no step
            value, stepped = _apply_step(W, b, dW, db, value, hyper, config, buffers_W, buffers_b, counters, scalars,
                                         lr, prev_W, prev_b)
            if not stepped:
                if counters[K_STEP] > 0:
                    W[:] = prev_W
                    b[:] = prev_b
                loss_history[run_epoch] = value
                counters[K_STOP] = STOP_DIVERGED
                return done
            epoch_loss += value * batch_weight
            epoch_weight += batch_weight
        loss_history[run_epoch] = epoch_loss / epoch_weight
        counters[K_EPOCH] += 1
        done += 1
        metric = loss_history[run_epoch]
        if early:
            val_value, _ = _batch(X, Y, val_rows, weights, val_rows, 0, val_rows.shape[0], W, b, mu, sigma,
                                  config, val_layouts, Wk, bk, W_eff, b_eff, dW, db, G_val, C_val, yy_val,
                                  val_weight_total, work)
            val_history[run_epoch] = val_value
            metric = val_value
        if use_tol:
            if metric > scalars[S_BEST] - tol:
                counters[K_NO_IMPROVE] += 1
            else:
                counters[K_NO_IMPROVE] = 0
            if metric < scalars[S_BEST]:
                scalars[S_BEST] = metric
                if early:
                    best_W[:] = W
                    best_b[:] = b
            if counters[K_NO_IMPROVE] >= config[C_N_ITER_NO_CHANGE]:
                if adaptive and lr > ADAPTIVE_MIN_LR:
                    scalars[S_LR_FACTOR] /= 5.0
                    counters[K_NO_IMPROVE] = 0
                else:
                    if early:
                        W[:] = best_W
                        b[:] = best_b
                    counters[K_STOP] = STOP_ADAPTIVE if adaptive else (STOP_EARLY if early else STOP_TOL)
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
