"""backend="cuda" out of core and distributed: file chunks streamed to the GPU, gradient sums computed there.

The streamed fit is ``linreg.outofcore``'s, unchanged: the driver plans it,
``outofcore.StreamingRun`` runs its epochs (full batch or mini-batches, the
chunk and row orders of the CPU streamed run) and ``_engine.Stepper`` takes every
step on the host with the engine's compiled rules, from gradient *sums*. Only
where the sums come from differs: ``DeviceStreamed`` hands the run

* ``DeviceChunks`` as its reader: each chunk is read (``outofcore.ShardReader``,
  validated on its first read as on the CPU) straight into one of **two pinned
  host buffers**, copied asynchronously on a **copy stream** into one of **two
  device buffers**, and the kernels of the chunk run on a **compute stream**.
  Events order them: the compute stream waits for its chunk's copy; the copy into
  a buffer waits for the kernels of the chunk that used it two chunks earlier;
  the host waits, before refilling a pinned buffer, for the copy out of it. Chunk
  k + 1 is read and queued before chunk k's kernels are, so its copy overlaps
  them (and, in a full-batch epoch, its file read overlaps chunk k - 1's kernels).
  When the shard is at most two chunks, each chunk keeps its own buffer and is
  copied once per fit.
* ``DeviceSums`` as its source of sums: ``kernels.cuda_train._batch_partials``
  (per-block partials of a chunk or a batch, through the chunk's row order), then
  ``_accumulate_blocks`` (full batch: the blocks added in block order into the
  epoch's total, one launch per chunk on the compute stream, so chunks add in
  chunk order) or ``_sum_blocks`` (one batch). No float atomics: the result is
  the CPU streamed fit's up to the order of the float64 additions inside a chunk.
* a ``DeviceTeam``: the sums vector (2 + O (F + 1) float64) comes back to the
  host once per step for the Stepper. Over NCCL (``TorchCollective`` on backend
  "nccl", one GPU per rank) it is all-reduced on the device first, viewing the
  numba buffer as a torch tensor (``__cuda_array_interface__``); with any other
  collective (one process, gloo) the host copy is summed as on the CPU.

Per epoch, full batch: per chunk 2 launches and 2 copies to the device (3
weighted) unless the chunk is resident; W and b copied once; one copy back (the
sums). Mini-batch: per chunk the same copies (+ its row order when shuffled);
per step W and b copied, 2 launches, one copy back. The statistics passes
(standardize, lr="auto", solver="normal"/"gram") are ``outofcore.statistics_pass``
over the same device chunks with the in-memory GPU fit's Gram and moment kernels
(``DeviceChunkStatistics``): per chunk the (F+1)-sized results come back and are
combined on the host exactly as the CPU combines its chunks'.
"""

from __future__ import annotations

import os

import numpy as np

from linreg import outofcore
from linreg.cuda_backend import require_cuda
from linreg.kernels import codes


def device_for_rank(n_devices: int) -> int:
    """The GPU of this process: ``LOCAL_RANK % n_devices`` (torchrun sets LOCAL_RANK; 0 without it)."""
    if n_devices < 1:
        raise ValueError(f"no GPU to use: n_devices={n_devices}")
    return int(os.environ.get("LOCAL_RANK", "0")) % n_devices


