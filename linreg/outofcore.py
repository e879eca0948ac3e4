"""Out-of-core training: stream row chunks of ``.npy`` files or memory-mapped arrays through the kernels.

``fit(estimator, X, y, sample_weight)`` trains a ``LinearRegressor`` on data that
need not fit in memory. ``X``, ``y`` and ``sample_weight`` may each be a path to
a ``.npy`` file, an ``np.memmap`` or an ordinary array; or ``X`` is Parquet data
and ``y``/``sample_weight`` name its columns (``linreg.parquet``: one more
``RowSource``, record batches copied into the same chunk buffers). Rows are read chunk by
chunk into buffers allocated once (about ``chunk_bytes`` in all, default
``CHUNK_BYTES``): a C-ordered ``.npy`` file is read with plain file reads at row
offsets (no mapping, so nothing of the file becomes resident in this process);
a memmap (or a Fortran-ordered file, mapped) is copied slice by slice into the
buffer and the pages just read are dropped from the mapping (``madvise
MADV_DONTNEED``; not for copy-on-write ``mode="c"`` maps, whose pages may hold
the caller's changes). Each chunk is validated on its first read: non-finite
values (and negative weights) raise a ValueError naming the global row.

dtypes follow the in-memory rules (integers become float32; float64 anywhere
makes the fit float64): float32 data stays float32 in the buffers and the
kernels accumulate in float64. The parameters are float64 "master" parameters,
as the in-memory engine keeps them for every non-plain option; only the
in-memory *plain* full-batch GD on float32 data (the seeds' loop) keeps float32
parameters, so there the two agree to float32 rounding, not exactly.

How each solver streams (``linreg._engine.Stepper`` applies every update, so the
optimiser, penalty, schedule and standardisation are the in-memory engine's):

* ``solver="gd"``, full batch: per epoch the gradient *sums* of every chunk at
  the same parameters are added, then one step. This is the in-memory
  trajectory up to the summation order of the chunks (measured ~1e-15 relative
  on the parameters; the tests assert 1e-12).
* ``batch_size`` set: mini-batch SGD, one step per batch; see "Shuffling".
* ``solver="normal"``, ``"gram"``, ``lr="auto"``, ``standardize``: one statistics
  pass first. Gram statistics are ``kernels.cpu_train.gram`` per chunk, summed;
  column moments are per-chunk weighted means and centred sums of squares,
  combined exactly with Chan et al.'s parallel formula ``M2 = sum_c M2_c +
  w_c (mean_c - mean)^2`` (one pass, no cancellation). ``"gram"`` then runs
  the Gram loop (``_engine.GramRun``) on those statistics (its epochs never touch the data).
* ``tol``, ``n_iter_no_change``, every schedule including ``"adaptive"``: on the
  epoch loss, with the engine's own compiled rule (``Stepper.stopping_rule``).
* The fit itself (initial parameters, statistics pass, solve or run, the block loop)
  is ``linreg.driver.fit`` with ``Streamed`` as its source, as every fit.
* Not out of core: ``early_stopping`` (it needs a random validation subset of
  rows held apart for every epoch) and ``backend="torch"``: a ValueError, never
  a silent fallback. ``backend="cuda"`` runs this same fit with the chunks streamed
  to the GPU and the sums computed there (``linreg.cuda_stream``).

Shuffling. In memory, each epoch visits the rows in one global permutation;
out of core that would mean a random read per row. Instead each epoch visits
the chunks in a seeded random order and the rows of each chunk in a seeded
random order (Fisher-Yates on splitmix64, ``kernels.cpu_train.epoch_order``,
seeded from ``(random_state, rank, chunk)`` and the epoch). Batches are
consecutive runs of that order and never straddle two chunks: the chunk length
is rounded down to a multiple of ``batch_size``, so every batch is full except
the tail of the file's last chunk, wherever that chunk falls in the epoch. Every
row is still visited exactly once per epoch, but a batch draws its rows from one
chunk (about ``chunk_bytes`` of consecutive rows): if the file is sorted by
something that matters, shuffle the file once or use a larger ``chunk_bytes``.
With ``shuffle=False`` the batches are exactly the in-memory ones.
``epoch_batches`` returns the batches of an epoch (the tests feed them to torch).

The same trainer runs data-parallel (``linreg.distributed``): a rank streams only
its shard of the rows and the sums vectors are all-reduced through a
``Collective``; a single process is the one-rank ``Collective`` below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import mmap
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from linreg import _validation as check
from linreg import training
from linreg.kernels import codes
from linreg.options import Spec
from linreg.runs import GDRun
from linreg.training import Statistics

#: Default budget, in bytes, of the chunk buffers (data, targets, weights, conversion and shuffle scratch).
#: Tests patch it small; ``fit(..., chunk_bytes=...)`` overrides it per call.
CHUNK_BYTES = 64 << 20

_PAGE = mmap.PAGESIZE
_FAULT_AROUND_MARGIN = 2 << 20  # fault-around never crosses a 2 MiB page-table block


# --------------------------------------------------------------------------- reading rows


def is_out_of_core(*arrays: Any) -> bool:
    """True if any argument is a path (str / os.PathLike), an ``np.memmap`` or Parquet data (``linreg.parquet``):
    the data to stream, not to load."""
    from linreg import parquet

    return any(isinstance(a, str | os.PathLike | np.memmap) or parquet.is_parquet(a) for a in arrays if a is not None)


def _compute_dtype(stored: np.dtype, name: str) -> np.dtype:
    """The dtype the fit computes in for data stored as ``stored``: the in-memory rules of ``as_float_array``."""
    if stored.kind in "iub" or (stored.kind == "f" and stored.itemsize < 4):
        return np.dtype(np.float32)
    if stored.kind == "f" and stored.itemsize in (4, 8):
        return np.dtype(stored.type)  # native byte order; a byte-swapped file is converted chunk by chunk
    raise TypeError(f"{name} must hold numbers stored as integers, float32 or float64; got dtype {stored}")


class RowSource:
    """Rows of a 1-D or 2-D array held elsewhere (a file, a mapping), copied on request into a caller's buffer."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype  # as stored

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        """Copy rows [start, stop) into ``out`` ((stop - start, n_columns), C-contiguous), converting the dtype."""
        raise NotImplementedError

    def scratch_bytes_per_row(self, dtype: np.dtype) -> int:
        """Bytes per chunk row this source needs besides the chunk buffer of ``dtype``: its conversion buffer."""
        return 0 if self.dtype == dtype else self.dtype.itemsize * math.prod(self.shape[1:])

    def prefetch(self, start: int, stop: int) -> None:
        """A hint: rows [start, stop) are read next. A source may start reading them in the background
        (``linreg.parquet`` does); the next ``read`` returns the same rows either way."""

    def close(self) -> None:
        """Release the file or mapping."""


