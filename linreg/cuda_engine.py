"""backend="cuda" for every option of the compiled engine: the GPU as one more source of gradient sums.

``DeviceRows`` is a source in ``linreg.driver``'s sense (like ``driver.InMemory``),
so ``driver.fit`` plans a cuda fit exactly as a cpu one (validation split,
statistics, standardisation, lr="auto", the exact solve, the Gram solver,
checkpoints); only where the arithmetic runs differs:

* ``statistics``: column moments and Gram statistics computed on the device
  (``kernels.cuda_train.column_moments`` / ``gram``), the small (F+1)-sized
  results copied back; the exact solve and ``solver="gram"``'s epochs (which
  never touch the rows) then run on the host, as on cpu.
* ``start_gd``: a ``CudaEngineRun``: the engine's loop with every step on the
  device (``kernels.cuda_train``), the state (``cpu_train.TrainState``) on the
  device, the host mirror refreshed once per block of epochs.

The shuffle is the CPU's: each shuffled epoch's permutation is computed on the
host by ``kernels.cpu_train._shuffle_rows`` (the same compiled Fisher-Yates pass
the CPU loop runs, ``epoch_order``'s kernel) and copied to the device (n_train
int64 per epoch). Why not on the device: Fisher-Yates is a serial chain of n
dependent swaps, one GPU thread would need n dependent global-memory round trips
per epoch, and a parallel permutation would be a different shuffle from the
CPU's, so CPU and GPU trajectories could no longer be compared. The copy comes
from one of two pinned buffers, asynchronously on the kernels' stream
(``kernels.cuda_train.OrderUpload``): the host computes epoch e + 1's permutation
while the device runs epoch e, and synchronises only once per block of epochs.
"""

from __future__ import annotations

import numpy as np

from linreg import driver, training
from linreg._engine import _CompiledRun, engine_config
from linreg.cuda_backend import is_device_data, require_cuda
from linreg.kernels import codes, cpu_train
from linreg.options import Spec
from linreg.training import Statistics


class DeviceData(driver.InMemory):
    """``driver.InMemory`` for GPU X and Y (and weights, kept on the device too): what the estimator validated.

    The host rules that need the data use what is small: the validation split and the weight checks the host
    copy of the weights, the checkpoint fingerprint ``kernels.cuda.rows_to_host`` of its sampled rows (so the
    same numbers give the same fingerprint on the host and on the device).
    """

    def __init__(self, X, Y, weights: np.ndarray | None, device_weights, *, y_was_1d: bool = False) -> None:
        super().__init__(X, Y, weights, y_was_1d=y_was_1d)
        self.device_weights = device_weights

    def fingerprint(self) -> str:
        from linreg import checkpoint

        kernels = require_cuda()
        return checkpoint.fingerprint(self.X, self.Y, self.weights, rows_of=kernels.rows_to_host)