class DeviceChunks:
    """A shard's chunks on the GPU (``ShardReader.chunks``' interface, yielding device arrays), double buffered."""

    def __init__(self, reader: outofcore.ShardReader) -> None:
        from numba import cuda

        self._cuda, self.reader, self.data = cuda, reader, reader.data
        self.n_chunks = reader.n_chunks
        rows = max(1, min(reader.chunk_rows, reader.n_rows))
        n_features, n_outputs, dtype = self.data.n_features, self.data.n_outputs, self.data.dtype
        weighted = self.data.weights is not None
        self.max_rows = rows
        self.pinned = [(cuda.pinned_array((rows, n_features), dtype), cuda.pinned_array((rows, n_outputs), dtype),
                        cuda.pinned_array((rows, 1), np.float64) if weighted else None,
                        cuda.pinned_array(rows, np.int64)) for _ in range(2)]
        self.device = [(cuda.device_array((rows, n_features), dtype), cuda.device_array((rows, n_outputs), dtype),
                        cuda.device_array(rows, np.float64) if weighted else None,
                        cuda.device_array(rows, np.int64)) for _ in range(2)]
        self.no_order = cuda.device_array(0, np.int64)
        self.no_weights = cuda.device_array(0, np.float64)
        self.copy_stream, self.compute_stream = cuda.stream(), cuda.stream()
        self.copied = [None, None]     # event: the copy into device buffer i (and out of pinned buffer i) is done
        self.released = [None, None]   # event: the kernels reading device buffer i are done
        self.holds = [None, None]      # the chunk device buffer i holds (resident shards: <= 2 chunks)
        self.resident = self.n_chunks <= 2

    def _stage(self, slot: int, k: int, order_of) -> tuple:
        """Chunk k into pinned buffer ``slot`` (host read), then queued for the device on the copy stream."""
        pinned_X, pinned_Y, pinned_w, pinned_order = self.pinned[slot]
        device_X, device_Y, device_w, device_order = self.device[slot]
        start, stop = self.reader.bounds(k)
        n = stop - start
        order = order_of(k, n) if order_of is not None else None
        if self.resident and self.holds[slot] == k:  # the chunk is on the device already: at most its order
            if order is not None:
                self._wait_for_buffers(slot)
                pinned_order[:n] = order
                device_order[:n].copy_to_device(pinned_order[:n], stream=self.copy_stream)
                self._record_copy(slot)
            return n, order is not None
        self._wait_for_buffers(slot)
        _, _, weights = self.reader.read(k, out=(pinned_X, pinned_Y, pinned_w))  # validated on first read
        stream = self.copy_stream
        device_X[:n].copy_to_device(pinned_X[:n], stream=stream)
        device_Y[:n].copy_to_device(pinned_Y[:n], stream=stream)
        if weights is not None:
            device_w[:n].copy_to_device(pinned_w[:n].reshape(n), stream=stream)
        if order is not None:
            pinned_order[:n] = order
            device_order[:n].copy_to_device(pinned_order[:n], stream=stream)
        self._record_copy(slot)
        self.holds[slot] = k
        return n, order is not None

    def _wait_for_buffers(self, slot: int) -> None:
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()  # host: the last copy out of this pinned buffer is done
        if self.released[slot] is not None:
            self.released[slot].wait(stream=self.copy_stream)  # device: the kernels that read this buffer are done

    def _record_copy(self, slot: int) -> None:
        event = self._cuda.event()
        event.record(stream=self.copy_stream)
        self.copied[slot] = event

    def _slot(self, position: int, k: int) -> int:
        return k if self.resident else position % 2

    def chunks(self, ks, order_of=None, *, then: int | None = None, beside_parallel_kernels: bool = False):
        """(X, Y, weights or None, order or None) of the chunks ``ks`` as device arrays, each valid until the
        next one is asked for. Chunk k + 1 is staged before chunk k is handed out (see the module docstring);
        ``then`` and ``beside_parallel_kernels`` (the host reader's read-ahead hints) are not used here: the
        staging is this reader's read-ahead."""
        ks = [int(k) for k in ks]
        if not ks:
            return
        staged = {0: self._stage(self._slot(0, ks[0]), ks[0], order_of)}
        for position, k in enumerate(ks):
            slot = self._slot(position, k)
            if position + 1 < len(ks):
                staged[position + 1] = self._stage(self._slot(position + 1, ks[position + 1]), ks[position + 1],
                                                   order_of)
            n, has_order = staged.pop(position)
            if self.copied[slot] is not None:
                self.copied[slot].wait(stream=self.compute_stream)  # the chunk's kernels run after its copy
            device_X, device_Y, device_w, device_order = self.device[slot]
            try:
                yield (device_X[:n], device_Y[:n], None if device_w is None else device_w[:n],
                       device_order[:n] if has_order else None)
            finally:  # the consumer has queued this chunk's kernels (also when it stops early: a mini-batch
                # epoch takes its steps and leaves the generator suspended)
                released = self._cuda.event()
                released.record(stream=self.compute_stream)
                self.released[slot] = released


class DeviceSums:
    """``outofcore._Sums``' interface on the GPU: gradient sums of chunks or batches, left on the device."""

    def __init__(self, chunks: DeviceChunks) -> None:
        from linreg.kernels import cuda_train

        kernels = require_cuda()
        self._kernels, self._train, self.chunks = kernels, cuda_train, chunks
        n_features, n_outputs, dtype = chunks.data.n_features, chunks.data.n_outputs, chunks.data.dtype
        self.size = cuda_train.n_terms(n_features, n_outputs)
        # The chunk length; other lengths (a batch, the last chunk) get their grid on first use.
        self.batches = cuda_train.Batches(n_features, n_outputs, [chunks.max_rows])
        self.total_sums = kernels.empty(self.size, np.float64)
        self.W, self.b = kernels.empty((n_outputs, n_features), dtype), kernels.empty(n_outputs, dtype)
        counters = np.zeros(4, np.int64)
        counters[codes.K_STOP] = codes.RUNNING
        self.counters = kernels.to_device(counters)  # the streamed run checks its stop on the host
        self.stream = chunks.compute_stream

    def zeros(self) -> np.ndarray:
        return np.zeros(self.size)

    def _parameters(self, W: np.ndarray, b: np.ndarray) -> None:
        self.W.copy_to_device(W, stream=self.stream)
        self.b.copy_to_device(b, stream=self.stream)

    def _partials(self, X, Y, weights, order, start: int, stop: int) -> int:
        chunks = self.chunks
        return self.batches.partials(X, Y, self.W, self.b, chunks.no_order if order is None else order,
                                     chunks.no_weights if weights is None else weights, start, stop, self.counters,
                                     stream=self.stream)

    def total(self, chunk_iterator, W: np.ndarray, b: np.ndarray):
        """A full-batch epoch's sums (a device array) at (W, b): the chunks' block partials added in order."""
        self._parameters(W, b)
        first = True
        for X, Y, weights, order in chunk_iterator:
            n_blocks = self._partials(X, Y, weights, order, 0, X.shape[0])
            self._train._launch(self._train._accumulate_blocks, self._kernels._elementwise_blocks(self.size),
                                self.batches.parts, n_blocks, self.total_sums, first, stream=self.stream)
            first = False
        return self.zeros() if first else self.total_sums

    def batch(self, X, Y, W: np.ndarray, b: np.ndarray, weights, order, start: int, stop: int):
        """The sums (a device array) of positions [start, stop) of a device chunk, through its row order."""
        if stop <= start:
            return self.zeros()
        self._parameters(W, b)
        n_blocks = self._partials(X, Y, weights, order, start, stop)
        self._train._launch(self._train._sum_blocks, self._kernels._elementwise_blocks(self.size),
                            self.batches.parts, n_blocks, self.total_sums, stream=self.stream)
        return self.total_sums