class NpyFileRows(RowSource):
    """A C-ordered ``.npy`` file read with plain reads at row offsets: the file is never mapped."""

    def __init__(self, path: Path | str, name: str, offset: int, shape: tuple[int, ...], dtype: np.dtype,
                 file: io.RawIOBase | None = None) -> None:
        self.path, self.name, self.offset, self.shape, self.dtype = path, name, offset, shape, dtype
        self.row_bytes = dtype.itemsize * math.prod(shape[1:])
        self._file = io.FileIO(path, "r") if file is None else file  # ``file``: already open (``linreg.spill``)
        self._raw = np.empty(0, np.uint8)  # conversion buffer, grown once to the chunk size

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        n_bytes = (stop - start) * self.row_bytes
        direct = out.dtype == self.dtype and out.flags.c_contiguous
        if not direct and self._raw.nbytes < n_bytes:
            self._raw = np.empty(n_bytes, np.uint8)
        target = memoryview(out).cast("B") if direct else memoryview(self._raw)[:n_bytes]
        self._file.seek(self.offset + start * self.row_bytes)
        done = 0
        while done < n_bytes:
            got = self._file.readinto(target[done:])
            if not got:
                raise ValueError(f"{self.name}: {self.path} ended at byte {self.offset + start * self.row_bytes + done}"
                                 f" while reading rows {start}..{stop - 1} (was it truncated during the fit?)")
            done += got
        if not direct:
            stored = self._raw[:n_bytes].view(self.dtype).reshape(out.shape)
            np.copyto(out, stored, casting="unsafe")

    def close(self) -> None:
        self._file.close()


class ArrayRows(RowSource):
    """An array (often an ``np.memmap``) copied slice by slice; a memmap's pages are dropped after each copy."""

    def __init__(self, array: np.ndarray, name: str) -> None:
        self.array, self.name, self.shape, self.dtype = array, name, array.shape, array.dtype
        mapping = getattr(array, "_mmap", None) if isinstance(array, np.memmap) else None
        # Copy-on-write maps (mode "c") may hold the caller's private changes: dropping their pages would lose them.
        self._mapping = mapping if mapping is not None and array.mode != "c" and hasattr(mmap, "MADV_DONTNEED") \
            else None
        self._base = np.frombuffer(mapping, np.uint8).ctypes.data if self._mapping is not None else 0

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        rows = self.array[start:stop]
        np.copyto(out, rows.reshape(out.shape), casting="unsafe")
        if self._mapping is not None:
            # The kernel's fault-around also maps cached pages next to the ones read (up to a 2 MiB-aligned
            # block): drop that margin too, or each chunk would leave a few pages of its neighbours resident.
            low, high = np.lib.array_utils.byte_bounds(rows)
            first = max(0, (low - self._base - _FAULT_AROUND_MARGIN) // _PAGE * _PAGE)
            self._mapping.madvise(mmap.MADV_DONTNEED, first, high - self._base + _FAULT_AROUND_MARGIN - first)

    def close(self) -> None:
        self.array = self._mapping = None


def open_rows(value: Any, name: str) -> RowSource:
    """A ``RowSource`` for a ``.npy`` path, an ``np.memmap`` or an array; checks the dtype, reads nothing."""
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        if path.suffix.lower() != ".npy":
            raise ValueError(f"{name}: out-of-core data must be a .npy file (numpy.save's format, rows readable "
                             f"at offsets); got {str(path)!r}")
        shape, fortran_order, dtype, offset = _npy_header(path, name)
        _compute_dtype(dtype, name)
        row_bytes = dtype.itemsize * math.prod(shape[1:])
        expected, size = offset + (shape[0] if shape else 1) * row_bytes, path.stat().st_size
        if size < expected:
            raise ValueError(f"{name}: {path} is truncated: its header promises {shape} {dtype} "
                             f"({expected} bytes with the header), the file has {size} bytes")
        if fortran_order and len(shape) == 2:
            # A row is scattered over the columns: copy it from a mapping instead of reading it at one offset.
            return ArrayRows(np.load(path, mmap_mode="r", allow_pickle=False), name)
        return NpyFileRows(path, name, offset, shape, dtype)
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    _compute_dtype(array.dtype, name)
    return ArrayRows(array, name)


def _npy_header(path: Path, name: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of a .npy file, from its header alone."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            # Versions 2.0 and 3.0 share the header layout (3.0 allows utf-8 in structured dtypes' names).
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read(handle)
            return shape, fortran_order, dtype, handle.tell()
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: no such file: {str(path)!r}") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{name}: cannot read {str(path)!r} as a .npy array: {error}") from None


@dataclasses.dataclass
class Dataset:
    """X, Y (and weights) as row sources, validated against each other; nothing read yet."""

    X: RowSource
    Y: RowSource
    weights: RowSource | None
    dtype: np.dtype
    one_output: bool
    feature_names: np.ndarray | None = None  # the columns of a table (Parquet), for feature_names_in_

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def n_outputs(self) -> int:
        return 1 if self.one_output else self.Y.shape[1]

    def close(self) -> None:
        for source in (self.X, self.Y, self.weights):
            if source is not None:
                source.close()


def open_dataset(X: Any, y: Any, sample_weight: Any = None) -> Dataset:
    """Open and cross-check X (n_samples, n_features), y (n_samples,) or (n_samples, n_outputs), weights.

    Parquet data X (``linreg.parquet.is_parquet``) names its target and weight columns in ``y`` and ``sample_weight``.
    """
    from linreg import parquet

    if parquet.is_parquet(X):
        dataset = parquet.open_dataset(X, y, sample_weight)
        try:
            _check_shapes(dataset)
        except BaseException:
            dataset.close()
            raise
        return dataset
    sources = []
    try:
        sources.append(open_rows(X, "X"))
        sources.append(open_rows(y, "y"))
        if sample_weight is not None:
            sources.append(open_rows(sample_weight, "sample_weight"))
    except BaseException:
        for source in sources:
            source.close()
        raise
    dataset = Dataset(sources[0], sources[1], sources[2] if len(sources) > 2 else None,
                      np.promote_types(_compute_dtype(sources[0].dtype, "X"), _compute_dtype(sources[1].dtype, "y")),
                      len(sources[1].shape) == 1)
    try:
        _check_shapes(dataset)
    except BaseException:
        dataset.close()
        raise
    return dataset


def _check_shapes(data: Dataset) -> None:
    X, Y, weights = data.X.shape, data.Y.shape, data.weights.shape if data.weights is not None else None
    if len(X) != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X}")
    if X[0] < 1 or X[1] < 1:
        raise ValueError(f"X must have at least 1 sample and 1 feature, got shape {X}")
    if len(Y) not in (1, 2) or (len(Y) == 2 and Y[1] < 1):
        raise ValueError(f"y must be 1-D (n_samples,) or 2-D (n_samples, n_outputs >= 1), got shape {Y}")
    if Y[0] != X[0]:
        raise ValueError(f"X and y must have the same number of samples, got X {X} and y {Y}")
    if weights is not None and weights != (X[0],):
        raise ValueError(f"sample_weight must have shape ({X[0]},), got {weights}")


