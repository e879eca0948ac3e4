"""The compiled training engine on the GPU: gradient sums of any batch on the device, and the engine's own rules.

The GPU is one more source of gradient sums. The rules are not copied here:
the one-block kernels below call the very ``@njit`` functions of
``kernels.cpu_train`` (``_apply_step`` with its penalty, divergence test and
optimiser step, ``_diverge``, ``_stopping_rule``, ``_kernel_params``,
``_to_optimizer_space``), which numba-cuda compiles for the device. Under the
simulator, where device arrays are host arrays, the same compiled CPU functions
run on host views of them (``_on_host_views``): one source, two targets.

Shapes (``kernels.cpu_train``'s vocabulary)::

    X (n_samples, n_features), Y (n_samples, n_outputs)   data, float32 or float64, on the device
    order (n_positions,) int64        batch positions -> rows; empty: position p is row p
    weights (n_samples,) float64      sample weights; empty: all 1
    Wk (n_outputs, n_features), bk (n_outputs,)          parameters in original units, the data's dtype
    parts (n_blocks, n_terms) float64 per-block sums, n_terms = 2 + n_outputs * n_features + n_outputs:
        [sum s r^2, sum s, sum s r_o x_f at 2 + o * n_features + f, sum s r_o at 2 + O * F + o]
        (the layout of ``linreg._engine.batch_sums``)
    sums (n_terms,) float64           parts added over the blocks, in block order
    state                             ``cpu_train.TrainState`` of device arrays (float64 parameters, optimiser
                                      buffers, int64 counters, float64 scalars)
    epoch_sums (2,) float64           this epoch's sum of value * batch weight, and of batch weights

Formulas: residual ``r = X_i Wk^T + bk - Y_i``; the batch loss ``sum s r^2 /
(n_outputs sum s)`` and gradients ``2 / (n_outputs sum s) * sum s r x`` (and
``... sum s r``), exactly ``kernels.cpu_train._gather_loss_grad``'s.

A step is two launches: ``_batch_partials`` (all blocks) and ``_engine_step``
(one block: adds the block partials in block order, then one thread applies the
rules and writes the next step's ``Wk``, ``bk``). An epoch adds one launch
(``_engine_epoch_end``: the epoch's loss, the stopping rule), two with early
stopping (the validation rows' partials first). Every kernel returns at once when
``state.counters[K_STOP]`` says the run stopped (diverged, tol, early stopping), so
the host launches a whole block of epochs without looking, and synchronises once,
when it copies the state back.

Parallel strategy and determinism, as ``kernels.cuda``: the positions of a batch
are cut into contiguous ranges by ``kernels.cuda.grid`` (shape and tunables only),
block k writes only row k of ``parts``; inside a block the residual tile goes to
shared memory and each gradient column has one owner thread per tile, tiles in
order; the loss and weight sums use ``kernels.cuda._block_sum``'s fixed tree. The
second kernel adds each column's block partials in block order in one thread. No
float atomics. The statistics kernels (column moments, Gram) follow the same
pattern: one thread per output term walks the block's rows in order.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, njit

from . import cpu_train
from . import cuda as cuda_kernels
from .codes import K_EPOCH, K_STOP, RUNNING, S_LR_FACTOR

_MAX_THREADS = cuda_kernels._MAX_THREADS_PER_BLOCK
_TILE_CAPACITY = cuda_kernels._TILE_CAPACITY
_OUTPUT_REGISTERS = cuda_kernels._OUTPUT_REGISTERS
_block_sum = cuda_kernels._block_sum


def n_terms(n_features: int, n_outputs: int) -> int:
    """Columns of ``parts`` and ``sums``: loss, weight, the dW sums, the db sums."""
    return 2 + n_outputs * n_features + n_outputs


# --------------------------------------------------------------------------- the rules, compiled for both targets


@njit(cache=True)
def _step_rule(sums, state, config, lr_by_epoch, first_epoch, Wk, bk, W_eff, b_eff, dW, db, epoch_sums,
               loss_history):
    """One optimiser step from a batch's gradient sums: ``_engine.Stepper.step`` and the inner loop of
    ``cpu_train._train_epochs``, calling the same rules. A batch of weight 0 takes no step."""
    counters, scalars = state.counters, state.scalars
    n_outputs, n_features = dW.shape
    weight = sums[1]
    if weight == 0.0:
        return
    run_epoch = counters[K_EPOCH] - first_epoch
    lr = lr_by_epoch[run_epoch] * scalars[S_LR_FACTOR]
    scale = 2.0 / (n_outputs * weight)
    for o in range(n_outputs):
        for f in range(n_features):
            dW[o, f] = scale * sums[2 + o * n_features + f]
        db[o] = scale * sums[2 + n_outputs * n_features + o]
    cpu_train._to_optimizer_space(dW, db, state.mu, state.sigma, config.standardize)
    value, stepped = cpu_train._apply_step(state, dW, db, sums[0] / (n_outputs * weight), config, lr)
    if not stepped:
        cpu_train._diverge(state, loss_history, run_epoch, value)
        return
    epoch_sums[0] += value * weight
    epoch_sums[1] += weight
    cpu_train._kernel_params(state, config, Wk, bk, W_eff, b_eff)


@njit(cache=True)
def _epoch_rule(val_sums, validates, state, config, lr_by_epoch, first_epoch, epoch_sums, loss_history, val_history,
                Wk, bk, W_eff, b_eff):
    """The end of ``cpu_train._train_epochs``' epoch: its loss, the validation metric, ``_stopping_rule``."""
    counters, scalars = state.counters, state.scalars
    run_epoch = counters[K_EPOCH] - first_epoch
    lr = lr_by_epoch[run_epoch] * scalars[S_LR_FACTOR]
    loss_history[run_epoch] = epoch_sums[0] / epoch_sums[1]
    epoch_sums[0] = 0.0
    epoch_sums[1] = 0.0
    counters[K_EPOCH] += 1
    metric = loss_history[run_epoch]
    if validates:
        metric = val_sums[0] / (Wk.shape[0] * val_sums[1])
        val_history[run_epoch] = metric
    if cpu_train._stopping_rule(metric, lr, state, config):
        cpu_train._kernel_params(state, config, Wk, bk, W_eff, b_eff)  # early stopping restored the best