class DeviceRows:
    """Rows of (X, Y) and optional sample weights on the GPU, from a validated ``driver.InMemory`` source.

    Host data is copied to the device once (here); device data is viewed in place.
    """

    streams = False

    def __init__(self, source) -> None:
        from linreg.kernels import cuda_train

        kernels = require_cuda()
        self._kernels, self._train = kernels, cuda_train
        self.host = source
        self.n_samples, self.n_features, self.n_outputs = source.n_samples, source.n_features, source.n_outputs
        self.dtype, self.weighted = source.dtype, source.weighted
        self.X = kernels.as_device_array(source.X) if is_device_data(source.X) else kernels.to_device(source.X)
        self.Y = kernels.as_device_array(source.Y) if is_device_data(source.Y) else kernels.to_device(source.Y)
        device_weights = getattr(source, "device_weights", None)  # GPU weights: used in place (DeviceData)
        if device_weights is not None:
            self.weights = device_weights
        elif source.weights is not None:
            self.weights = kernels.to_device(np.ascontiguousarray(source.weights, np.float64))
        else:
            self.weights = kernels.empty(0, np.float64)

    def agree(self, W0: np.ndarray, b0: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
        return self.host.agree(W0, b0, seed)

    def split(self, spec: Spec, seed: int) -> tuple[np.ndarray, np.ndarray]:
        return self.host.split(spec, seed)  # row indices and weight checks only: the rows stay on the device

    def fingerprint(self) -> str:
        return self.host.fingerprint()

    def _rows(self, rows: np.ndarray | None):
        if rows is None:
            return self._kernels.empty(0, np.int64), self.n_samples
        return self._kernels.to_device(np.ascontiguousarray(rows, np.int64)), int(rows.shape[0])

    def statistics(self, rows: np.ndarray | None, *, gram: bool, moments: bool, centred: bool = False) -> Statistics:
        """``driver.InMemory.statistics`` on the device: the moments and/or Gram pass there, small results back.

        ``centred``: the Gram statistics about the weighted column means of X and Y (one more pass each).
        """
        train = self._train
        device_rows, n_rows = self._rows(rows)
        stats = Statistics()
        mean = std = None
        if moments or (gram and centred):
            mean, std = train.column_moments(self.X, device_rows, self.weights, n_rows)
        if moments:
            stats.mean, stats.std = mean, std
        if gram:
            if centred:
                sums = train.column_sums(self.Y, device_rows, self.weights, n_rows, self._kernels.empty(0, np.float64))
                shift_x, shift_y = mean, sums[1:] / sums[0]
            else:
                shift_x, shift_y = np.zeros(self.n_features), np.zeros(self.n_outputs)
            stats.G, stats.C, stats.yy = train.gram(self.X, self.Y, device_rows, self.weights, n_rows, shift_x,
                                                    shift_y)
            if centred:
                stats.shift_x, stats.shift_y = shift_x, shift_y
        if rows is None:
            stats.n_samples, stats.weighted = self.n_samples, self.weighted
        return stats

    def start_gd(self, spec: Spec, state, lr: float, rows, val_rows, seed: int) -> CudaEngineRun:
        return CudaEngineRun(self, spec, state, lr, spec.epochs, rows=rows, val_rows=val_rows, seed=seed)


class CudaEngineRun(_CompiledRun):
    """``_engine.EngineRun`` with the device as the source of gradient sums and the rules run on the device.

    Launches: per step 2 (``_batch_partials``, ``_engine_step``); per epoch 1 more
    (``_engine_epoch_end``), 2 with early stopping (the validation rows' partials),
    plus the copy of a shuffled epoch's permutation. Per ``advance``: the state
    arrays and histories copied back once (the block's one synchronisation, with the
    permutation copies).
    """

    def __init__(self, data: DeviceRows, spec: Spec, state, lr: float, epochs: int, *,
                 rows: np.ndarray | None = None, val_rows: np.ndarray | None = None, seed: int = 0) -> None:
        validates = spec.early_stopping and val_rows is not None and val_rows.shape[0] > 0
        super().__init__(spec, state, lr, epochs, validates)
        kernels, train = data._kernels, data._train
        self._kernels, self._train, self.data = kernels, train, data
        n_features, n_outputs = data.n_features, data.n_outputs
        self.rows_host = None if rows is None or rows.shape[0] == 0 else np.ascontiguousarray(rows, np.int64)
        self.n_train = data.n_samples if self.rows_host is None else int(self.rows_host.shape[0])
        self.batch = training.batch_rows(spec.batch_size, self.n_train)
        self.config = engine_config(spec, batch_size=self.batch, seed=seed, standardize=state.standardize,
                                    early_stopping=validates)
        self.shuffles = bool(self.config.shuffle and self.batch < self.n_train)
        lengths = [self.batch] + ([self.n_train % self.batch] if self.n_train % self.batch else [])
        self.batches = train.Batches(n_features, n_outputs, lengths)
        self.n_val = int(val_rows.shape[0]) if validates else 1
        self.val_batches = train.Batches(n_features, n_outputs, [self.n_val])
        self.rows = (kernels.to_device(self.rows_host) if self.rows_host is not None
                     else kernels.empty(0, np.int64))
        self.val_rows = (kernels.to_device(np.ascontiguousarray(val_rows, np.int64)) if validates
                         else kernels.empty(0, np.int64))
        self.order = train.OrderUpload(self.n_train) if self.shuffles else None
        self.device_lr = kernels.to_device(np.ascontiguousarray(self.lr_by_epoch, np.float64))
        self.device_loss_history = kernels.empty(epochs, np.float64)
        self.device_val_history = kernels.empty(epochs, np.float64)
        self.device_state = cpu_train.TrainState(*(kernels.empty(a.shape, a.dtype) for a in state.arrays))
        dtype = data.dtype
        self.host_params = (np.empty((n_outputs, n_features), dtype), np.empty(n_outputs, dtype),
                            np.empty((n_outputs, n_features)), np.empty(n_outputs))
        self.scratch = (kernels.empty((n_outputs, n_features), dtype), kernels.empty(n_outputs, dtype),
                        kernels.empty((n_outputs, n_features), np.float64), kernels.empty(n_outputs, np.float64),
                        kernels.empty((n_outputs, n_features), np.float64), kernels.empty(n_outputs, np.float64))
        self.epoch_sums = kernels.empty(2, np.float64)
        self._upload()

    def _upload(self) -> None:
        """The host state (a fresh run, or a checkpoint just loaded) to the device, and the kernels' parameters."""
        for host, device in zip(self.state.arrays, self.device_state, strict=True):
            device.copy_to_device(host)
        Wk, bk, W_eff, b_eff = self.host_params
        cpu_train._kernel_params(self.state.arrays, self.config, Wk, bk, W_eff, b_eff)  # the rule, on the host
        for host, device in zip(self.host_params, self.scratch, strict=False):
            device.copy_to_device(host)
        self.device_loss_history.copy_to_device(self.loss_history)
        self.device_val_history.copy_to_device(self.val_history)
        self.epoch_sums.copy_to_device(np.zeros(2))

    def _download(self) -> None:
        for host, device in zip(self.state.arrays, self.device_state, strict=True):
            device.copy_to_host(host)
        self.device_loss_history.copy_to_host(self.loss_history)
        self.device_val_history.copy_to_host(self.val_history)

    def advance(self, n_epochs: int) -> int:
        n_epochs = self._can_advance(n_epochs)
        if not n_epochs:
            return 0
        train, data, state = self._train, self.data, self.device_state
        Wk, bk = self.scratch[0], self.scratch[1]
        first_done = int(self.state.counters[codes.K_EPOCH])
        positions = self.order.device if self.shuffles else self.rows
        rows = self.rows_host if self.rows_host is not None else np.empty(0, np.int64)
        for epoch in range(first_done, first_done + n_epochs):
            if self.shuffles:  # the CPU loop's permutation of this epoch (see the module docstring)
                self.order.send(epoch, lambda buffer, epoch=epoch: cpu_train._shuffle_rows(
                    buffer, rows, data.n_samples, np.int64(self.config.seed), np.int64(epoch)))
            for start in range(0, self.n_train, self.batch):
                stop = min(start + self.batch, self.n_train)
                n_blocks = self.batches.partials(data.X, data.Y, Wk, bk, positions, data.weights, start, stop,
                                                 state.counters)
                train.step(self.batches, n_blocks, state, self.config, self.device_lr, self.first_epoch,
                           self.scratch, self.epoch_sums, self.device_loss_history)
            n_val_blocks = 0
            if self.validates:
                n_val_blocks = self.val_batches.partials(data.X, data.Y, Wk, bk, self.val_rows, data.weights, 0,
                                                         self.n_val, state.counters)
            train.epoch_end(self.val_batches, n_val_blocks, self.validates, state, self.config, self.device_lr,
                            self.first_epoch, self.scratch, self.epoch_sums, self.device_loss_history,
                            self.device_val_history)
        self._download()  # the block's synchronisation
        return self._after_advance(int(self.state.counters[codes.K_EPOCH]) - first_done)

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        super().load_state_dict(state)
        self._upload()