def chunk_rows_for(data: Dataset, chunk_bytes: int, batch: int | None = None, shuffle: bool = False) -> int:
    """Rows per chunk so that every per-row buffer together takes at most ``chunk_bytes``.

    A mini-batch run rounds down to a multiple of its (local) batch, so batches never straddle chunks.
    """
    itemsize = data.dtype.itemsize
    per_row = itemsize * (data.n_features + data.n_outputs) + max(data.n_features, data.n_outputs)  # + finite mask
    for source in (data.X, data.Y, data.weights):
        if source is not None:  # conversion buffers
            per_row += source.scratch_bytes_per_row(data.dtype if source is not data.weights else np.dtype(np.float64))
    if data.weights is not None:
        per_row += 8
    if shuffle:
        per_row += 8  # the chunk's row permutation (int64)
    rows = max(1, int(chunk_bytes) // per_row)
    if batch:
        rows = max(batch, rows // batch * batch)
    return rows


class ShardReader:
    """Rows [lo, hi) of a Dataset, chunk by chunk into buffers allocated once; each chunk validated on first read."""

    def __init__(self, data: Dataset, lo: int, hi: int, chunk_rows: int) -> None:
        self.data, self.lo, self.hi, self.chunk_rows = data, lo, hi, chunk_rows
        self.n_rows = hi - lo
        self.n_chunks = math.ceil(self.n_rows / chunk_rows) if self.n_rows else 0
        rows = min(chunk_rows, self.n_rows)
        self._X = np.empty((rows, data.n_features), data.dtype)
        self._Y = np.empty((rows, data.n_outputs), data.dtype)
        self._w = np.empty((rows, 1)) if data.weights is not None else None
        self._finite = np.empty(rows * max(data.n_features, data.n_outputs), np.bool_)
        self._checked = np.zeros(self.n_chunks, np.bool_)

    def bounds(self, k: int) -> tuple[int, int]:
        """Global rows [start, stop) of chunk k."""
        start = self.lo + k * self.chunk_rows
        return start, min(start + self.chunk_rows, self.hi)

    def read(self, k: int, out: tuple | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Chunk k as views of the reused buffers: (X, Y, weights or None). Valid until the next read.

        ``out``: other buffers (X, Y, weights or None) shaped as this reader's, e.g. pinned ones for the GPU
        (``linreg.cuda_stream``)."""
        buffer_X, buffer_Y, buffer_w = (self._X, self._Y, self._w) if out is None else out
        start, stop = self.bounds(k)
        n = stop - start
        X, Y = buffer_X[:n], buffer_Y[:n]
        self.data.X.read(start, stop, X)
        self.data.Y.read(start, stop, Y)
        weights = None
        if buffer_w is not None:
            self.data.weights.read(start, stop, buffer_w[:n])
            weights = buffer_w[:n, 0]
        if not self._checked[k]:  # (the weights were checked whole before training: see _check_weights)
            self._check_finite(X, "X", start, two_d=True)
            self._check_finite(Y, "y", start, two_d=not self.data.one_output)
            self._checked[k] = True
        return X, Y, weights

    def prefetch(self, k: int | None, *, beside_parallel_kernels: bool = False) -> None:
        """Chunk k (if any) is read next: the sources may start reading it now (``RowSource.prefetch``).

        ``beside_parallel_kernels``: the caller's work until then is a parallel kernel on every thread (a
        full-batch chunk), which a reading thread only competes with unless a core is spare: measured slower
        on 2 cores (W8, benchmarks/README.md), so then nothing is read ahead."""
        if beside_parallel_kernels and not _spare_core():
            return
        if k is not None and 0 <= k < self.n_chunks:
            for source in (self.data.X, self.data.Y, self.data.weights):
                if source is not None:
                    source.prefetch(*self.bounds(k))

    def _check_finite(self, values: np.ndarray, name: str, start: int, two_d: bool) -> None:
        mask = self._finite[:values.size].reshape(values.shape)
        np.isfinite(values, out=mask)  # into a reused buffer: the check allocates nothing per chunk
        if mask.all():
            return
        flat = int(np.argmin(mask.reshape(-1)))
        row, column = divmod(flat, values.shape[1]) if values.ndim == 2 else (flat, 0)
        where = f"row {start + row}" + (f", column {column}" if two_d else "")
        raise ValueError(f"{name} contains {values.reshape(-1)[flat]} at {where}; remove or impute non-finite values")

    def chunks(self, ks, order_of=None, *, then: int | None = None,
               beside_parallel_kernels: bool = False) -> Iterator[tuple]:
        """(X, Y, weights or None, order or None) of the chunks ``ks`` in turn; ``order_of(k, n_rows)``: the
        positions in which chunk k's rows are visited (None: in order). The GPU's reader has the same method.

        While the caller works on a chunk, the next one (after the last: ``then``, if any) may be read ahead
        (``prefetch``, with ``beside_parallel_kernels`` as there)."""
        ks = [int(k) for k in ks]
        for position, k in enumerate(ks):
            X, Y, weights = self.read(k)
            self.prefetch(ks[position + 1] if position + 1 < len(ks) else then,
                          beside_parallel_kernels=beside_parallel_kernels)
            yield X, Y, weights, None if order_of is None else order_of(k, X.shape[0])


def _spare_core() -> bool:
    """True if the kernels' threads leave a core of this process's CPU set free."""
    import numba

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return numba.get_num_threads() < cores


# --------------------------------------------------------------------------- collectives


class Collective(Protocol):
    """How the ranks of a data-parallel run combine: a single process is one rank that combines with nobody."""

    rank: int
    world_size: int

    def sum(self, values: np.ndarray, what: str) -> np.ndarray:
        """Element-wise float64 sum of ``values`` over the ranks (an all-reduce)."""

    def broadcast(self, values: np.ndarray, what: str) -> np.ndarray:
        """Rank 0's ``values`` on every rank."""

    def check_same(self, values: np.ndarray, what: str) -> None:
        """Raise unless every rank holds the same int64 ``values``."""


class SingleProcess:
    """The Collective of one process."""

    rank = 0
    world_size = 1

    def sum(self, values: np.ndarray, what: str) -> np.ndarray:
        return values

    def broadcast(self, values: np.ndarray, what: str) -> np.ndarray:
        return values

    def check_same(self, values: np.ndarray, what: str) -> None:
        return None


def even_shards(n_samples: int, world_size: int) -> list[tuple[int, int]]:
    """Contiguous row ranges, one per rank, whose sizes differ by at most one (np.array_split's)."""
    bounds = [r * (n_samples // world_size) + min(r, n_samples % world_size) for r in range(world_size + 1)]
    return [(bounds[r], bounds[r + 1]) for r in range(world_size)]


def check_shards(shards: Sequence[tuple[int, int]], n_samples: int, world_size: int) -> list[tuple[int, int]]:
    """Validate rank-ordered row ranges that tile [0, n_samples) without gaps or overlaps."""
    shards = [(int(lo), int(hi)) for lo, hi in shards]
    if len(shards) != world_size:
        raise ValueError(f"shards must give one (lo, hi) row range per rank: {world_size} ranks, got {len(shards)}")
    expected_lo = 0
    for rank, (lo, hi) in enumerate(shards):
        if lo != expected_lo or hi < lo:
            raise ValueError(f"shards must tile rows [0, {n_samples}) in rank order; rank {rank} has [{lo}, {hi}), "
                             f"expected it to start at {expected_lo} and end at or after its start")
        expected_lo = hi
    if expected_lo != n_samples:
        raise ValueError(f"shards must cover all {n_samples} rows; they end at row {expected_lo}")
    return shards


def local_batch_sizes(batch_size: int, world_size: int) -> list[int]:
    """The global batch of ``batch_size`` rows split over the ranks: each rank's rows per step."""
    if batch_size < world_size:
        raise ValueError(f"batch_size is the global batch, split over the ranks: it must be at least the number "
                         f"of ranks ({world_size}), got {batch_size}")
    return [batch_size // world_size + (r < batch_size % world_size) for r in range(world_size)]


# --------------------------------------------------------------------------- shuffling


def _stream_seed(seed: int, rank: int, stream: int) -> int:
    """An independent int63 seed for (seed, rank, stream): stream 0 orders the chunks, 1 + k the rows of chunk k."""
    state = np.random.SeedSequence(seed % 2**64, spawn_key=(rank, stream)).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def chunk_order(seed: int, rank: int, epoch: int, n_chunks: int, shuffle: bool) -> np.ndarray:
    """The order in which a rank visits its chunks in ``epoch``."""
    from linreg.kernels import cpu_train

    if not shuffle or n_chunks < 2:
        return np.arange(n_chunks)
    return cpu_train.epoch_order(_stream_seed(seed, rank, 0), epoch, n_chunks)


def row_order(seed: int, rank: int, epoch: int, chunk: int, n_rows: int, shuffle: bool) -> np.ndarray | None:
    """Positions within chunk ``chunk`` in the order ``epoch`` visits them (None: in order)."""
    from linreg.kernels import cpu_train

    if not shuffle:
        return None
    return cpu_train.epoch_order(_stream_seed(seed, rank, 1 + chunk), epoch, n_rows)


def epoch_batches(seed: int, epoch: int, n_samples: int, chunk_rows: int, batch_size: int, *, shuffle: bool = True,
                  rank: int = 0, lo: int = 0) -> list[np.ndarray]:
    """The global rows of each mini-batch of ``epoch`` for a rank streaming rows [lo, lo + n_samples).

    What the trainer visits (``chunk_rows`` a multiple of ``batch_size``, as ``chunk_rows_for`` makes it).
    """
    batches = []
    n_chunks = math.ceil(n_samples / chunk_rows)
    for k in chunk_order(seed, rank, epoch, n_chunks, shuffle):
        start = lo + int(k) * chunk_rows
        n = min(chunk_rows, lo + n_samples - start)
        order = row_order(seed, rank, epoch, int(k), n, shuffle)
        rows = np.arange(n) if order is None else order
        batches += [start + rows[s:s + batch_size] for s in range(0, n, batch_size)]
    return batches


# --------------------------------------------------------------------------- gradient and statistics passes


class _Sums:
    """Flat gradient sums ``[sum s r^2, sum s, sum s r x (O*F), sum s r (O)]`` of a chunk or batch (``batch_sums``)."""

    def __init__(self, n_features: int, n_outputs: int) -> None:
        self.size = 2 + n_outputs * (n_features + 1)
        self._workspaces: dict[int, Any] = {}
        self._dW = np.empty((n_outputs, n_features))
        self._db = np.empty(n_outputs)

    def zeros(self) -> np.ndarray:
        return np.zeros(self.size)

    def total(self, chunks, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The sums of whole chunks (``ShardReader.chunks``) at (W, b), added in chunk order: a full-batch epoch."""
        local = self.zeros()
        for X, Y, weights, _ in chunks:
            local += self.of(X, Y, W, b, weights)
        return local

    def batch(self, X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray, weights: np.ndarray | None,
              order: np.ndarray | None, start: int, stop: int) -> np.ndarray:
        """The sums of positions [start, stop) of a chunk: its rows ``order[start:stop]`` (None: in order)."""
        if order is None:  # in order: the batch is a contiguous slice, as in memory
            return self.of(X[start:stop], Y[start:stop], W, b, None if weights is None else weights[start:stop])
        return self.of(X, Y, W, b, weights, order[start:stop])

    def of(self, X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray, weights: np.ndarray | None,
           rows: np.ndarray | None = None) -> np.ndarray:
        from linreg._engine import batch_sums
        from linreg.kernels import cpu

        n = X.shape[0] if rows is None else rows.shape[0]
        if n == 0 or (weights is not None and not (weights if rows is None else weights[rows]).sum() > 0):
            return self.zeros()  # nothing to add (the kernels would divide 0 by 0)
        if weights is not None or rows is not None:
            return batch_sums(X, Y, W, b, weights, rows)
        # Contiguous and unweighted: the in-memory full-batch kernel (specialised on small n_features).
        work = self._workspaces.get(n)
        if work is None:
            work = self._workspaces[n] = cpu.Workspace(n, X.shape[1], Y.shape[1], X.dtype)
        cpu.launch_threads()
        n_outputs = Y.shape[1]
        loss = cpu._loss_grad(X, Y, W, b, self._dW, self._db, *work.chunk_args(), cpu.kernel_variant(X, Y))
        unscale = n * n_outputs  # the kernel returns means; the sums of several chunks must add
        return np.concatenate([[loss * unscale, n], (self._dW * (unscale / 2)).ravel(), self._db * (unscale / 2)])


class ChunkStatistics:
    """The statistics of one chunk (X, Y, weights or None) on the CPU; ``linreg.cuda_stream`` has the GPU's."""

    @staticmethod
    def gram(X: np.ndarray, Y: np.ndarray, weights: np.ndarray | None):
        """(G, C, yy) of ``[X, 1]`` and Y about 0, weighted (``kernels.cpu_train.gram``)."""
        from linreg.kernels import cpu_train

        return cpu_train.gram(X, Y, None, weights)

    @staticmethod
    def moments(X: np.ndarray, weights: np.ndarray | None) -> tuple[float, np.ndarray | None, np.ndarray | None]:
        """(weight total, column means, standard deviations); the moments are None for a chunk of weight 0."""
        from linreg.kernels import cpu_train

        weight = float(X.shape[0] if weights is None else weights.sum())
        if not weight > 0:
            return weight, None, None
        return (weight, *cpu_train.column_moments(X, None, weights))


def statistics_pass(reader: ShardReader, team: Collective, *, gram: bool, moments: bool,
                    chunk_statistics=ChunkStatistics) -> Statistics:
    """One pass over the rank's chunks: summed Gram statistics, Chan-combined moments; then reduced over ranks.

    ``reader`` and ``chunk_statistics``: where the chunks are and the statistics of one are computed (the GPU's
    in ``linreg.cuda_stream``)."""
    n_features, n_outputs = reader.data.n_features, reader.data.n_outputs
    stats = Statistics()
    G, C, yy = np.zeros((n_features + 1, n_features + 1)), np.zeros((n_features + 1, n_outputs)), np.zeros(n_outputs)
    chunk_weights, chunk_means, chunk_m2 = [], [], []
    for X, Y, weights, _ in reader.chunks(range(reader.n_chunks), beside_parallel_kernels=True):
        if gram:
            G_k, C_k, yy_k = chunk_statistics.gram(X, Y, weights)
            G += G_k
            C += C_k
            yy += yy_k
        if moments:
            weight, mean, std = chunk_statistics.moments(X, weights)
            if weight > 0:  # a chunk of zero weight adds nothing (and its weighted mean is 0/0)
                chunk_weights.append(weight)
                chunk_means.append(mean)
                chunk_m2.append(std * std * weight)
    if gram:
        size = G.size + C.size
        total = team.sum(np.concatenate([G.ravel(), C.ravel(), yy]), "the Gram statistics")
        stats.G, stats.C, stats.yy = (total[:G.size].reshape(G.shape), total[G.size:size].reshape(C.shape),
                                      total[size:])
    if moments:
        weights = np.array(chunk_weights)
        means = np.array(chunk_means).reshape(-1, n_features)
        first = team.sum(np.append(weights @ means, weights.sum()), "the column sums")
        mean = first[:n_features] / first[n_features]
        m2 = np.array(chunk_m2).reshape(-1, n_features).sum(axis=0) + weights @ (means - mean) ** 2
        stats.mean, stats.std = mean, np.sqrt(team.sum(m2, "the centred sums of squares") / first[n_features])
    return stats


# --------------------------------------------------------------------------- the streaming run


class StreamingRun(GDRun):
    """Epochs of GD / mini-batch SGD over a rank's chunks, one ``Stepper`` step per (all-reduced) batch.

    The rules are the compiled engine's own (``Stepper``: the step and divergence check, the stopping
    rule, what a divergence leaves); only the loop over chunks is Python, since each epoch reads files.
    """

    def __init__(self, reader: ShardReader, team: Collective, spec: Spec, engine_state, lr: float,
                 seed: int, batch_counts: list[int] | None = None, local_batch_size: int | None = None, *,
                 sums=None) -> None:
        from linreg._engine import Stepper

        self.reader, self.team, self.spec, self.engine_state, self.seed = reader, team, spec, engine_state, seed
        self.stepper = Stepper(spec, engine_state, reader.data.dtype)
        self.lr_by_epoch = training.learning_rates(spec, lr, spec.epochs)
        self.loss_history = np.full(spec.epochs, np.nan)
        self.epoch_seconds: list[float] = []
        # The source of gradient sums: the CPU kernels, or the GPU's (``linreg.cuda_stream``, with its reader).
        self.sums = _Sums(reader.data.n_features, reader.data.n_outputs) if sums is None else sums
        # Mini-batch: every rank takes the same number of steps (the largest count), contributing nothing once
        # its shard is used up, so the all-reduces pair up.
        self.batch_counts, self.local_batch_size = batch_counts, local_batch_size
        self.diverged_value = math.nan

    @property
    def stop_code(self) -> int:
        return int(self.engine_state.counters[codes.K_STOP])

    def advance(self, n_epochs: int) -> int:
        counters, scalars = self.engine_state.counters, self.engine_state.scalars
        done = 0
        while done < n_epochs and self.n_done < self.spec.epochs and self.stop_code == codes.RUNNING:
            epoch = int(counters[codes.K_EPOCH])
            lr = float(self.lr_by_epoch[epoch] * scalars[codes.S_LR_FACTOR])
            started = time.perf_counter()
            value = self._full_batch_epoch(epoch, lr) if self.batch_counts is None else self._minibatch_epoch(epoch, lr)
            self.epoch_seconds.append(time.perf_counter() - started)
            if not np.isfinite(value):  # the step was refused: the engine's end of a diverged run
                self.stepper.diverge(self.loss_history, epoch, self.diverged_value)
                self.diverged = True
                break
            self.loss_history[epoch] = value
            counters[codes.K_EPOCH] += 1
            self.n_done += 1
            done += 1
            self.stepper.stopping_rule(value, lr)
        return done

    def _step(self, local: np.ndarray, lr: float, what: str) -> tuple[float, float]:
        """All-reduce the sums, then one step; returns (objective, weight) or (NaN, weight) on divergence."""
        sums = self.team.sum(local, what)
        value = self.stepper.step(sums, lr)
        if self.stepper.diverged:  # no step was taken; the diverging objective is kept for the history
            self.diverged_value = value
            return math.nan, float(sums[1])
        return value, float(sums[1])

    def _full_batch_epoch(self, epoch: int, lr: float) -> float:
        W, b = self.stepper.kernel_params()
        last_epoch = epoch + 1 >= self.spec.epochs
        # Read ahead: each chunk's next, and after the last this epoch's first again for the next epoch.
        local = self.sums.total(self.reader.chunks(range(self.reader.n_chunks), then=None if last_epoch else 0,
                                                   beside_parallel_kernels=True), W, b)
        value, weight = self._step(local, lr, f"the gradient sums of epoch {epoch}")
        # As the engine's epoch loss (the weighted mean of its one batch), so histories match to the bit.
        return value if not np.isfinite(value) else value * weight / weight

    def _minibatch_epoch(self, epoch: int, lr: float) -> float:
        batches = self._local_batches(epoch)
        epoch_loss = epoch_weight = 0.0
        for step in range(max(self.batch_counts)):
            W, b = self.stepper.kernel_params()
            batch = next(batches, None)
            if batch is None:  # this rank's shard is used up for the epoch: it adds nothing to the global batch
                local = self.sums.zeros()
            else:
                X, Y, weights, order, start, stop = batch
                local = self.sums.batch(X, Y, W, b, weights, order, start, stop)
            value, weight = self._step(local, lr, f"the gradient sums of epoch {epoch}, step {step}")
            if not np.isfinite(value):
                return value
            epoch_loss += value * weight
            epoch_weight += weight
        return epoch_loss / epoch_weight

    def _local_batches(self, epoch: int) -> Iterator[tuple]:
        """This rank's batches of ``epoch``: (X, Y, weights, order) of a chunk and the positions [start, stop)
        of the batch in its order (``_Sums.batch``)."""
        reader, shuffle, rank, seed = self.reader, self.spec.shuffle, self.team.rank, self.seed
        batch = self.local_batch_size

        def order_of(k: int, n_rows: int) -> np.ndarray | None:
            return row_order(seed, rank, epoch, k, n_rows, shuffle)

        chunks = chunk_order(seed, rank, epoch, reader.n_chunks, shuffle)
        # Read ahead: each chunk's next, and after the last the next epoch's first.
        then = None if epoch + 1 >= self.spec.epochs else int(chunk_order(seed, rank, epoch + 1, reader.n_chunks,
                                                                          shuffle)[0])
        for X, Y, weights, order in reader.chunks(chunks, order_of, then=then):
            for s in range(0, X.shape[0], batch):
                yield X, Y, weights, order, s, min(s + batch, X.shape[0])

    def parameters(self) -> tuple[np.ndarray, np.ndarray]:
        return self.engine_state.original_units()

    def history(self, n: int) -> np.ndarray:
        return self.loss_history[:n].copy()


class Streamed:
    """A rank's shard of streamed rows as a source for ``linreg.driver.fit``: statistics passes over its chunks
    and the streaming run, with ``team`` combining what the ranks compute."""

    streams = True

    def __init__(self, data: Dataset, reader: ShardReader, team: Collective, batch_counts, local_batch) -> None:
        self.data, self.reader, self.team = data, reader, team
        self.n_samples, self.n_features, self.n_outputs = data.n_samples, data.n_features, data.n_outputs
        self.dtype = np.dtype(data.dtype)
        self.weights = None  # streamed with the rows; checked before the fit (_check_weights)
        self.weighted = data.weights is not None
        self.batch_counts, self.local_batch = batch_counts, local_batch
        self.statistics_seconds = 0.0

    def agree(self, W0: np.ndarray, b0: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Every rank starts from rank 0's parameters and seed."""
        W0, b0 = (self.team.broadcast(np.asarray(a, np.float64), "the initial parameters") for a in (W0, b0))
        return W0, b0, int(self.team.broadcast(np.array([seed], np.int64), "the random seed")[0])

    def split(self, spec: Spec, seed: int):
        raise ValueError("early_stopping is not supported out of core")  # refused before (_unsupported)

    def statistics(self, rows, *, gram: bool, moments: bool, centred: bool = False) -> Statistics:
        # Chunks and ranks sum statistics about 0 (centred is a request, not a requirement).
        started = time.perf_counter()
        reader, chunk_statistics = self._statistics_on()
        stats = statistics_pass(reader, self.team, gram=gram, moments=moments, chunk_statistics=chunk_statistics)
        stats.n_samples, stats.weighted = self.n_samples, self.weighted  # every rank's rows
        self.statistics_seconds += time.perf_counter() - started
        return stats

    def _statistics_on(self) -> tuple:
        """Where the statistics pass reads the chunks and computes their statistics (the GPU's source: there)."""
        return self.reader, ChunkStatistics

    def start_gd(self, spec: Spec, state, lr: float, rows, val_rows, seed: int) -> GDRun:
        return StreamingRun(self.reader, self.team, spec, state, lr, seed, self.batch_counts, self.local_batch)


# --------------------------------------------------------------------------- fit


@dataclasses.dataclass
class Report:
    """What a streaming fit did, for logs: shards, chunking, pass and epoch times, collectives."""

    n_samples: int
    n_features: int
    n_outputs: int
    dtype: str
    world_size: int
    shards: list[tuple[int, int]]
    chunk_rows: int
    n_chunks: int
    statistics_seconds: float = 0.0
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    fit_seconds: float = 0.0


def _unsupported(estimator, spec: Spec) -> None:
    if estimator.backend not in ("cpu", "cuda"):
        raise ValueError(f"out-of-core and distributed training run on backend='cpu' or 'cuda' (our kernels); got "
                         f"backend={estimator.backend!r}")
    if spec.early_stopping:
        raise ValueError("early_stopping is not supported out of core: it holds a random validation subset of the "
                         "rows apart in every epoch; split the file into training and validation files instead, or "
                         "use tol on the training loss")


def _options_digest(estimator) -> int:
    """A hash of the training options, so that ranks can check that they train the same model."""
    params = {k: v for k, v in estimator.get_params().items() if k != "progress"}
    text = json.dumps(params, sort_keys=True, default=lambda v: np.asarray(v).tolist())
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little", signed=True)


def fit(estimator, X: Any, y: Any, sample_weight: Any = None, *, chunk_bytes: int | None = None):
    """Train ``estimator`` (a LinearRegressor) out of core on ``.npy`` paths / memmaps; returns the estimator.

    ``chunk_bytes`` bounds the chunk buffers (default ``CHUNK_BYTES``). The fitted
    attributes are those of ``LinearRegressor.fit``; ``loss_history_`` etc. mean the same.
    """
    train(estimator, X, y, sample_weight, chunk_bytes=chunk_bytes)
    return estimator


def train(estimator, X: Any, y: Any, sample_weight: Any = None, *, chunk_bytes: int | None = None,
          team: Collective | None = None, shards: Sequence[tuple[int, int]] | None = None) -> Report:
    """The streaming fit of ``fit`` and ``linreg.distributed.fit``: this rank streams its shard of the rows."""
    started = time.perf_counter()
    team = team or SingleProcess()
    from linreg import options

    spec = options.make_spec(estimator.get_params())
    _unsupported(estimator, spec)
    data = open_dataset(X, y, sample_weight)
    try:
        return _train(estimator, spec, data, team, shards, CHUNK_BYTES if chunk_bytes is None else chunk_bytes,
                      started)
    finally:
        data.close()


def _train(estimator, spec: Spec, data: Dataset, team: Collective, shards, chunk_bytes: int,
           started: float) -> Report:
    from linreg import driver

    n, n_features, n_outputs = data.n_samples, data.n_features, data.n_outputs
    check.check_positive(chunk_bytes, "chunk_bytes", integer=True)
    agreed = [n, n_features, n_outputs, data.one_output, data.dtype.itemsize, chunk_bytes, _options_digest(estimator)]
    team.check_same(np.array(agreed, np.int64), "the data's shape and dtype, chunk_bytes and the training options")
    shards = even_shards(n, team.world_size) if shards is None else check_shards(shards, n, team.world_size)
    team.check_same(np.array(shards, np.int64).ravel(), "the shards (row ranges) of the ranks")
    lo, hi = shards[team.rank]
    if data.weights is not None:
        _check_weights(data, lo, hi, team)
    batch_counts = local_batch = None
    if spec.batch_size is not None:
        local_batches = local_batch_sizes(spec.batch_size, team.world_size)
        local_batch = local_batches[team.rank]
        chunk_rows = chunk_rows_for(data, chunk_bytes, local_batch, spec.shuffle)
        # Batches never straddle chunks, so each rank's batch count follows from its shard, batch and chunk size,
        # which every rank can compute: all take max(batch_counts) steps an epoch.
        batch_counts = [_batch_count(hi_r - lo_r, chunk_rows_for(data, chunk_bytes, b_r, spec.shuffle), b_r)
                        for (lo_r, hi_r), b_r in zip(shards, local_batches, strict=True)]
    else:
        chunk_rows = chunk_rows_for(data, chunk_bytes)
    from linreg import spill

    spill.spill_dataset(data, lo, hi, planned_passes(spec))  # Parquet: later passes read what the first decoded
    reader = ShardReader(data, lo, hi, chunk_rows)
    report = Report(n, n_features, n_outputs, str(data.dtype), team.world_size, shards, chunk_rows, reader.n_chunks)
    if estimator.backend == "cuda":  # the same source with the chunks streamed to the GPU and summed there
        from linreg.cuda_stream import DeviceStreamed as source_type
    else:
        source_type = Streamed
    source = source_type(data, reader, team, batch_counts, local_batch)
    previous = estimator.fitted_state() if hasattr(estimator, "coef_") else None
    epochs_started = time.perf_counter()
    try:
        # One process: Ctrl-C leaves the last completed epoch. Several ranks must stop together: torchrun
        # delivers Ctrl-C to each of them, where it lands.
        outcome = driver.fit(spec, estimator.get_params(), source, one_output=data.one_output, previous=previous,
                             feature_names=data.feature_names, interruptible=team.world_size == 1,
                             progress_desc="fit (streaming)")
    finally:
        report.statistics_seconds = source.statistics_seconds
    run = outcome.run
    if run is not None:
        report.epoch_seconds = list(getattr(run, "epoch_seconds", []))
        if spec.solver == "gram" and run.n_done:
            seconds = time.perf_counter() - epochs_started - source.statistics_seconds
            report.epoch_seconds = [seconds / run.n_done] * run.n_done
        _check_parameters_agree(team, run.parameters())
    report.fit_seconds = time.perf_counter() - started
    estimator.load_fitted_state(outcome.state)
    outcome.raise_error()
    return report


def planned_passes(spec: Spec) -> int:
    """Passes over the rows ``driver.fit`` makes for ``spec`` (at most: ``tol`` may stop earlier): a statistics
    pass (standardize, lr="auto", solver "normal" or "gram"), then one per epoch of solver "gd"."""
    statistics = spec.standardize or spec.lr == "auto" or spec.solver in ("normal", "gram")
    return int(bool(statistics)) + (spec.epochs if spec.solver == "gd" else 0)


def _batch_count(n_rows: int, chunk_rows: int, batch: int) -> int:
    """Batches of ``batch`` rows in ``n_rows`` rows cut into chunks of ``chunk_rows`` (a multiple of batch)."""
    return (n_rows // chunk_rows) * (chunk_rows // batch) + math.ceil((n_rows % chunk_rows) / batch)


def _check_weights(data: Dataset, lo: int, hi: int, team: Collective) -> None:
    """Weights alone are small (8 bytes a row): check them before any work, as the in-memory fit does."""
    buffer = np.empty((min(1 << 16, max(hi - lo, 1)), 1))
    total = 0.0
    for start in range(lo, hi, buffer.shape[0]):
        weights = buffer[:min(start + buffer.shape[0], hi) - start]
        data.weights.read(start, start + weights.shape[0], weights)
        if not np.isfinite(weights).all() or (weights < 0).any():
            first = int(np.argmax(~np.isfinite(weights[:, 0]) | (weights[:, 0] < 0)))
            raise ValueError(f"sample_weight must be finite and non-negative, got {weights[first, 0]} at row "
                             f"{start + first}")
        total += float(weights.sum())
    check.check_weight_total(team.sum(np.array([total]), "the sample weight total")[0])


def _check_parameters_agree(team: Collective, parameters: tuple[np.ndarray, np.ndarray]) -> None:
    """Every rank applied the same steps to the same sums: their parameters must be bit-identical."""
    if team.world_size > 1:
        W, b = parameters
        bits = np.concatenate([np.asarray(W, np.float64).ravel(), np.asarray(b, np.float64)]).view(np.int64)
        team.check_same(bits, "the trained parameters (bit patterns; they must stay identical on every rank)")


# --------------------------------------------------------------------------- writing test and demo data


def write_npy(path: str | os.PathLike, shape: tuple[int, ...], dtype: Any, chunks: Iterator[np.ndarray]) -> None:
    """Write a C-ordered ``.npy`` file of ``shape`` from row chunks, never holding the whole array."""
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    written = 0
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype)
            chunk.tofile(handle)
            written += chunk.shape[0]
    if written != shape[0]:
        raise ValueError(f"write_npy: the chunks held {written} rows, the shape promised {shape[0]}")


def write_synthetic(X_path: str | os.PathLike, y_path: str | os.PathLike, n_samples: int, n_features: int, *,
                    n_outputs: int = 1, dtype: Any = np.float64, noise: float = 0.1, random_state: int = 0,
                    chunk_rows: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Write ``y = X @ W.T + b + noise`` to two ``.npy`` files chunk by chunk; returns the true (W, b).

    y is 1-D for one output. X is standard normal; a chunk's rows depend only on
    (random_state, chunk index), so files of any size are reproducible.
    """
    rng = np.random.default_rng(random_state)
    W = rng.uniform(-2, 2, (n_outputs, n_features))
    b = rng.uniform(-2, 2, n_outputs)
    n_chunks = math.ceil(n_samples / chunk_rows)

    def chunks(targets: bool) -> Iterator[np.ndarray]:
        for k in range(n_chunks):
            chunk_rng = np.random.default_rng([random_state, k])
            rows = min(chunk_rows, n_samples - k * chunk_rows)
            X = chunk_rng.standard_normal((rows, n_features))
            if not targets:
                yield X
                continue
            Y = X @ W.T + b + noise * chunk_rng.standard_normal((rows, n_outputs))
            yield Y[:, 0] if n_outputs == 1 else Y

    write_npy(X_path, (n_samples, n_features), dtype, chunks(False))
    write_npy(y_path, (n_samples,) if n_outputs == 1 else (n_samples, n_outputs), dtype, chunks(True))
    return W, b