def _host_view(array):
    """The NumPy array behind a simulator device array (its memory: changes are the device's)."""
    while not isinstance(array, np.ndarray):
        array = array._item if hasattr(array, "_item") else array._ary
    return array


def _on_host_views(rule):
    """Under the simulator: ``rule`` (compiled for the CPU) called with the host arrays behind device arrays."""

    def call(*args):
        viewed = []
        for arg in args:
            if isinstance(arg, tuple) and hasattr(arg, "_fields"):  # TrainState, or the scalar EngineConfig
                arg = type(arg)(*(a if np.isscalar(a) else _host_view(a) for a in arg))
            elif not np.isscalar(arg):
                arg = _host_view(arg)
            viewed.append(arg)
        return rule(*viewed)

    call.__name__ = rule.__name__
    return call


if cuda_kernels.simulator_enabled():
    _device_step_rule, _device_epoch_rule = _on_host_views(_step_rule), _on_host_views(_epoch_rule)
else:
    _device_step_rule, _device_epoch_rule = _step_rule, _epoch_rule


# --------------------------------------------------------------------------- kernels


@cuda.jit(cache=True)
def _batch_partials(X, Y, W, b, order, weights, start, stop, parts, rows_per_block, tile_rows, tile_outputs,
                    counters):
    """parts[block, :] of the positions [start, stop) of ``order`` (rows in order if empty), weighted.

    ``kernels.cuda._tiled_partials`` through an index: per tile the block looks
    up its rows and weights once (stage 0), computes the weighted residual tile
    ``s r`` into shared memory (stage 1), then each thread owns (feature, group of
    outputs) items of the tile (stage 2).
    """
    if counters[K_STOP] != RUNNING:
        return
    cache = cuda.shared.array(_MAX_THREADS, np.float64)
    residual = cuda.shared.array(_TILE_CAPACITY, np.float64)
    tile_row = cuda.shared.array(_TILE_CAPACITY, np.int64)
    tile_weight = cuda.shared.array(_TILE_CAPACITY, np.float64)
    acc = cuda.local.array(_OUTPUT_REGISTERS, np.float64)
    n_features = X.shape[1]
    n_outputs = W.shape[0]
    n_grad = n_outputs * n_features
    n_columns = 2 + n_grad + n_outputs
    t = cuda.threadIdx.x
    n_threads = cuda.blockDim.x
    block = cuda.blockIdx.x
    first = start + block * rows_per_block
    last = min(first + rows_per_block, stop)
    for column in range(2 + t, n_columns, n_threads):
        parts[block, column] = 0.0
    cuda.syncthreads()
    loss_acc = 0.0
    weight_acc = 0.0
    for p0 in range(first, last, tile_rows):
        n_rows = min(tile_rows, last - p0)
        # Stage 0: the tile's rows and weights.
        for r in range(t, n_rows, n_threads):
            p = p0 + r
            i = order[p] if order.shape[0] > 0 else p
            s = weights[i] if weights.shape[0] > 0 else 1.0
            tile_row[r] = i
            tile_weight[r] = s
            weight_acc += s
        cuda.syncthreads()
        for o0 in range(0, n_outputs, tile_outputs):
            n_outs = min(tile_outputs, n_outputs - o0)
            # Stage 1: residual[r * n_outs + oo] = s_r * R[row r, o0 + oo].
            for q in range(t, n_rows * n_outs, n_threads):
                r = q // n_outs
                o = o0 + q - r * n_outs
                i = tile_row[r]
                value = np.float64(b[o]) - np.float64(Y[i, o])
                for f in range(n_features):
                    value += np.float64(X[i, f]) * np.float64(W[o, f])
                weighted = tile_weight[r] * value
                residual[q] = weighted
                loss_acc += weighted * value
            cuda.syncthreads()
            # Stage 2: gradient items, feature fastest.
            n_groups = (n_outs + _OUTPUT_REGISTERS - 1) // _OUTPUT_REGISTERS
            n_grad_items = n_groups * n_features
            for q in range(t, n_grad_items + n_outs, n_threads):
                if q < n_grad_items:
                    group = q // n_features
                    f = q - group * n_features
                    first_output = group * _OUTPUT_REGISTERS
                    for j in range(_OUTPUT_REGISTERS):
                        acc[j] = 0.0
                    for r in range(n_rows):
                        x = np.float64(X[tile_row[r], f])
                        for j in range(_OUTPUT_REGISTERS):
                            if first_output + j < n_outs:
                                acc[j] += residual[r * n_outs + first_output + j] * x
                    for j in range(_OUTPUT_REGISTERS):
                        if first_output + j < n_outs:
                            parts[block, 2 + (o0 + first_output + j) * n_features + f] += acc[j]
                else:
                    oo = q - n_grad_items
                    total = 0.0
                    for r in range(n_rows):
                        total += residual[r * n_outs + oo]
                    parts[block, 2 + n_grad + o0 + oo] += total
            cuda.syncthreads()  # the tile is read by everyone before it is overwritten
    loss_total = _block_sum(cache, loss_acc)
    weight_total = _block_sum(cache, weight_acc)
    if t == 0:
        parts[block, 0] = loss_total
        parts[block, 1] = weight_total


