"""Decode once, then stream a spill file: later passes of a fit over a slow row source read what its first wrote.

A Parquet pass decodes every page (snappy, dictionaries, the column-major to
row-major transpose: ~80 ms of CPU per pass over 2,000,000 x 32 float32,
against ~25 ms for reading and summing a ``.npy`` pass), so a fit that passes
over the rows several times (full-batch GD, several mini-batch epochs, a
statistics pass before the epochs) pays it every time. As
``tf.data.Dataset.cache(filename)`` does, the first pass writes each chunk,
exactly as the trainer's chunk buffer holds it (the compute dtype, rows of
X, of Y and the weights), to a temporary file; a later read of the same rows
[start, stop) reads those bytes back with the ``.npy`` path's reader
(``outofcore.NpyFileRows``: plain reads at row offsets, no mapping), so the
results are bit-identical with and without it, and memory stays the chunk
budget: the file lives in the page cache (file-backed, reclaimable), not in
this process's anonymous memory.

When (``spill_dataset``, called by ``outofcore`` once the fit is planned):
sources that ask for it (``RowSource.spill``: a folder, or None for
``tempfile.gettempdir()``; ``linreg.parquet`` sets it from ``parquet.SPILL``
and ``Parquet(..., spill=...)``), only when the fit will pass over the rows
more than once (``outofcore.planned_passes``), and only if the folder's free
space holds the rank's share of rows plus ``DISK_RESERVE``: the whole space is
reserved up front (``posix_fallocate``), so the file never fills the disk in
the middle of a fit. Otherwise every pass decodes, after one warning that says
why. Each rank of a distributed fit spills its own shard.

The file is private and never has a name: ``tempfile.TemporaryFile`` (on Linux
``O_TMPFILE``, mode 0600) in the folder, so the kernel frees it when it is
closed (``close``: at the end of the fit, on errors and Ctrl-C too, since
``outofcore.train`` closes its data in a ``finally``) and also when the
process dies. A write that fails (an I/O error) abandons the spill of every
source of the fit with one warning and the fit goes on decoding.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from typing import Any

import numpy as np

from linreg import outofcore

#: Write each chunk to the spill from a background thread while the kernels run on it (else before they do).
WRITE_BEHIND = True
#: Free bytes the spill leaves on its folder's filesystem besides itself; with less, every pass decodes.
DISK_RESERVE = 1 << 30


class SpillWarning(UserWarning):
    """The spill file was not used (not enough disk space, or a write failed): every pass decodes the source."""


class _Group:
    """The spills of one fit's sources: abandoned together (one warning) if any write fails; their writes."""

    def __init__(self) -> None:
        self.members: list[SpilledRows] = []
        self.abandoned = False
        self._executor = None

    def writer(self):
        """The thread that writes the chunks behind the caller (``WRITE_BEHIND``), in order."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(1, thread_name_prefix="linreg-spill")
        return self._executor

    def abandon(self, why: str) -> None:
        if self.abandoned:
            return
        self.abandoned = True
        for member in self.members:
            member.drop_file()
        warnings.warn(f"the spill file was abandoned ({why}): the remaining passes decode the data again",
                      SpillWarning, stacklevel=2)

    def release(self, member: SpilledRows) -> None:
        """``member`` is closed; the last one ends the writer thread."""
        if all(m.file is None for m in self.members) and self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


class SpilledRows(outofcore.RowSource):
    """``inner``'s rows [lo, hi) with each chunk written to a spill file on its first read, read back after."""

    def __init__(self, inner: outofcore.RowSource, lo: int, hi: int, dtype: np.dtype, row_values: int,
                 file: Any, group: _Group, folder: str) -> None:
        self.inner, self.name, self.shape, self.dtype = inner, inner.name, inner.shape, inner.dtype
        self.lo, self.group, self.file = lo, group, file
        self.row_bytes = np.dtype(dtype).itemsize * row_values
        # The .npy path's reader on the spill file: the file holds rows [lo, hi) from byte 0, and the reader
        # reads global row r at offset + r * row_bytes.
        self.reader = outofcore.NpyFileRows(f"the spill file in {folder}", self.name, -lo * self.row_bytes,
                                            (hi,) + inner.shape[1:], np.dtype(dtype), file=file)
        self.written: set[tuple[int, int]] = set()  # the row ranges in the file (the reader's fixed chunks)
        self.inner_reads = 0  # reads that went to the source (tests count them)
        self._pending = None  # the write behind: ((start, stop), future)

    def scratch_bytes_per_row(self, dtype: np.dtype) -> int:
        return self.inner.scratch_bytes_per_row(dtype)  # the spill reads into the chunk buffer: nothing added

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        self._finish_write()  # before ``out`` (the chunk buffer the write reads) is filled again
        if self.file is not None and (start, stop) in self.written and out.dtype == self.reader.dtype:
            self.reader.read(start, stop, out)
            return
        self.inner_reads += 1
        self.inner.read(start, stop, out)
        if self.file is None or out.dtype != self.reader.dtype or not out.flags.c_contiguous:
            return
        if WRITE_BEHIND:  # while the kernels run on the chunk; the next read waits for it
            self._pending = ((start, stop), self.group.writer().submit(self._write, start, out))
            return
        try:
            self._write(start, out)
        except OSError as error:
            self.group.abandon(f"writing rows {start}..{stop - 1} of {self.name} failed: {error}")
            return
        self.written.add((start, stop))

    def _write(self, start: int, out: np.ndarray) -> None:
        # The chunk buffer as the trainer holds it: later reads give these bytes back, so the same bits.
        view = memoryview(out).cast("B")
        offset, done = (start - self.lo) * self.row_bytes, 0
        while done < view.nbytes:
            done += os.pwrite(self.file.fileno(), view[done:], offset + done)

    def _finish_write(self) -> None:
        """Wait for the write behind, if any; a failed one abandons the spill (every source's)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        (start, stop), future = pending
        try:
            future.result()
        except OSError as error:
            self.group.abandon(f"writing rows {start}..{stop - 1} of {self.name} failed: {error}")
            return
        self.written.add((start, stop))

    def prefetch(self, start: int, stop: int) -> None:
        in_file = (start, stop) in self.written or (self._pending is not None and self._pending[0] == (start, stop))
        if self.file is None or not in_file:
            self.inner.prefetch(start, stop)

    def drop_file(self) -> None:
        """Close (and so free) the spill file, once a write in flight is done; reads go to the source after."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending[1].result()
            except OSError:
                pass  # the file goes anyway (its rows were not marked written)
        if self.file is not None:
            self.file.close()
        self.file = None  # (``written`` stays, for the record: reads check the file first)

    def close(self) -> None:
        try:
            self._finish_write()
            self.inner.close()
        finally:
            self.drop_file()
            self.group.release(self)


