"""Parquet datasets as streamed training data: one more kind of ``linreg.outofcore`` row source.

``LinearRegressor().fit("data.parquet", y="target")`` (a ``.parquet`` file, a
directory of them, or a ``pyarrow.dataset.Dataset``) trains out of core exactly
as from ``.npy`` files: ``open_dataset`` returns the ``outofcore.Dataset`` that
the streaming trainer (``outofcore.train``: every solver, mini-batches,
``linreg.distributed``'s shards) reads chunk by chunk. Nothing here trains.

Columns. ``y`` names the target column (a list of names: several outputs) and
``sample_weight`` the weight column; the features are every other column, or
the ones chosen with ``Parquet(source, features=[...])``. Every feature must be
numeric (integers, floats, booleans: the in-memory DataFrame rule,
``linreg._validation``): a string, date or decimal column is an error naming it.
dtypes follow the in-memory rules, computed by the same code from the schema
(``_validation._from_dataframe`` on the empty table: NumPy's stacking of the
columns): float64 anywhere makes the fit float64, so does int64 with float32;
integer-only features become float32, float32 (with small ints, booleans,
float16) stays float32.
``feature_names_in_`` is set from the feature columns.

Reading (bounded memory). The files' row groups, in file order (a directory's
``*.parquet`` files sorted by path), are one sequence of rows; each column
group (features, targets, weights) is its own ``RowSource`` with its own
reader, since Parquet stores columns apart and reading one never decodes the
others. Float columns without nulls in local files (the common case: PLAIN or
dictionary pages, uncompressed or snappy) are read by ``linreg.parquet_pages``,
the pages' values into a column-major buffer of one chunk's rows (in the
budget, as the decoded batch below), then into the chunk by
``kernels.cpu_columns.column_major_to_rows``; pages are found from their
headers, so a read at any row starts at its page. A chunk read while the
caller waits (full-batch passes, no read-ahead) is decoded by two threads (the
caller's and the background one) taking columns in turn, each with its own
read buffer of one chunk column (``DECODE_THREADS``, in the budget). A row group it does not read
is pyarrow's, from the request's start (the same rows, bit for bit). The next
chunk (``ShardReader.prefetch``) is read by a background thread into that
buffer once the current chunk has been copied out of it: no buffer is added;
one read is in flight at most; its errors are raised by the next ``read``, in
the caller; ``close`` waits for it and ends the thread. Otherwise a request for
rows ``[start, stop)`` (one chunk of the shard) is served from record batches of
at most one chunk's rows decoded from the row group(s) overlapping it
(``ParquetFile.iter_batches`` on that row group, with a buffered, not
pre-buffered, stream: the file's column chunks are never read whole); the batch
being consumed is kept, so the next chunk continues where this one stopped.
Reading a chunk after a jump backwards (a shuffled epoch's next chunk) decodes
its row group from the group's start up to the chunk, so row groups no larger
than a chunk make shuffled epochs read each row once.
The decoded batch is counted in the chunk budget (``scratch_bytes_per_row``);
beyond it, Parquet decodes a page at a time, so each column also holds about
one data page and its dictionary page (pyarrow writes them up to 1 MiB each)
and the stream buffer, whatever the file's size. The decoded columns are
copied into the row-major chunk by ``kernels.cpu_columns`` (NumPy for small
pieces). A filtered ``pyarrow.dataset.Dataset`` is refused: its filter would
not apply to row groups read directly.

Decoding once. A fit that passes over the rows more than once (``outofcore.planned_passes``: full-batch
GD, several mini-batch epochs, a statistics pass before them) reads the pages on its first pass only: each
decoded chunk is written to a private temporary file and the later passes read it back with the ``.npy``
path's reader (``linreg.spill``; ``SPILL`` and ``Parquet(..., spill=...)`` turn it off or choose the folder).

Nulls are an error naming the column and the global row (checked on every
read: a null count is free); NaN and infinity are named by the trainer, as for
``.npy`` files. A directory whose files do not all have the same schema is an
error naming the file and the columns that differ.

pyarrow is imported only when Parquet data is used: ``import linreg`` stays light.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from linreg import _validation as check
from linreg import outofcore

SUFFIXES = (".parquet", ".pq")
#: Bytes of the buffered stream through which column chunks are read (never the whole column chunk at once).
STREAM_BUFFER = 1 << 16
#: Rows of a piece from which the columns are copied into rows by the kernel (``kernels.cpu_columns``).
KERNEL_ROWS = 4096
#: Read float columns' pages with ``linreg.parquet_pages`` where it can (else pyarrow's record batches).
PAGE_READER = True
#: Read the next chunk in a background thread while the kernels run on this one (``ParquetColumns.prefetch``).
PREFETCH = True
#: Threads that decode a chunk's pages when the caller waits for it (columns split between them; 1 if one core).
DECODE_THREADS = 2 if (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) > 1 \
    else 1
#: Spill the decoded rows to a temporary file on a fit's first pass and read later passes from it (``linreg.spill``):
#: True (in ``tempfile.gettempdir()``) or False; ``Parquet(..., spill=...)`` chooses per dataset. Tests patch it.
SPILL = True
#: Page-list entries (80 bytes each) kept for the row groups of a file before only the current one's are kept.
MAX_KEPT_PAGES = 1 << 14


@dataclasses.dataclass(frozen=True)
class Parquet:
    """Parquet data with an explicit choice of feature columns: ``fit(Parquet("data/", features=["a", "b"]), y="t")``.

    ``source``: a ``.parquet`` file, a directory of them, or a ``pyarrow.dataset.Dataset``;
    ``features``: the feature columns in order (default: every column but the target and weight);
    ``spill``: where a fit that passes over the rows more than once keeps them decoded after its first pass
    (``linreg.spill``): True, the default temporary folder; a folder; False, decode every pass.
    """

    source: Any
    features: Sequence[str] | None = None
    spill: bool | str | os.PathLike = True


def _is_arrow_dataset(value: Any) -> bool:
    return type(value).__module__.startswith("pyarrow._dataset") and hasattr(value, "get_fragments")


def is_parquet(value: Any) -> bool:
    """A ``Parquet``, a ``pyarrow.dataset.Dataset``, a path ending in .parquet / .pq, or a directory (of such files:
    no other data is a directory): data for ``open_dataset``. Reads nothing."""
    if isinstance(value, Parquet) or _is_arrow_dataset(value):
        return True
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        return path.suffix.lower() in SUFFIXES or path.is_dir()
    return False


def _parquet_files(directory: Path) -> list[Path]:
    """The .parquet / .pq files under ``directory`` (recursively, hidden and ``_``-prefixed ones skipped), sorted."""
    found = []
    for root, folders, names in os.walk(directory):
        folders[:] = sorted(f for f in folders if not f.startswith((".", "_")))
        found += [Path(root) / n for n in names if Path(n).suffix.lower() in SUFFIXES and not n.startswith((".", "_"))]
    return sorted(found)


@dataclasses.dataclass
class _File:
    path: str
    filesystem: Any
    row_groups: list[int]  # the row groups of this file that belong to the data (a fragment may hold a subset)
    group_rows: list[int]


class ParquetFiles:
    """The row groups of a Parquet dataset's files, in order, with their global first rows; one schema."""

    def __init__(self, source: Any) -> None:
        import pyarrow.parquet as pq

        self.description = str(source) if not _is_arrow_dataset(source) else "the pyarrow Dataset"
        self.files: list[_File] = []
        schema = first_path = None
        for path, filesystem, groups in self._fragments(source):
            metadata = pq.read_metadata(path, filesystem=filesystem)
            file_schema = metadata.schema.to_arrow_schema()
            if schema is None:
                schema, first_path = file_schema, path
            elif not file_schema.equals(schema, check_metadata=False):
                raise ValueError(f"{self.description}: the files' schemas differ: {path} "
                                 f"{_schema_difference(file_schema, schema)} {first_path}; every file of a "
                                 "Parquet dataset must have the same columns with the same types")
            groups = list(range(metadata.num_row_groups)) if groups is None else groups
            self.files.append(_File(path, filesystem, groups, [metadata.row_group(g).num_rows for g in groups]))
        if schema is None:
            raise ValueError(f"{self.description}: no Parquet files (*.parquet, *.pq) found")
        self.schema = schema
        # One unit per (file, row group), in order; unit_starts[u] is its first global row.
        self.units = [(f, g, rows) for f, file in enumerate(self.files)
                      for g, rows in zip(file.row_groups, file.group_rows, strict=True)]
        self.unit_starts = np.concatenate([[0], np.cumsum([rows for *_, rows in self.units], dtype=np.int64)])
        self.n_rows = int(self.unit_starts[-1])

    def _fragments(self, source: Any):
        if _is_arrow_dataset(source):
            if (getattr(source, "_scan_options", None) or {}).get("filter") is not None:
                raise ValueError("a filtered pyarrow Dataset (Dataset.filter): rows stream by row group and the "
                                 "filter would not apply; write the filtered rows to Parquet files first")
            fragments = list(source.get_fragments())
            for fragment in fragments:
                if not hasattr(fragment, "row_groups"):
                    raise TypeError(f"a pyarrow Dataset of {type(source.format).__name__} files: only Parquet "
                                    "datasets stream (pyarrow.dataset.dataset(path, format='parquet'))")
                groups = [group.id for group in fragment.row_groups] if fragment.row_groups is not None else None
                yield fragment.path, fragment.filesystem, groups
            return
        path = Path(source)
        if path.is_dir():
            for file in _parquet_files(path):
                yield str(file), None, None
        elif path.exists():
            yield str(path), None, None
        else:
            raise FileNotFoundError(f"X: no such Parquet file or directory: {str(path)!r}")

    def open(self, f: int):
        import pyarrow.parquet as pq

        file = self.files[f]
        return pq.ParquetFile(file.path, filesystem=file.filesystem, buffer_size=STREAM_BUFFER, pre_buffer=False)