@cuda.jit(device=True)
def _add_block_partials(parts, n_blocks, sums):
    """sums[k] = parts[0, k] + parts[1, k] + ... in block order; the block's threads share the columns."""
    for k in range(cuda.threadIdx.x, sums.shape[0], cuda.blockDim.x):
        total = 0.0
        for block in range(n_blocks):
            total += parts[block, k]
        sums[k] = total
    cuda.syncthreads()


@cuda.jit(cache=True)
def _engine_step(parts, n_blocks, sums, state, config, lr_by_epoch, first_epoch, Wk, bk, W_eff, b_eff, dW, db,
                 epoch_sums, loss_history):
    """One block: the batch's sums, then thread 0 takes the step (``_step_rule``: the engine's rules)."""
    if state.counters[K_STOP] != RUNNING:
        return
    _add_block_partials(parts, n_blocks, sums)
    if cuda.threadIdx.x == 0:
        _device_step_rule(sums, state, config, lr_by_epoch, first_epoch, Wk, bk, W_eff, b_eff, dW, db, epoch_sums,
                          loss_history)


@cuda.jit(cache=True)
def _engine_epoch_end(val_parts, n_val_blocks, val_sums, validates, state, config, lr_by_epoch, first_epoch,
                      epoch_sums, loss_history, val_history, Wk, bk, W_eff, b_eff):
    """One block: the validation rows' sums (if validating), then thread 0 ends the epoch (``_epoch_rule``)."""
    if state.counters[K_STOP] != RUNNING:
        return
    if validates:
        _add_block_partials(val_parts, n_val_blocks, val_sums)
    if cuda.threadIdx.x == 0:
        _device_epoch_rule(val_sums, validates, state, config, lr_by_epoch, first_epoch, epoch_sums, loss_history,
                           val_history, Wk, bk, W_eff, b_eff)


