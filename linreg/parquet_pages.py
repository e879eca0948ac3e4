"""A fast path for the common simple Parquet column: float32/float64, no nulls, PLAIN or dictionary pages,
uncompressed or snappy. It reads the pages itself, straight into a column-major buffer; anything else is pyarrow's.

Why (measured, ``benchmarks/README.md``, W8): pyarrow's decode of the 2,000,000 x 32
float32 benchmark file into Arrow columns takes ~75 ms per pass, uncompressed and
PLAIN or not, against ~15 ms for reading the same column-chunk bytes with ``pread``:
every record batch is a fresh allocation (page faults) filled by a copy. Here the
values of an uncompressed PLAIN page are read by ``os.preadv`` directly into their
place in a reused buffer ``columns`` of shape ``(n_columns, rows)`` (one copy, as the
``.npy`` path's ``readinto``). Other pages (snappy, dictionary-encoded) are read a run
at a time (one ``pread`` of up to one chunk column's bytes into ``DecodeBuffers.raw``)
and decoded by one ``kernels.cpu_columns.decode_pages`` call per run: our own snappy
decompressor (``snappy_decompress``: a page of random floats is one literal, a memcpy;
a whole PLAIN page goes straight into ``columns``) and the dictionary indices'
RLE / bit-packed decode and gather (``dictionary_decode``), with no Python per page.
``kernels.cpu_columns.column_major_to_rows`` then writes the row-major chunk.

What this reads itself (``ColumnChunkPages.plan`` checks it from the footer, pages
are checked as they are read): physical type FLOAT or DOUBLE with no logical type,
not repeated, codec UNCOMPRESSED or SNAPPY, data pages v1 or v2 with PLAIN,
PLAIN_DICTIONARY or RLE_DICTIONARY values, and no nulls (the footer's null count 0,
and each page's definition levels one RLE run of 1s, or a v2 header's num_nulls 0).
Anything else raises ``Unsupported`` before or while reading, and the caller
(``linreg.parquet.ParquetColumns``) reads the request with pyarrow instead, from the
start: its result never depends on which path ran (``tests/scale/test_parquet.py``
compares both on files of every kind this path takes, and some it refuses).

Page headers are Thrift compact structs (parquet-format's ``PageHeader``), parsed
by ``kernels.cpu_columns.page_header``. Each column chunk's page list is built once, when
first read (a few hundred bytes per page), and kept while its row group is being read.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

#: Physical types read here, and the NumPy dtype of their PLAIN values.
DTYPES = {"FLOAT": np.dtype("<f4"), "DOUBLE": np.dtype("<f8")}
CODECS = ("UNCOMPRESSED", "SNAPPY")
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3
_PLAIN, _PLAIN_DICTIONARY, _RLE, _RLE_DICTIONARY = 0, 2, 3, 8
#: Bytes read for a page header at first (grown when a header, with its statistics, is longer); the start of the
#: body read with it holds a v1 page's definition levels.
_HEADER_GUESS = 256
#: iovecs per preadv (Linux's IOV_MAX is 1024).
_MAX_IOVECS = 1000


class Unsupported(Exception):
    """The column chunk or page is not one this path reads: read it with pyarrow."""


#: ``kernels.cpu_columns.decode_pages``' statuses, in words.
_DECODE_PROBLEMS = {1: "a malformed snappy block", 2: "definition levels with nulls, or not one run",
                    3: "a truncated page", 4: "dictionary indices out of range or truncated",
                    5: "an encoding not read here"}


class DecodeBuffers:
    """One decoding thread's reused buffers: ``raw``, the file bytes of a run of pages (at most ``raw_cap`` bytes a
    run, or one page where a page is larger), and ``scratch``, the page being decompressed. A reader counts them
    in its chunk budget (``linreg.parquet.ParquetColumns.scratch_bytes_per_row``)."""

    def __init__(self, raw_cap: int) -> None:
        self.raw_cap = raw_cap
        self._raw = np.empty(0, np.uint8)
        self._scratch = np.empty(0, np.uint8)

    def raw(self, n_bytes: int) -> np.ndarray:
        if self._raw.shape[0] < n_bytes:
            self._raw = np.empty(0, np.uint8)  # released before the larger one is allocated
            self._raw = np.empty(n_bytes, np.uint8)
        return self._raw[:n_bytes]

    def scratch(self, n_bytes: int) -> np.ndarray:
        if self._scratch.shape[0] < n_bytes:
            self._scratch = np.empty(0, np.uint8)
            self._scratch = np.empty(n_bytes, np.uint8)
        return self._scratch


# --------------------------------------------------------------------------- pages of a column chunk

# Columns of ColumnChunkPages.pages, one row per page.
(P_KIND, P_BODY, P_COMPRESSED_SIZE, P_UNCOMPRESSED_SIZE, P_NUM_VALUES, P_ENCODING, P_FIRST_ROW, P_LEVELS_BYTES,
 P_IS_COMPRESSED, P_VALUES_AT) = range(10)


class ColumnChunkPages:
    """The pages of one column chunk (one column of one row group), read and decoded on request.

    ``pages`` (n_pages, 10) int64, one row per page: kind, body offset in the file,
    compressed and uncompressed sizes, num_values, encoding, first row (data pages),
    v2 level bytes, is_compressed, and for an uncompressed v1 page the offset of its
    values in the body (after the definition levels), checked when the page list is built.
    """

    def __init__(self, fd: int, metadata: Any, column_schema: Any) -> None:
        self.fd = fd
        self.dtype = DTYPES[metadata.physical_type]
        self.codec = metadata.compression
        self.optional = column_schema.max_definition_level > 0
        self.pages = self._scan(metadata)
        data = self.pages[:, P_KIND] != _DICTIONARY_PAGE
        self.data_pages = self.pages[data]
        self.dictionary_pages = self.pages[~data]
        self._dictionary: np.ndarray | None = None
        self._no_dictionary = np.empty(0, self.dtype)
        self._all_decoded = self.codec != "UNCOMPRESSED" and bool(self.data_pages[:, P_IS_COMPRESSED].all())

    @staticmethod
    def plan(metadata: Any, column_schema: Any) -> None:
        """Raise ``Unsupported`` unless the footer says this column chunk is one this path reads."""
        if metadata.physical_type not in DTYPES or column_schema.logical_type.type != "NONE":
            raise Unsupported(f"physical type {metadata.physical_type}, logical type {column_schema.logical_type}")
        if column_schema.max_repetition_level > 0:
            raise Unsupported("a repeated column")
        if metadata.compression not in CODECS:
            raise Unsupported(f"codec {metadata.compression}")
        if column_schema.max_definition_level > 0:
            statistics = metadata.statistics
            if statistics is None or not statistics.has_null_count or statistics.null_count != 0:
                raise Unsupported("the column chunk may hold nulls")
        if not set(metadata.encodings) <= {"PLAIN", "PLAIN_DICTIONARY", "RLE", "RLE_DICTIONARY", "BIT_PACKED"}:
            raise Unsupported(f"encodings {metadata.encodings}")

    def _scan(self, metadata: Any) -> np.ndarray:
        from linreg.kernels import cpu_columns as k

        start = metadata.dictionary_page_offset
        if start is None or start <= 0 or start > metadata.data_page_offset:
            start = metadata.data_page_offset
        stop = start + metadata.total_compressed_size
        rows_list, offset, rows = [], start, 0
        fields = np.empty(k.H_SIZE, np.int64)
        while offset < stop:
            size = _HEADER_GUESS
            while True:
                data = np.frombuffer(os.pread(self.fd, min(size, stop - offset), offset), np.uint8)
                status = k.page_header(data, fields)
                if status != 1:
                    break
                if data.shape[0] < size:
                    raise Unsupported("a page header runs past the column chunk")
                size *= 4
            if status:
                raise Unsupported("a page header this reader does not parse")
            kind, length = int(fields[k.H_TYPE]), int(fields[k.H_LENGTH])
            page = np.array([kind, offset + length, fields[k.H_COMPRESSED], fields[k.H_UNCOMPRESSED],
                             fields[k.H_NUM_VALUES], fields[k.H_ENCODING], rows, 0, 1, -1], np.int64)
            if min(page[P_COMPRESSED_SIZE], page[P_UNCOMPRESSED_SIZE], page[P_NUM_VALUES]) < 0 \
                    or page[P_BODY] + page[P_COMPRESSED_SIZE] > stop \
                    or page[P_UNCOMPRESSED_SIZE] > metadata.total_uncompressed_size:
                raise Unsupported("a page header without its sizes or value count, or sizes beyond its column chunk")
            if kind == _DATA_PAGE:
                if self.optional and fields[k.H_DEFINITION_ENCODING] != _RLE:
                    raise Unsupported(f"definition levels encoded as {fields[k.H_DEFINITION_ENCODING]}")
                if not self._compressed(page):
                    body = data[length:] if data.shape[0] >= length + 16 else np.frombuffer(
                        os.pread(self.fd, 16, offset + length), np.uint8)
                    page[P_VALUES_AT] = self._definition_levels(page, body)
            elif kind == _DATA_PAGE_V2:
                if fields[k.H_NUM_NULLS] != 0:
                    raise Unsupported("a page holds nulls")
                page[P_LEVELS_BYTES] = fields[k.H_DEFINITION_BYTES] + fields[k.H_REPETITION_BYTES]
                page[P_IS_COMPRESSED] = fields[k.H_IS_COMPRESSED] != 0  # absent (-1): true, the default
                page[P_VALUES_AT] = page[P_LEVELS_BYTES]
            elif kind == _DICTIONARY_PAGE:
                if page[P_ENCODING] not in (_PLAIN, _PLAIN_DICTIONARY):
                    raise Unsupported(f"dictionary page encoding {page[P_ENCODING]}")
            else:
                raise Unsupported(f"page type {kind}")
            if kind != _DICTIONARY_PAGE:
                if page[P_ENCODING] not in (_PLAIN, _PLAIN_DICTIONARY, _RLE_DICTIONARY):
                    raise Unsupported(f"data page encoding {page[P_ENCODING]}")
                rows += int(page[P_NUM_VALUES])
            if kind == _DICTIONARY_PAGE or page[P_NUM_VALUES] > 0:  # a data page of no values holds no row
                rows_list.append(page)
            offset = int(page[P_BODY] + page[P_COMPRESSED_SIZE])
        if rows != metadata.num_values:
            raise Unsupported(f"the pages hold {rows} values, the footer says {metadata.num_values}")
        return np.array(rows_list, np.int64).reshape(-1, 10)

    def read(self, first: int, out: np.ndarray, buffers: DecodeBuffers) -> None:
        """Values ``[first, first + len(out))`` of the column chunk into ``out`` (1-D, contiguous, self.dtype).

        A run of uncompressed PLAIN pages is one ``preadv`` of the file's bytes from the first value needed to the
        last: each page's values land in ``out``, the headers and levels between them in a scrap buffer. A run of
        other pages (snappy, dictionary-encoded) is one ``pread`` of their bytes into ``buffers.raw`` (at most
        ``buffers.raw_cap`` bytes a run, or one page), decoded by one ``kernels.cpu_columns.decode_pages`` call."""
        done, n, itemsize = 0, out.shape[0], self.dtype.itemsize
        index = int(np.searchsorted(self.data_pages[:, P_FIRST_ROW], first, side="right")) - 1
        if self._all_decoded:  # every page goes to decode_pages (snappy): the runs found without a loop per page
            last = int(np.searchsorted(self.data_pages[:, P_FIRST_ROW], first + n - 1, side="right")) - 1
            page_ends = self.data_pages[:, P_BODY] + self.data_pages[:, P_COMPRESSED_SIZE]
            while index <= last:
                # the pages from `index` whose bytes fit in one read of raw_cap (at least one page)
                stop = int(np.searchsorted(page_ends, self.data_pages[index, P_BODY] + buffers.raw_cap,
                                           side="right"))
                stop = min(max(stop, index + 1), last + 1)
                skip = first + done - int(self.data_pages[index, P_FIRST_ROW])
                self._decode_run([index, stop - 1, done, skip], out, buffers)
                done += int(self.data_pages[index:stop, P_NUM_VALUES].sum()) - skip
                index = stop
            return
        run: list[memoryview] = []  # the iovecs of the current run of plain pages
        run_start = run_end = -1  # file offsets of that run
        decoded = None  # the current run of decoded pages: [first page index, last, out position, skip]
        scrap = bytearray(_HEADER_GUESS)
        out_bytes = memoryview(out).cast("B")
        while done < n:
            page = self.data_pages[index]
            skip = first + done - int(page[P_FIRST_ROW])
            count = min(n - done, int(page[P_NUM_VALUES]) - skip)
            if page[P_ENCODING] == _PLAIN and not self._compressed(page):
                if decoded is not None:
                    self._decode_run(decoded, out, buffers)
                    decoded = None
                at = int(page[P_BODY] + page[P_VALUES_AT]) + skip * itemsize
                gap = at - run_end
                if run and (gap < 0 or gap > len(scrap) or len(run) > _MAX_IOVECS - 2):
                    _preadv_all(self.fd, run, run_start)
                    run = []
                if not run:
                    run_start = at
                elif gap:
                    run.append(memoryview(scrap)[:gap])
                run.append(out_bytes[done * itemsize:(done + count) * itemsize])
                run_end = at + count * itemsize
            else:
                if run:
                    _preadv_all(self.fd, run, run_start)
                    run = []
                if decoded is not None and int(page[P_BODY] + page[P_COMPRESSED_SIZE]) \
                        - int(self.data_pages[decoded[0], P_BODY]) > buffers.raw_cap:
                    self._decode_run(decoded, out, buffers)
                    decoded = None
                if decoded is None:
                    decoded = [index, index, done, skip]
                decoded[1] = index
            done += count
            index += 1
        if run:
            _preadv_all(self.fd, run, run_start)
        if decoded is not None:
            self._decode_run(decoded, out, buffers)

    def _decode_run(self, decoded: list[int], out: np.ndarray, buffers: DecodeBuffers) -> None:
        """Pages ``decoded[0]..decoded[1]`` (from value ``decoded[3]`` of the first) into ``out[decoded[2]:]``."""
        from linreg.kernels import cpu_columns

        first_page, last_page, at, skip = decoded
        pages = self.data_pages[first_page:last_page + 1]
        lo = int(pages[0, P_BODY])
        hi = int(pages[-1, P_BODY] + pages[-1, P_COMPRESSED_SIZE])
        # The dictionary first: its page passes through buffers.raw too.
        dictionary = self._dictionary_values(buffers) if (pages[:, P_ENCODING] != _PLAIN).any() \
            else self._no_dictionary
        raw = buffers.raw(hi - lo)
        _pread_into(self.fd, raw, lo)
        compressed = self.codec != "UNCOMPRESSED"
        scratch = buffers.scratch(int(pages[:, P_UNCOMPRESSED_SIZE].max()) if compressed else 0)
        n = min(out.shape[0] - at, int(pages[:, P_NUM_VALUES].sum()) - skip)
        target = out[at:at + n]
        status = cpu_columns.decode_pages(raw, lo, pages, skip, compressed, self.optional, dictionary, scratch,
                                          target, target.view(np.uint8))
        if status:
            raise Unsupported(f"pages not decoded here ({_DECODE_PROBLEMS.get(status, status)})")

    def _compressed(self, page: np.ndarray) -> bool:
        return self.codec != "UNCOMPRESSED" and bool(page[P_IS_COMPRESSED])

    def _body(self, page: np.ndarray) -> np.ndarray:
        """The page's body, decompressed (v2: its level bytes stay as stored), as uint8."""
        from linreg.kernels import cpu_columns

        raw = np.empty(int(page[P_COMPRESSED_SIZE]), np.uint8)
        _pread_into(self.fd, raw, int(page[P_BODY]))
        if not self._compressed(page):
            return raw
        levels, size = int(page[P_LEVELS_BYTES]), int(page[P_UNCOMPRESSED_SIZE])
        if not 0 <= levels <= min(size, raw.shape[0]):
            raise Unsupported("a page whose level bytes exceed its size")
        body = np.empty(size, np.uint8)
        body[:levels] = raw[:levels]
        if cpu_columns.snappy_decompress(raw[levels:], body[levels:]) < 0:
            raise Unsupported("a malformed snappy block")
        return body

    def _definition_levels(self, page: np.ndarray, body: np.ndarray) -> int:
        """Bytes of a v1 page's definition levels (0 for a required column); raises ``Unsupported`` unless they say
        every value is present (one RLE run of 1s: pyarrow's and most writers' all-valid levels)."""
        if not self.optional:
            return 0
        if body.shape[0] < 6:
            raise Unsupported("a truncated page")
        length = int.from_bytes(bytes(body[:4]), "little")
        run = position = shift = 0
        while True:  # the run's header, a varint: (count << 1) for an RLE run
            if position >= min(length, 10):
                raise Unsupported("definition levels")
            byte = int(body[4 + position])
            position += 1
            run |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if run & 1 or run >> 1 < page[P_NUM_VALUES] or position + 1 != length or body[4 + position] != 1:
            raise Unsupported("the definition levels are not one run of present values")
        return 4 + length

    def release(self) -> None:
        """Drop the dictionary (read again if this row group is read again)."""
        self._dictionary = None

    def _dictionary_values(self, buffers: DecodeBuffers) -> np.ndarray:
        """The column chunk's dictionary: its page's PLAIN values, read (snappy: decompressed) straight into it."""
        from linreg.kernels import cpu_columns

        if self._dictionary is None:
            if self.dictionary_pages.shape[0] != 1:
                raise Unsupported("dictionary-encoded pages without one dictionary page")
            page = self.dictionary_pages[0]
            dictionary = np.empty(int(page[P_NUM_VALUES]), self.dtype)
            size, compressed_size = int(page[P_UNCOMPRESSED_SIZE]), int(page[P_COMPRESSED_SIZE])
            if size != dictionary.nbytes:
                raise Unsupported(f"a dictionary page of {size} bytes for {dictionary.shape[0]} values")
            values = dictionary.view(np.uint8)
            if not self._compressed(page):
                if compressed_size != size:
                    raise Unsupported("an uncompressed dictionary page whose two sizes differ")
                _pread_into(self.fd, values, int(page[P_BODY]))
            else:
                raw = buffers.raw(compressed_size)
                _pread_into(self.fd, raw, int(page[P_BODY]))
                if cpu_columns.snappy_decompress(raw, values) < 0:
                    raise Unsupported("a malformed snappy block (dictionary page)")
            self._dictionary = dictionary
        return self._dictionary


def _pread_into(fd: int, out: np.ndarray, offset: int) -> None:
    _preadv_all(fd, [memoryview(out).cast("B")], offset)


def _preadv_all(fd: int, buffers: list[memoryview], offset: int) -> None:
    """Fill ``buffers`` with the file's consecutive bytes from ``offset`` (``preadv`` until all are full)."""
    total = sum(b.nbytes for b in buffers)
    done = 0
    while done < total:
        got = os.preadv(fd, buffers, offset + done)
        if not got:
            raise Unsupported("the file ended inside a page")
        done += got
        if done < total:  # a short read: continue after the bytes that arrived
            while got >= buffers[0].nbytes:
                got -= buffers[0].nbytes
                buffers = buffers[1:]
            buffers = [buffers[0][got:], *buffers[1:]]