def _is_local(filesystem: Any) -> bool:
    """A file the page reader may open by path: no filesystem given, or pyarrow's local one."""
    return filesystem is None or type(filesystem).__name__ == "LocalFileSystem"


def _schema_difference(schema: Any, reference: Any) -> str:
    """How ``schema`` differs from ``reference``, in words (the first few differences)."""
    names, reference_names = schema.names, reference.names
    parts = [f"lacks column {name!r}" for name in reference_names if name not in names]
    parts += [f"has an extra column {name!r}" for name in names if name not in reference_names]
    parts += [f"has column {name!r} as {schema.field(name).type} where it is {reference.field(name).type}"
              for name in names if name in reference_names and schema.field(name).type != reference.field(name).type]
    if not parts:
        parts = [f"has the columns in another order ({', '.join(names)})"]
    return "; ".join(parts[:4]) + " compared with"


class ParquetColumns(outofcore.RowSource):
    """Some columns of a Parquet dataset as rows: decoded record batch by record batch, copied into the buffers."""

    spill: str | None | bool = False  # linreg.spill: a folder, None (the default one) or False (decode every pass)

    def __init__(self, files: ParquetFiles, columns: list[str], name: str, one_d: bool) -> None:
        self.files, self.columns, self.name = files, columns, name
        self.shape = (files.n_rows,) if one_d else (files.n_rows, len(columns))
        # The in-memory conversion of a pyarrow Table with these columns (as an empty table) gives the stored dtype.
        self.dtype = check._from_dataframe(files.schema.empty_table().select(columns), name).dtype
        # Bytes per row of a decoded batch of these columns (a boolean's bits become bytes when converted).
        self._decoded_row_bytes = sum(max(1, files.schema.field(c).type.bit_width // 8) for c in columns)
        self._widest_column_bytes = max(max(1, files.schema.field(c).type.bit_width // 8) for c in columns)
        self._file_index, self._file = -1, None
        self._unit, self._batches, self._batch, self._batch_start = -1, None, None, 0
        # The page reader (linreg.parquet_pages): local files only; row groups it refused go to pyarrow.
        self._page_units_possible = all(_is_local(file.filesystem) for file in files.files)
        self._pyarrow_units: set[int] = set()
        self._pages: dict[int, list] = {}
        self._kept_pages, self._current_unit = 0, -1
        self._column_buffer: np.ndarray | None = None
        self._decode_buffers: list = []
        self._fd = self._fd_file = self._metadata = None
        self._executor = self._pending = None  # the background fill (prefetch) and the one in flight

    def scratch_bytes_per_row(self, dtype: np.dtype) -> int:
        # The decoded record batch, or the page reader's column buffer (at most one chunk's rows) in its stored
        # types, whatever the compute dtype; and each decoding thread's read buffer (one column of the chunk).
        return self._decoded_row_bytes + DECODE_THREADS * self._widest_column_bytes

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            # The background fill (prefetch) of the rows asked for, or of a guess that missed: wait for it either
            # way (one fill at a time), and raise here, in the caller, whatever it raised.
            rows, future = pending
            filled = future.result()
            if rows == (start, stop) and filled:
                self._transpose(stop - start, out)
                return
        if self._fill_pages(start, stop, threads=DECODE_THREADS):
            self._transpose(stop - start, out)
            return
        self._read_batches(start, stop, out)

    def prefetch(self, start: int, stop: int) -> None:
        """Start reading rows [start, stop) (the next chunk) in a background thread: the page reader into the
        column buffer (free again once read() has copied it into the chunk), or pyarrow's decode of the record
        batch that holds ``start``. The next read() of these rows waits for it; one fill is ever in flight.
        Threads release the GIL in preadv, snappy and the decode kernels, as the gradient kernel does."""
        if not PREFETCH or self._pending is not None:
            return
        self._pending = ((start, stop), self._background().submit(self._fill, start, stop))

    def _fill(self, start: int, stop: int) -> bool:
        if self._fill_pages(start, stop):
            return True
        self._batch_covering(start, stop - start)  # pyarrow's path: decode the batch that read() starts from
        return False

    def _fill_pages(self, start: int, stop: int, threads: int = 1) -> bool:
        """Rows [start, stop) by ``linreg.parquet_pages`` into the column buffer (column-major); False, having
        filled nothing that matters, where a row group is not one it reads (it is then pyarrow's for good).
        ``threads`` 2: the columns are split between this thread and the background one (each with its own
        ``DecodeBuffers``): a fill on the caller's thread, while no kernel runs, uses both cores."""
        from linreg import parquet_pages

        files, n = self.files, stop - start
        first_unit = int(np.searchsorted(files.unit_starts, start, side="right")) - 1
        last_unit = int(np.searchsorted(files.unit_starts, stop - 1, side="right")) - 1
        units = range(first_unit, last_unit + 1)
        if not PAGE_READER or not self._page_units_possible or any(u in self._pyarrow_units for u in units):
            return False
        try:
            for unit in units:
                pages = self._unit_pages(unit)
                unit_start = int(files.unit_starts[unit])
                lo, hi = max(start, unit_start), min(stop, int(files.unit_starts[unit + 1]))
                if self._column_buffer is None or self._column_buffer.shape[1] < n \
                        or self._column_buffer.dtype != pages[0].dtype:
                    self._column_buffer = None
                    self._column_buffer = _column_buffer(len(self.columns), n, pages[0].dtype)
                    # Each decoding thread's read buffer: one column of the chunk per run (counted in the budget).
                    self._decode_buffers = [parquet_pages.DecodeBuffers(n * pages[0].dtype.itemsize)
                                            for _ in range(DECODE_THREADS)]
                columns = self._column_buffer[:, lo - start:hi - start]

                # The columns are taken one at a time from a shared counter (next() on it is atomic under the
                # GIL) by this thread and, with threads 2, the background one: where one thread loses its core
                # to another process, the other decodes more columns (a fixed half each measured slower under load).
                next_column = itertools.count()

                def fill(buffers, pages=pages, columns=columns, first=lo - unit_start, next_column=next_column):
                    for j in iter(next_column.__next__, None):
                        if j >= len(pages):
                            return
                        pages[j].read(first, columns[j], buffers)

                helper = self._background().submit(fill, self._decode_buffers[1]) \
                    if threads > 1 and len(self._decode_buffers) > 1 and len(self.columns) > 1 else None
                try:
                    fill(self._decode_buffers[0])
                finally:
                    if helper is not None:
                        helper.result()
        except parquet_pages.Unsupported:
            self._pyarrow_units.update(units)
            self._close_fd()
            self._column_buffer = None
            return False
        return True

    def _background(self):
        """The background thread (prefetch fills, and the second half of a two-thread fill)."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"linreg-parquet-{self.name}")
        return self._executor

    def _transpose(self, n: int, out: np.ndarray) -> None:
        from linreg.kernels import cpu_columns

        rows = out.reshape(n, len(self.columns))
        if len(self.columns) == 1:
            np.copyto(rows[:, 0], self._column_buffer[0, :n], casting="unsafe")
        else:
            cpu_columns.column_major_to_rows(self._column_buffer[:, :n], rows)

    def _unit_pages(self, unit: int) -> list:
        """The page lists of this source's columns in row group ``unit``: kept for the file's row groups as long
        as they hold under ``MAX_KEPT_PAGES`` pages (80 bytes each), else for the last row group only."""
        from linreg import parquet_pages

        if unit != self._current_unit:  # only the row group being read keeps its dictionary pages
            for column_pages in self._pages.get(self._current_unit, []):
                column_pages.release()
            self._current_unit = unit
        pages = self._pages.get(unit)
        if pages is not None:
            return pages
        f, group, _ = self.files.units[unit]
        fd = self._fd_of(f)
        metadata = self._metadata_of(f)
        row_group = metadata.row_group(group)
        leaves = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
        pages = []
        for column in self.columns:
            index = leaves.get(column)
            if index is None:
                raise parquet_pages.Unsupported(f"column {column!r} is not a top-level leaf")
            column_metadata = row_group.column(index)
            parquet_pages.ColumnChunkPages.plan(column_metadata, metadata.schema.column(index))
            pages.append(parquet_pages.ColumnChunkPages(fd, column_metadata, metadata.schema.column(index)))
        if len({p.dtype for p in pages}) != 1:
            raise parquet_pages.Unsupported("columns of several physical types")
        n_pages = sum(p.pages.shape[0] for p in pages)
        if self._kept_pages + n_pages > MAX_KEPT_PAGES:
            self._pages, self._kept_pages = {}, 0
        self._pages[unit] = pages
        self._kept_pages += n_pages
        return pages

    def _fd_of(self, f: int) -> int:
        if self._fd_file != f:
            self._close_fd()
            self._fd, self._fd_file = os.open(self.files.files[f].path, os.O_RDONLY), f
        return self._fd

    def _metadata_of(self, f: int):
        if self._metadata is None:
            import pyarrow.parquet as pq

            self._metadata = pq.read_metadata(self.files.files[f].path)
        return self._metadata

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._fd_file = self._metadata = None
        self._pages, self._kept_pages, self._current_unit = {}, 0, -1

    def _read_batches(self, start: int, stop: int, out: np.ndarray) -> None:
        """Rows [start, stop) from pyarrow's record batches, copied into rows."""
        row = start
        while row < stop:
            batch = self._batch_covering(row, stop - start)
            first = row - self._batch_start
            n = min(stop, self._batch_start + batch.num_rows) - row
            by_dtype: dict[np.dtype, tuple[list, list]] = {}
            for j, column in enumerate(self.columns):
                values = batch.column(column).slice(first, n)
                if values.null_count:
                    position = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
                    raise ValueError(f"{self.name} column {column!r} has a null (missing value) at row {row + position}"
                                     f"; fill or drop missing values before training")
                array = values.to_numpy(zero_copy_only=False)  # zero-copy but for booleans (bits to bytes)
                arrays, targets = by_dtype.setdefault(array.dtype, ([], []))
                arrays.append(array)
                targets.append(j)
            rows = out[row - start:row - start + n]
            for arrays, targets in by_dtype.values():
                _columns_to_rows(arrays, targets, rows)
            row += n

    def _batch_covering(self, row: int, batch_rows: int):
        """The decoded record batch holding global ``row``: the current one, a later one of the same row group, or
        (after a jump backwards or to another group) a fresh pass over its row group from the group's start."""
        batch = self._batch
        if batch is not None and self._batch_start <= row < self._batch_start + batch.num_rows:
            return batch
        unit = int(np.searchsorted(self.files.unit_starts, row, side="right")) - 1
        if unit != self._unit or batch is None or row < self._batch_start:
            self._start_unit(unit, batch_rows)
        while self._batch is None or row >= self._batch_start + self._batch.num_rows:
            if self._batch is not None:
                self._batch_start += self._batch.num_rows
            self._batch = None  # released before the next one is decoded: one batch alive at a time
            self._batch = next(self._batches, None)
            if self._batch is None:
                path = self.files.files[self.files.units[unit][0]].path
                raise ValueError(f"{self.name}: {path} ended before row {row} (was it changed during the fit?)")
        return self._batch

    def _start_unit(self, unit: int, batch_rows: int) -> None:
        f, group, _ = self.files.units[unit]
        if f != self._file_index:
            self._close_file()
            self._file, self._file_index = self.files.open(f), f
        self._batch = None
        self._unit, self._batch_start = unit, int(self.files.unit_starts[unit])
        self._batches = iter(self._file.iter_batches(batch_size=max(1, batch_rows), row_groups=[group],
                                                     columns=self.columns, use_threads=True))

    def close(self) -> None:
        """Wait for a fill in flight (one chunk at most), end the thread, release the files and buffers."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = self._pending = None
        self._close_fd()
        self._column_buffer = None
        self._decode_buffers = []
        self._close_file()

    def _close_file(self) -> None:
        """Release pyarrow's file and record batches."""
        self._batches = self._batch = None
        self._unit = -1
        if self._file is not None:
            self._file.close()
        self._file, self._file_index = None, -1


def _column_buffer(n_columns: int, n_rows: int, dtype: np.dtype) -> np.ndarray:
    """An (n_columns, n_rows) buffer whose columns start 64 bytes apart modulo 4 KiB: with a row stride that is a
    multiple of 4 KiB (or close to one) the columns' streams alias in the L1 cache, and the transpose measured
    5x slower (10.2 ms against 1.95 ms for 226,719 x 32 float32)."""
    stride = (-(-n_rows * dtype.itemsize // 4096) * 4096 + 64) // dtype.itemsize
    return np.empty((n_columns, stride), dtype)[:, :n_rows]


def _columns_to_rows(arrays: list[np.ndarray], targets: list[int], out: np.ndarray) -> None:
    """``out[:, targets[c]] = arrays[c]``: the blocked parallel kernel for large pieces (one dtype of column per
    call); NumPy's column copies below ``KERNEL_ROWS`` rows, where building the kernel's typed list (~10 us per
    column) and starting its parallel region cost more than the strided stores."""
    if out.shape[0] < KERNEL_ROWS:
        for array, target in zip(arrays, targets, strict=True):
            np.copyto(out[:, target], array, casting="unsafe")
        return
    from numba.typed import List

    from linreg.kernels import cpu_columns

    columns = List()
    for array in arrays:
        # Numba has no float16 arithmetic type: widen (exactly) first; a half-float column is a rare guest.
        columns.append(array.astype(np.float32) if array.dtype == np.float16 else array)
    cpu_columns.columns_to_rows(columns, np.asarray(targets, np.int64), out)


def _spill_folder(spill: Any) -> str | None | bool:
    """``Parquet(spill=...)`` checked: None (the default temporary folder), a folder that exists, or False."""
    if spill is True or spill is False:
        return None if spill else False
    if not isinstance(spill, str | os.PathLike):
        raise TypeError(f"Parquet(spill=...) must be True, False or a folder (str or os.PathLike), got "
                        f"{type(spill).__name__} {spill!r}")
    if not os.path.isdir(spill):
        raise ValueError(f"Parquet(spill=...): no such folder {os.fspath(spill)!r} for the spill file; give an "
                         "existing folder, True (the temporary folder) or False (decode every pass)")
    return os.fspath(spill)


def _column_names(value: Any, name: str) -> list[str]:
    """``y`` / ``sample_weight`` as a list of column names."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return list(value)
    what = "a column name, or a list of names" if name != "sample_weight" else "a column name"
    raise TypeError(f"{name} must name column(s) of the Parquet data ({what}), got {type(value).__name__} {value!r}")


def open_dataset(X: Any, y: Any, sample_weight: Any = None) -> outofcore.Dataset:
    """The ``outofcore.Dataset`` of Parquet data ``X`` (see ``is_parquet``) with target column(s) ``y`` and the
    optional weight column ``sample_weight``; checks the columns and dtypes, reads only the files' footers."""
    features, spill = None, True
    if isinstance(X, Parquet):
        X, features, spill = X.source, X.features, X.spill
    if y is None:
        raise ValueError("LinearRegressor requires y: with Parquet data, y names the target column (y='target')")
    targets = _column_names(y, "y")
    weight = _column_names(sample_weight, "sample_weight") if sample_weight is not None else []
    if len(weight) > 1:
        raise ValueError(f"sample_weight must name one column, got {weight}")
    files = ParquetFiles(X)
    names = files.schema.names
    for column, role in [(c, "y") for c in targets] + [(c, "sample_weight") for c in weight]:
        if column not in names:
            raise ValueError(f"{role}: no column {column!r} in {files.description}; its columns are {', '.join(names)}")
    if len(set(targets + weight)) != len(targets) + len(weight):
        raise ValueError(f"the target column(s) {targets} and the weight column {weight} must be distinct")
    if features is None:
        features = [c for c in names if c not in targets and c not in weight]
    else:
        features = list(_column_names(list(features), "features")) if len(features) else []
        missing = [c for c in features if c not in names]
        if missing:
            raise ValueError(f"features: no column(s) {', '.join(map(repr, missing))} in {files.description}; its "
                             f"columns are {', '.join(names)}")
        overlap = [c for c in features if c in targets or c in weight]
        if overlap:
            raise ValueError(f"features {overlap} are also the target or weight column")
    if not features:
        raise ValueError(f"{files.description} has no feature columns besides the target and weight "
                         f"({', '.join(names)})")
    X_rows = ParquetColumns(files, features, "X", one_d=False)
    Y_rows = ParquetColumns(files, targets, "y", one_d=isinstance(y, str))
    weights = ParquetColumns(files, weight, "sample_weight", one_d=True) if weight else None
    folder = _spill_folder(spill)
    for source in (X_rows, Y_rows, weights):
        if source is not None:  # linreg.spill's choice: a folder, None (the default one) or False (never)
            source.spill = folder if SPILL else False
    if files.n_rows == 0:
        raise ValueError(f"{files.description} is empty: 0 rows (X would have shape (0, {len(features)})) while a "
                         "minimum of 1 is required")
    dataset = outofcore.Dataset(
        X_rows, Y_rows, weights,
        np.promote_types(outofcore._compute_dtype(X_rows.dtype, "X"), outofcore._compute_dtype(Y_rows.dtype, "y")),
        isinstance(y, str), feature_names=np.asarray(features, dtype=object))
    if weights is not None:
        outofcore._compute_dtype(weights.dtype, "sample_weight")
    return dataset