@cuda.jit(cache=True)
def _column_partials(X, rows, weights, n_rows, center, parts, rows_per_block):
    """Column moments' per-block sums over positions [0, n_rows) of ``rows`` (all rows if empty):
    parts[block, 0] = sum s; parts[block, 1 + f] = sum s (x_f - center_f)^k, k = 1 (center empty) or 2.
    One thread per column walks the block's rows in order."""
    n_features = X.shape[1]
    block = cuda.blockIdx.x
    first = block * rows_per_block
    last = min(first + rows_per_block, n_rows)
    for k in range(cuda.threadIdx.x, 1 + n_features, cuda.blockDim.x):
        total = 0.0
        for p in range(first, last):
            i = rows[p] if rows.shape[0] > 0 else p
            s = weights[i] if weights.shape[0] > 0 else 1.0
            if k == 0:
                total += s
            elif center.shape[0] > 0:
                d = np.float64(X[i, k - 1]) - center[k - 1]
                total += s * d * d
            else:
                total += s * np.float64(X[i, k - 1])
        parts[block, k] = total


@cuda.jit(cache=True)
def _gram_partials(X, Y, rows, weights, n_rows, shift_x, shift_y, parts, rows_per_block):
    """Per-block Gram sums of A = [X - shift_x, 1] and Y - shift_y over positions [0, n_rows) of ``rows``:
    parts[block, :] = [G (F+1)^2 row-major, C (F+1, O) row-major, yy (O)], weighted.
    One thread per term walks the block's rows in order (G's symmetric half is computed twice: simple, exact)."""
    n_features = X.shape[1]
    n_outputs = Y.shape[1]
    size = n_features + 1
    n_g = size * size
    n_c = size * n_outputs
    block = cuda.blockIdx.x
    first = block * rows_per_block
    last = min(first + rows_per_block, n_rows)
    for k in range(cuda.threadIdx.x, n_g + n_c + n_outputs, cuda.blockDim.x):
        total = 0.0
        for p in range(first, last):
            i = rows[p] if rows.shape[0] > 0 else p
            s = weights[i] if weights.shape[0] > 0 else 1.0
            if k < n_g + n_c:
                f = k // size if k < n_g else (k - n_g) // n_outputs
                a = 1.0 if f == n_features else np.float64(X[i, f]) - shift_x[f]
                if k < n_g:
                    g = k - f * size
                    other = 1.0 if g == n_features else np.float64(X[i, g]) - shift_x[g]
                else:
                    o = k - n_g - f * n_outputs
                    other = np.float64(Y[i, o]) - shift_y[o]
                total += s * a * other
            else:
                o = k - n_g - n_c
                y = np.float64(Y[i, o]) - shift_y[o]
                total += s * y * y
        parts[block, k] = total