def _spill_folder(source: outofcore.RowSource) -> str | None | bool:
    """Where ``source`` asks to be spilled: a folder, None (the default temporary folder) or False (never)."""
    return getattr(source, "spill", False)


def spill_dataset(data: outofcore.Dataset, lo: int, hi: int, passes: int) -> bool:
    """Wrap the sources of ``data`` that ask for a spill in ``SpilledRows`` for rows [lo, hi), if ``passes`` > 1
    and their folder has the room; returns True if it did. ``data.close()`` frees the files."""
    sources = {"X": data.X, "Y": data.Y, "weights": data.weights}
    # The chunk buffers' layout (outofcore.ShardReader): X and Y in the compute dtype, the weights float64.
    layout = {"X": (data.dtype, data.n_features), "Y": (data.dtype, data.n_outputs),
              "weights": (np.dtype(np.float64), 1)}
    wanted = {key: source for key, source in sources.items()
              if source is not None and _spill_folder(source) is not False}
    if passes < 2 or hi <= lo or not wanted:
        return False
    folders = {_spill_folder(source) for source in wanted.values()}
    folder = str(folders.pop() if len(folders) == 1 and None not in folders else tempfile.gettempdir())
    sizes = {key: (hi - lo) * np.dtype(layout[key][0]).itemsize * layout[key][1] for key in wanted}
    need = sum(sizes.values())
    try:
        free = shutil.disk_usage(folder).free
    except OSError as error:
        warnings.warn(f"no spill file in {folder!r} ({error}): every pass decodes the data", SpillWarning,
                      stacklevel=3)
        return False
    if need + DISK_RESERVE > free:
        warnings.warn(f"no spill file: {folder} has {free / 2**20:,.0f} MiB free, the decoded rows need "
                      f"{need / 2**20:,.0f} MiB plus {DISK_RESERVE / 2**20:,.0f} MiB kept free, so every pass "
                      "decodes the data; choose another folder with Parquet(..., spill=folder), or spill=False "
                      "to silence this", SpillWarning, stacklevel=3)
        return False
    group, files = _Group(), {}
    try:
        for key in wanted:
            files[key] = tempfile.TemporaryFile(dir=folder, prefix="linreg-spill-", buffering=0)
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(files[key].fileno(), 0, sizes[key])  # the room, reserved before any pass
    except OSError as error:
        for file in files.values():
            file.close()
        warnings.warn(f"no spill file in {folder!r} ({error}): every pass decodes the data", SpillWarning,
                      stacklevel=3)
        return False
    for key, source in wanted.items():
        spilled = SpilledRows(source, lo, hi, *layout[key], files[key], group, folder)
        group.members.append(spilled)
        setattr(data, key, spilled)
    return True