class DeviceTeam:
    """The run's ``Collective`` for device sums: all-reduced on the GPU over NCCL, else on a host copy."""

    def __init__(self, team, stream, size: int) -> None:
        from numba import cuda

        self.team, self.stream = team, stream
        self.rank, self.world_size = team.rank, team.world_size
        self.host = cuda.pinned_array(size, np.float64)
        device = getattr(team, "device", None)
        self.nccl = device is not None and getattr(device, "type", "cpu") == "cuda"

    def sum(self, values, what: str) -> np.ndarray:
        if isinstance(values, np.ndarray):  # nothing on the device (a rank whose shard is used up)
            return self.team.sum(values, what)
        if self.nccl:
            return self._nccl_sum(values, what)
        values.copy_to_host(self.host, stream=self.stream)
        self.stream.synchronize()  # the step's one synchronisation
        return self.team.sum(self.host.copy(), what)

    def _nccl_sum(self, values, what: str) -> np.ndarray:
        """All-reduce the numba device buffer in place through a torch view of it, then copy it back."""
        import torch

        team = self.team
        tensor = torch.as_tensor(values, device=team.device)  # __cuda_array_interface__: a view, no copy
        self.stream.synchronize()  # the sums kernels (our stream) are done before NCCL (torch's stream) reads
        team._run("all_reduce (sum)", what, lambda: team._dist.all_reduce(tensor, group=team.group))
        team.last_size = tensor.numel()
        torch.cuda.current_stream(team.device).synchronize()
        values.copy_to_host(self.host, stream=self.stream)
        self.stream.synchronize()
        return self.host.copy()

    def broadcast(self, values: np.ndarray, what: str) -> np.ndarray:
        return self.team.broadcast(values, what)

    def check_same(self, values: np.ndarray, what: str) -> None:
        self.team.check_same(values, what)


class DeviceChunkStatistics:
    """``outofcore.ChunkStatistics`` of a device chunk: the Gram and moment kernels of the in-memory GPU fit
    (``kernels.cuda_train.gram`` / ``weighted_column_moments``), the (F+1)-sized results copied back."""

    def __init__(self, chunks: DeviceChunks) -> None:
        from linreg.kernels import cuda_train

        self._train, self.chunks = cuda_train, chunks
        self.zero_x, self.zero_y = np.zeros(chunks.data.n_features), np.zeros(chunks.data.n_outputs)

    def _weights(self, weights):
        return self.chunks.no_weights if weights is None else weights

    def gram(self, X, Y, weights):
        return self._train.gram(X, Y, self.chunks.no_order, self._weights(weights), X.shape[0], self.zero_x,
                                self.zero_y)

    def moments(self, X, weights):
        return self._train.weighted_column_moments(X, self.chunks.no_order, self._weights(weights), X.shape[0])


class DeviceStreamed(outofcore.Streamed):
    """``outofcore.Streamed`` whose run gets its gradient sums from the GPU (``DeviceChunks``, ``DeviceSums``)."""

    def __init__(self, data, reader, team, batch_counts, local_batch) -> None:
        cuda_kernels = require_cuda()
        device = getattr(team, "device", None)  # a TorchCollective's device: torch's GPU of this rank over NCCL
        if getattr(device, "type", "cpu") == "cuda" and not cuda_kernels.simulator_enabled():
            from numba import cuda

            cuda.select_device(device.index)  # numba on the GPU torch (and NCCL) use: LOCAL_RANK % n_devices
        super().__init__(data, reader, team, batch_counts, local_batch)
        self.chunks = DeviceChunks(reader)  # one pair of buffers for the statistics pass and the run

    def _statistics_on(self) -> tuple:
        return self.chunks, DeviceChunkStatistics(self.chunks)

    def start_gd(self, spec, state, lr: float, rows, val_rows, seed: int):
        chunks = self.chunks
        sums = DeviceSums(chunks)
        team = DeviceTeam(self.team, chunks.compute_stream, sums.size)
        return outofcore.StreamingRun(chunks, team, spec, state, lr, seed, self.batch_counts, self.local_batch,
                                      sums=sums)