@cuda.jit(cache=True)
def _sum_blocks(parts, n_blocks, out):
    """out[k] = sum of parts[:n_blocks, k] in block order, one thread per column (grid-stride)."""
    for k in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        total = 0.0
        for block in range(n_blocks):
            total += parts[block, k]
        out[k] = total


@cuda.jit(cache=True)
def _accumulate_blocks(parts, n_blocks, total, first):
    """total[k] (+)= parts[0, k] + parts[1, k] + ... in block order; ``first``: total[k] = that sum.

    The streamed full-batch epoch (``linreg.cuda_stream``): called once per chunk on one stream, so the chunks'
    sums are added in chunk order, as the CPU streamed run adds them; one thread per column, grid-stride."""
    for k in range(cuda.grid(1), total.shape[0], cuda.gridsize(1)):
        chunk_total = 0.0
        for block in range(n_blocks):
            chunk_total += parts[block, k]
        if first:
            total[k] = chunk_total
        else:
            total[k] += chunk_total


# --------------------------------------------------------------------------- launchers


def _launch(kernel, n_blocks: int, *args, stream=0) -> None:
    cuda_kernels._launch(kernel, n_blocks, *args, stream=stream)  # the one launcher (tests count launches there)


def _empty_index():
    return cuda.device_array(0, dtype=np.int64)


def column_sums(X, rows, weights, n_rows: int, center) -> np.ndarray:
    """``[sum s, sum s (x_f - c_f)^k ...]`` over the rows (``_column_partials``), float64 on the host."""
    n_features = X.shape[1]
    n_blocks, rows_per_block = cuda_kernels.grid(n_rows, 1 + n_features)
    parts = cuda.device_array((n_blocks, 1 + n_features), dtype=np.float64)
    out = cuda.device_array(1 + n_features, dtype=np.float64)
    _launch(_column_partials, n_blocks, X, rows, weights, n_rows, center, parts, rows_per_block)
    _launch(_sum_blocks, cuda_kernels._elementwise_blocks(1 + n_features), parts, n_blocks, out)
    return cuda_kernels.to_host(out)


def weighted_column_moments(X, rows, weights, n_rows: int):
    """(weight total, column means, standard deviations): float64 on the host, two passes as
    ``cpu_train.column_moments`` (the mean, then the mean squared deviation from it); the moments are None
    when the weight total is 0 (nothing to average)."""
    sums = column_sums(X, rows, weights, n_rows, cuda.device_array(0, dtype=np.float64))
    if not sums[0] > 0:
        return float(sums[0]), None, None
    mean = sums[1:] / sums[0]
    squares = column_sums(X, rows, weights, n_rows, cuda_kernels.to_device(mean))
    return float(sums[0]), mean, np.sqrt(squares[1:] / squares[0])


def column_moments(X, rows, weights, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted column means and standard deviations (float64 host arrays): ``weighted_column_moments``."""
    _, mean, std = weighted_column_moments(X, rows, weights, n_rows)
    return mean, std


def gram(X, Y, rows, weights, n_rows: int, shift_x: np.ndarray,
         shift_y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(G, C, yy)`` of ``[X - shift_x, 1]`` and ``Y - shift_y`` over the rows, weighted (float64 host arrays)."""
    n_features, n_outputs = X.shape[1], Y.shape[1]
    size = n_features + 1
    terms = size * size + size * n_outputs + n_outputs
    n_blocks, rows_per_block = cuda_kernels.grid(n_rows, terms)
    parts = cuda.device_array((n_blocks, terms), dtype=np.float64)
    out = cuda.device_array(terms, dtype=np.float64)
    _launch(_gram_partials, n_blocks, X, Y, rows, weights, n_rows, cuda_kernels.to_device(shift_x),
            cuda_kernels.to_device(shift_y), parts, rows_per_block)
    _launch(_sum_blocks, cuda_kernels._elementwise_blocks(terms), parts, n_blocks, out)
    flat = cuda_kernels.to_host(out)
    G = flat[: size * size].reshape(size, size)
    C = flat[size * size: size * size + size * n_outputs].reshape(size, n_outputs)
    return G, C, flat[size * size + size * n_outputs:].copy()


class OrderUpload:
    """Each shuffled epoch's permutation, copied to one device buffer without stopping the host.

    Two pinned host buffers take turns: epoch e's permutation is written into
    buffer e % 2 once the copy from it two epochs ago has completed (an event),
    then copied asynchronously on the stream the kernels run on, so it lands after
    the previous epoch's kernels have read the device buffer and before this
    epoch's read it. The host runs at most about an epoch ahead of the device.
    """

    def __init__(self, n: int) -> None:
        self.device = cuda.device_array(n, dtype=np.int64)
        self.host = [cuda.pinned_array(n, dtype=np.int64) for _ in range(2)]
        self.copied = [None, None]

    def send(self, epoch: int, fill) -> None:
        """``fill(buffer)`` writes epoch's permutation into a free pinned buffer; then it is copied over."""
        turn = epoch % 2
        if self.copied[turn] is not None:
            self.copied[turn].synchronize()  # the copy from this buffer two epochs ago is done
        fill(self.host[turn])
        stream = cuda.default_stream()  # the legacy default stream: the one the kernels are launched on
        self.device.copy_to_device(self.host[turn], stream=stream)
        done = cuda.event()  # (the simulator's Event takes no timing argument)
        done.record(stream=stream)
        self.copied[turn] = done


class Batches:
    """The device buffers and launch geometry of one run's batches (a batch length -> its blocks)."""

    def __init__(self, n_features: int, n_outputs: int, lengths: list[int]) -> None:
        self.n_terms = n_terms(n_features, n_outputs)
        self.geometry = {n: cuda_kernels.grid(n, self.n_terms) for n in set(lengths)}
        max_blocks = max(blocks for blocks, _ in self.geometry.values())
        self.parts = cuda.device_array((max_blocks, self.n_terms), dtype=np.float64)
        self.sums = cuda.device_array(self.n_terms, dtype=np.float64)
        self.tile_rows, self.tile_outputs = cuda_kernels.TILE_ROWS, cuda_kernels.TILE_OUTPUTS
        if self.tile_rows < 1 or self.tile_outputs < 1 or self.tile_rows * self.tile_outputs > _TILE_CAPACITY:
            raise ValueError(f"need TILE_ROWS, TILE_OUTPUTS >= 1 and TILE_ROWS * TILE_OUTPUTS <= {_TILE_CAPACITY}, "
                             f"got {self.tile_rows} x {self.tile_outputs}")

    def partials(self, X, Y, Wk, bk, order, weights, start: int, stop: int, counters, stream=0) -> int:
        """Launch ``_batch_partials`` over positions [start, stop); returns the number of blocks it filled."""
        geometry = self.geometry.get(stop - start)
        if geometry is None:  # a length not announced (the streamed run's chunk tails): its own grid, same rule
            geometry = self.geometry[stop - start] = cuda_kernels.grid(stop - start, self.n_terms)
            if geometry[0] > self.parts.shape[0]:  # (rare: grid's block count is not monotone in the length)
                self.parts = cuda.device_array((geometry[0], self.n_terms), dtype=np.float64)
        n_blocks, rows_per_block = geometry
        _launch(_batch_partials, n_blocks, X, Y, Wk, bk, order, weights, start, stop, self.parts, rows_per_block,
                self.tile_rows, self.tile_outputs, counters, stream=stream)
        return n_blocks


def step(batches: Batches, n_blocks: int, state, config, lr_by_epoch, first_epoch: int, scratch, epoch_sums,
         loss_history) -> None:
    """Launch ``_engine_step`` (one block) on the partials ``batches.partials`` just launched."""
    Wk, bk, W_eff, b_eff, dW, db = scratch
    _launch(_engine_step, 1, batches.parts, n_blocks, batches.sums, state, config, lr_by_epoch, first_epoch, Wk, bk,
            W_eff, b_eff, dW, db, epoch_sums, loss_history)


def epoch_end(val_batches: Batches, n_val_blocks: int, validates: bool, state, config, lr_by_epoch,
              first_epoch: int, scratch, epoch_sums, loss_history, val_history) -> None:
    """Launch ``_engine_epoch_end`` (one block) after the epoch's steps (and, validating, the validation partials;
    otherwise ``val_batches`` is an unused placeholder)."""
    Wk, bk, W_eff, b_eff, _, _ = scratch
    _launch(_engine_epoch_end, 1, val_batches.parts, n_val_blocks, val_batches.sums, validates, state, config,
            lr_by_epoch, first_epoch, epoch_sums, loss_history, val_history, Wk, bk, W_eff, b_eff)


def kernel_signatures(dtype: np.dtype) -> list[tuple[str, object, tuple]]:
    """``(name, python function, argument types)`` of this module's kernels for the compile check."""
    from numba import typeof
    from numba.core import types

    dtype = np.dtype(dtype)
    value = types.float32 if dtype == np.float32 else types.float64

    def array(ndim: int, element=value):
        return types.Array(element, ndim, "C")

    f64_1d, f64_2d, i64_1d, i64 = array(1, types.float64), array(2, types.float64), array(1, types.int64), types.int64
    state = typeof(cpu_train.TrainState(
        W=np.zeros((1, 1)), b=np.zeros(1), mu=np.zeros(1), sigma=np.zeros(1), buffers_W=np.zeros((4, 1, 1)),
        buffers_b=np.zeros((4, 1)), counters=np.zeros(4, np.int64), scalars=np.zeros(3), best_W=np.zeros((1, 1)),
        best_b=np.zeros(1), prev_W=np.zeros((1, 1)), prev_b=np.zeros(1)))
    config = typeof(cpu_train.make_config(
        optimizer=0, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8,
        amsgrad=False, penalty=0, alpha=0.0, l1_ratio=0.0, use_tol=False, tol=0.0, n_iter_no_change=5,
        early_stopping=False, adaptive=False, batch_size=1, shuffle=True, seed=0, standardize=False))
    entries = [
        ("batch_partials", _batch_partials, (array(2), array(2), array(2), array(1), i64_1d, f64_1d, i64, i64, f64_2d,
                                             i64, i64, i64, i64_1d)),
        ("engine_step", _engine_step, (f64_2d, i64, f64_1d, state, config, f64_1d, i64, array(2), array(1), f64_2d,
                                       f64_1d, f64_2d, f64_1d, f64_1d, f64_1d)),
        ("engine_epoch_end", _engine_epoch_end, (f64_2d, i64, f64_1d, types.boolean, state, config, f64_1d, i64,
                                                 f64_1d, f64_1d, f64_1d, array(2), array(1), f64_2d, f64_1d)),
        ("column_partials", _column_partials, (array(2), i64_1d, f64_1d, i64, f64_1d, f64_2d, i64)),
        ("gram_partials", _gram_partials, (array(2), array(2), i64_1d, f64_1d, i64, f64_1d, f64_1d, f64_2d, i64)),
        ("sum_blocks", _sum_blocks, (f64_2d, i64, f64_1d)),
        ("accumulate_blocks", _accumulate_blocks, (f64_2d, i64, f64_1d, types.boolean)),
    ]
    return [(name, getattr(kernel, "py_func", kernel), argtypes) for name, kernel, argtypes in entries]
