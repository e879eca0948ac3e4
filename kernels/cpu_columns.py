"""Columns into rows: the copy that turns a columnar record batch (Parquet, Arrow) into a row-major chunk.

Shapes::

    columns  typed List of k 1-D arrays (n,), one dtype     the decoded columns (Arrow buffers, zero-copy)
    targets  (k,) int64                                      the output column each input column fills
    out      (n, n_columns) C-contiguous, float32/float64    the chunk buffer

Formula: ``out[i, targets[c]] = columns[c][i]`` for every row i and column c,
converted to out's dtype (integers and booleans exactly as NumPy's casting does).

Why a kernel: written column by column with NumPy, each column is a strided
store over the whole chunk (one element per row of out, so every cache line of
out is written once per column): 7.4 ms for 200,000 x 32 float32 here. Per
block of ``BLOCK_ROWS`` rows, the columns' slices are first staged in a small
contiguous buffer, then out is written row by row: 2.3 ms from NumPy arrays,
3.2 ms from Arrow's read-only column buffers (2 threads; a plain memcpy of the
same bytes, 1.2 ms). Reading a typed list's arrays
element by element inside the row loop (no staging) measured slower than
NumPy. There is no reduction:
each output element is written once by the block that owns its row, so the
result does not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Rows per block: 256 rows of 32 float32 columns are 32 KiB of out, the size of an L1 data cache.
BLOCK_ROWS = 256


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def columns_to_rows(columns, targets: np.ndarray, out: np.ndarray) -> None:
    n_rows = out.shape[0]
    n_columns = len(columns)
    n_blocks = (n_rows + BLOCK_ROWS - 1) // BLOCK_ROWS
    for block in prange(n_blocks):
        start = block * BLOCK_ROWS
        stop = min(start + BLOCK_ROWS, n_rows)
        # Stage the block of every column contiguously (sequential reads and writes), then store whole rows:
        # out's cache lines are each written once, not once per column.
        staged = np.empty((n_columns, BLOCK_ROWS), out.dtype)
        for c in range(n_columns):
            staged[c, :stop - start] = columns[c][start:stop]
        for i in range(start, stop):
            for c in range(n_columns):
                out[i, targets[c]] = staged[c, i - start]


#: Rows per tile of ``column_major_to_rows``.
TILE_ROWS = 256


@njit(parallel=True, cache=True, nogil=True)
def column_major_to_rows(columns: np.ndarray, out: np.ndarray) -> None:
    """``out[i, c] = columns[c, i]`` for ``columns`` (n_columns, >= n) and ``out`` (n, n_columns), converted to
    out's dtype: the values of Parquet pages read by ``linreg.parquet_pages`` into a column-major buffer become
    the row-major chunk. Rows outer, columns inner: out is written sequentially (each cache line once) while the
    tile's columns are read as n_columns sequential streams. That order measured 3.4 ms for 226,719 x 32 float32
    against 57 ms for columns outer (stores strided by the row) and 6.2 ms for NumPy's ``out[:] = columns.T``.
    Each output element is written once by the tile that owns its row: independent of the thread count."""
    n_rows, n_columns = out.shape
    n_tiles = (n_rows + TILE_ROWS - 1) // TILE_ROWS
    for tile in prange(n_tiles):
        start = tile * TILE_ROWS
        stop = min(start + TILE_ROWS, n_rows)
        for i in range(start, stop):
            for c in range(n_columns):
                out[i, c] = columns[c, i]


#: ``page_header``'s output: the fields of parquet-format's PageHeader it reports (-1: absent).
(H_TYPE, H_UNCOMPRESSED, H_COMPRESSED, H_NUM_VALUES, H_ENCODING, H_DEFINITION_ENCODING, H_NUM_NULLS,
 H_DEFINITION_BYTES, H_REPETITION_BYTES, H_IS_COMPRESSED, H_LENGTH, H_SIZE) = range(12)
_MAX_DEPTH = 8


@njit(cache=True, nogil=True, inline="always")
def _varint(data, pos, end):
    """The unsigned LEB128 varint at ``data[pos:end]``: (its value, the position after it), or (0, -1) if the
    data ends inside it (Thrift's compact protocol and Parquet's RLE run headers both write them)."""
    value = np.int64(0)
    shift = 0
    while pos < end:
        byte = np.int64(data[pos])
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte & 0x80 == 0:
            return value, pos
    return np.int64(0), -1


@njit(cache=True, nogil=True)
def page_header(data: np.ndarray, fields: np.ndarray) -> int:
    """Parse a Parquet page header (a Thrift compact-protocol ``PageHeader``) at the start of ``data`` (uint8).

    Fills ``fields`` (H_SIZE int64, -1 where absent): the page type, sizes, and of
    the nested data / dictionary / v2 header: num_values, encoding, definition level
    encoding, num_nulls, level byte lengths, is_compressed; ``fields[H_LENGTH]``
    the header's length in bytes. Skips every other field (statistics). Returns 0,
    1 if ``data`` ends inside the header (read more and retry), 2 if it holds
    something this parser does not read (a nested list of structs, a bad type).
    """
    fields[:] = -1
    n = data.shape[0]
    pos = 0
    last = np.zeros(_MAX_DEPTH, np.int64)  # the last field id of each open struct
    owner = np.zeros(_MAX_DEPTH, np.int64)  # the field id that opened it (depth 1: the nested page header)
    depth = 0
    while True:
        if pos >= n:
            return 1
        header = np.int64(data[pos])
        pos += 1
        if header == 0:  # the end of a struct
            if depth == 0:
                fields[H_LENGTH] = pos
                return 0
            depth -= 1
            continue
        kind = header & 0x0F
        delta = header >> 4
        if delta:
            field = last[depth] + delta
        else:
            value, pos = _varint(data, pos, n)
            if pos < 0:
                return 1
            field = (value >> 1) ^ -(value & 1)
        last[depth] = field
        if kind == 1 or kind == 2:  # booleans carry their value in the type
            if depth == 1 and owner[1] == 8 and field == 7:
                fields[H_IS_COMPRESSED] = 1 if kind == 1 else 0
            continue
        if kind == 3:
            pos += 1
            continue
        if kind == 4 or kind == 5 or kind == 6:
            value, pos = _varint(data, pos, n)
            if pos < 0:
                return 1
            value = (value >> 1) ^ -(value & 1)
            if depth == 0:
                if field == 1:
                    fields[H_TYPE] = value
                elif field == 2:
                    fields[H_UNCOMPRESSED] = value
                elif field == 3:
                    fields[H_COMPRESSED] = value
            elif depth == 1:
                nested = owner[1]
                if field == 1:
                    fields[H_NUM_VALUES] = value
                elif (nested == 5 or nested == 7) and field == 2:
                    fields[H_ENCODING] = value
                elif nested == 5 and field == 3:
                    fields[H_DEFINITION_ENCODING] = value
                elif nested == 8 and field == 2:
                    fields[H_NUM_NULLS] = value
                elif nested == 8 and field == 4:
                    fields[H_ENCODING] = value
                elif nested == 8 and field == 5:
                    fields[H_DEFINITION_BYTES] = value
                elif nested == 8 and field == 6:
                    fields[H_REPETITION_BYTES] = value
            continue
        if kind == 7:
            pos += 8
            continue
        if kind == 8 or kind == 9 or kind == 10:
            # A binary (varint length, bytes), or a list / set of scalars or binaries.
            count = np.int64(1)
            element = kind
            if kind != 8:
                if pos >= n:
                    return 1
                list_header = np.int64(data[pos])
                pos += 1
                element = list_header & 0x0F
                count = list_header >> 4
                if count == 15:
                    count, pos = _varint(data, pos, n)
                    if pos < 0:
                        return 1
            for _ in range(count):
                if element == 1 or element == 2 or element == 3:
                    pos += 1
                elif element == 7:
                    pos += 8
                elif element == 4 or element == 5 or element == 6 or element == 8:
                    length, pos = _varint(data, pos, n)
                    if pos < 0:
                        return 1
                    if element == 8:
                        pos += length
                else:
                    return 2
            continue
        if kind == 12:
            depth += 1
            if depth >= _MAX_DEPTH:
                return 2
            last[depth] = 0
            owner[depth] = field
            continue
        return 2  # a map, or not a type


#: Dictionary indices unpacked per block before they are gathered (``dictionary_decode``).
_INDEX_BLOCK = 256


@njit(cache=True, nogil=True)
def dictionary_decode(values: np.ndarray, num_values: int, skip: int, dictionary: np.ndarray,
                      out: np.ndarray) -> bool:
    """Decode a dictionary-encoded Parquet data page: ``out[k] = dictionary[index[skip + k]]``.

    ``values`` (uint8) is the page's value section: one byte of bit width, then the
    indices of its ``num_values`` values in Parquet's RLE / bit-packed hybrid
    (runs: a varint header; ``header & 1``: ``header >> 1`` groups of 8 bit-packed
    indices, least significant bit first; else ``header >> 1`` repeats of one index
    stored in ``ceil(bit_width / 8)`` bytes). Returns False (out unspecified) if the
    stream is truncated, the bit width exceeds 32 or an index is outside the
    dictionary: the caller then reads the page with pyarrow.
    """
    n_out = out.shape[0]
    if values.shape[0] < 1:
        return False
    bit_width = np.int64(values[0])
    if bit_width > 32:
        return False
    mask = (np.int64(1) << bit_width) - 1
    pos = np.int64(1)
    end = values.shape[0]
    index = np.int64(0)  # position in the page's values
    n_dictionary = dictionary.shape[0]
    codes = np.empty(_INDEX_BLOCK, np.uint64)
    words = np.zeros(0, np.uint64)
    umask = np.uint64(mask)
    while index < skip + n_out:
        header, pos = _varint(values, pos, end)
        if pos < 0:
            return False
        if header & 1:
            count = (header >> 1) * 8
            first_bit = pos * 8
            pos += (header >> 1) * bit_width
            if pos > end:
                # A page's last group may be cut short after its last value: only the values needed must be there.
                if first_bit + (min(count, num_values - index)) * bit_width > end * 8:
                    return False
            k = max(0, skip - index)
            k_stop = min(count, skip + n_out - index, num_values - index)
            if k < k_stop:
                # The run's bytes copied into 8-byte words first (a memcpy: ~2.3 bytes a value at 18 bits), so
                # index k is two word loads and shifts, with no byte assembly (5 byte loads an index measured 1.8
                # ns, the dictionary gather 1.2 ns); checked against the dictionary once per block, then gathered:
                # the gather loop has no branch, so many dictionary loads are in flight (the dictionary: ~1 MiB, L2).
                run_bytes = min(end, pos) - first_bit // 8
                if words.shape[0] * 8 < run_bytes + 16:
                    words = np.zeros((run_bytes + 16) // 8 + 1, np.uint64)
                words_bytes = words.view(np.uint8)
                _copy(words_bytes, 0, values, first_bit // 8, run_bytes)
                for b in range(run_bytes, run_bytes + 16):
                    words_bytes[b] = 0
            while k < k_stop:
                block = min(k_stop - k, _INDEX_BLOCK)
                largest = np.uint64(0)
                for b in range(block):
                    bit = np.uint64((k + b) * bit_width)
                    word = bit >> np.uint64(6)
                    shift = bit & np.uint64(63)
                    # (x << 1) << (63 - shift): the high word's part, 0 when shift is 0 (a shift by 64 is undefined)
                    code = ((words[word] >> shift) | ((words[word + np.uint64(1)] << np.uint64(1))
                                                      << (np.uint64(63) - shift))) & umask
                    codes[b] = code
                    largest = max(largest, code)
                if largest >= np.uint64(n_dictionary):
                    return False
                target = out[index + k - skip:index + k - skip + block]
                for b in range(block):
                    target[b] = dictionary[codes[b]]
                k += block
        else:
            count = header >> 1
            width = (bit_width + 7) // 8
            if pos + width > end:
                return False
            code = np.int64(0)
            for b in range(width):
                code |= np.int64(values[pos + b]) << (8 * b)
            pos += width
            lo = max(index, skip)
            hi = min(index + count, skip + n_out, num_values)
            if hi > lo and code >= n_dictionary:
                return False
            for at in range(lo, hi):
                out[at - skip] = dictionary[code]
        if count == 0:
            return False
        index += count
    return index >= skip + n_out


# --------------------------------------------------------------------------- snappy and whole runs of pages

@njit(cache=True, nogil=True, inline="always")
def _copy(dst, dst_at, src, src_at, n):
    """``dst[dst_at:dst_at + n] = src[src_at:src_at + n]`` as an explicit loop (memcpy speed: ~1.1 us per 80 KB
    here). Numba's slice assignment copies the source into a temporary first (it may alias dst): 19.5 us; and
    indexing with ``dst_at + k`` (maybe negative: wraparound checks) is not vectorised: ~10x slower than this."""
    to = dst[dst_at:dst_at + n]
    source = src[src_at:src_at + n]
    for k in range(n):
        to[k] = source[k]


#: ``decode_pages``' statuses (0: done); anything else makes the caller read the row group with pyarrow.
(DECODE_OK, DECODE_SNAPPY, DECODE_LEVELS, DECODE_TRUNCATED, DECODE_DICTIONARY, DECODE_ENCODING) = range(6)


@njit(cache=True, nogil=True)
def snappy_decompress(src: np.ndarray, dst: np.ndarray) -> int:
    """Decompress the raw snappy block ``src`` (uint8) into ``dst`` (uint8, exactly its uncompressed length).

    The block (google/snappy's format_description.txt): a varint of the uncompressed
    length, then elements, each a tag byte whose low 2 bits say what it is: 0 a literal
    (length - 1 in the tag's upper 6 bits, or when those are 60..63 in the next 1..4
    bytes, little endian), then that many bytes; 1 a copy of 4..11 bytes at an 11-bit
    offset (3 bits in the tag, 8 in the next byte); 2 and 3 a copy of 1..64 bytes at a
    16- or 32-bit offset. A copy repeats earlier output (offset 1..position back; a copy
    longer than its offset repeats its own output, byte by byte).
    Returns the bytes written, or -1 if the block is malformed or its length is not
    ``dst``'s (every read and write is bounds-checked: corrupt input never writes past dst).
    Float data barely compresses: pyarrow writes a page of random floats as one literal (a memcpy).
    """
    n_src = src.shape[0]
    n_dst = dst.shape[0]
    length, pos = _varint(src, 0, n_src)
    if pos < 0 or length != n_dst:
        return -1
    out = 0
    while pos < n_src:
        tag = np.int64(src[pos])
        pos += 1
        kind = tag & 3
        if kind == 0:
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                if pos + extra > n_src:
                    return -1
                size = 0
                for b in range(extra):
                    size |= np.int64(src[pos + b]) << (8 * b)
                pos += extra
            size += 1
            if pos + size > n_src or out + size > n_dst:
                return -1
            _copy(dst, out, src, pos, size)
            pos += size
            out += size
            continue
        if kind == 1:
            if pos + 1 > n_src:
                return -1
            size = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | np.int64(src[pos])
            pos += 1
        elif kind == 2:
            if pos + 2 > n_src:
                return -1
            size = 1 + (tag >> 2)
            offset = np.int64(src[pos]) | (np.int64(src[pos + 1]) << 8)
            pos += 2
        else:
            if pos + 4 > n_src:
                return -1
            size = 1 + (tag >> 2)
            offset = (np.int64(src[pos]) | (np.int64(src[pos + 1]) << 8) | (np.int64(src[pos + 2]) << 16)
                      | (np.int64(src[pos + 3]) << 24))
            pos += 4
        if offset == 0 or offset > out or out + size > n_dst:
            return -1
        # Forward, byte by byte in effect: a copy longer than its offset repeats the bytes it writes.
        for k in range(size):
            dst[out + k] = dst[out - offset + k]
        out += size
    return out if out == n_dst else -1


@njit(cache=True, nogil=True, inline="always")
def _varint_length(value):
    """Bytes of ``value`` as an unsigned LEB128 varint."""
    length = 1
    while value >= 128:
        value >>= 7
        length += 1
    return length


@njit(cache=True, nogil=True, inline="always")
def _present_levels(data, num_values):
    """Bytes of a v1 page's definition levels at the start of ``data`` if they are one RLE run of >= num_values
    1s (every value present, as pyarrow writes them), else -1."""
    if data.shape[0] < 6:
        return -1
    length = (np.int64(data[0]) | (np.int64(data[1]) << 8) | (np.int64(data[2]) << 16)
              | (np.int64(data[3]) << 24))
    if length > data.shape[0] - 4:
        return -1
    run, position = _varint(data, 4, min(4 + length, 14))
    if position < 0 or run & 1 or (run >> 1) < num_values or position + 1 != 4 + length or data[position] != 1:
        return -1
    return 4 + length


@njit(cache=True, nogil=True)
def decode_pages(raw: np.ndarray, raw_offset: int, pages: np.ndarray, skip: int, compressed: bool, optional: bool,
                 dictionary: np.ndarray, scratch: np.ndarray, out: np.ndarray, out_bytes: np.ndarray) -> int:
    """Decode a run of data pages of one column chunk into ``out``: its values from value ``skip`` of the first
    page on, ``out.shape[0]`` of them (the run's pages hold them all).

    ``raw`` (uint8) holds the file's bytes from offset ``raw_offset`` over every page body
    of the run (one read; the headers between bodies are in it too, unread). ``pages``: the
    run's rows of ``linreg.parquet_pages``' page table (kind, body offset, compressed and
    uncompressed size, num_values, encoding, first row, v2 level bytes, is_compressed,
    values at). ``compressed``: the column chunk is snappy (a v2 page may still say it is
    not). ``optional``: v1 pages start with definition levels (checked: one run of present
    values). ``dictionary``: the column chunk's dictionary values (for dictionary-encoded
    pages). ``scratch`` (uint8, at least the largest page's uncompressed size): a page
    is decompressed there (a whole snappy PLAIN page after the run's first goes straight
    into out). ``out_bytes``: ``out`` viewed as uint8 (PLAIN values are copied as bytes).
    The first problem ends the call (``out`` then unspecified). Returns ``DECODE_OK``, or
    the problem (a malformed snappy block,
    levels with nulls, a truncated page, dictionary indices out of range, an encoding not
    read here): the caller reads the row group with pyarrow.
    """
    itemsize = out_bytes.shape[0] // max(out.shape[0], 1)
    n_out = out.shape[0]
    n_pages = pages.shape[0]
    # Where each page's values go in out; then the pages in reverse order, so that a whole snappy PLAIN page
    # can be decompressed straight into out (no scratch copy): a v1 page's definition levels land in the bytes
    # just before its values, which belong to the page before it, decompressed or decoded after it.
    starts = np.empty(n_pages + 1, np.int64)
    starts[0] = 0
    for p in range(n_pages):
        starts[p + 1] = min(n_out, starts[p] + pages[p, 4] - (skip if p == 0 else 0))
    if starts[n_pages] != n_out:  # the pages hold fewer values than asked for
        return DECODE_TRUNCATED
    for p in range(n_pages - 1, -1, -1):
        kind = pages[p, 0]
        body_at = pages[p, 1] - raw_offset
        body_size = pages[p, 2]
        num_values = pages[p, 4]
        encoding = pages[p, 5]
        levels = pages[p, 7]
        done = starts[p]
        page_skip = skip if p == 0 else 0
        count = starts[p + 1] - done
        if count <= 0:  # a page after the values asked for
            if done < n_out:
                return DECODE_TRUNCATED
            continue
        if body_at < 0 or body_at + body_size > raw.shape[0]:
            return DECODE_TRUNCATED
        body = raw[body_at:body_at + body_size]
        is_compressed = compressed and pages[p, 8] != 0
        if is_compressed and encoding == 0 and page_skip == 0 and count == num_values and levels <= body_size:
            # v1 levels if optional: 4 bytes of length, the run's varint header, one value byte
            expected = 0
            if kind == 0 and optional:
                expected = 5 + _varint_length(num_values << 1)
            first_byte = done * itemsize - expected
            if first_byte >= 0 and pages[p, 3] - levels == expected + count * itemsize:
                target = out_bytes[first_byte:(done + count) * itemsize]
                if snappy_decompress(body[levels:], target) >= 0 and (
                        expected == 0 or _present_levels(target, num_values) == expected):
                    continue
                # else: the page as below (the bytes before its values are rewritten by the page before it)
        if is_compressed:
            size = pages[p, 3]
            if size < levels or size > scratch.shape[0] or levels > body_size:
                return DECODE_TRUNCATED
            _copy(scratch, 0, body, 0, levels)  # a v2 page's levels are stored uncompressed before the values
            if snappy_decompress(body[levels:], scratch[levels:size]) < 0:
                return DECODE_SNAPPY
            data = scratch[:size]
        else:
            data = body
        at = levels
        if kind == 0 and optional:
            at = _present_levels(data, num_values)
            if at < 0:
                return DECODE_LEVELS
        values = data[at:]
        if encoding == 0:  # PLAIN
            if values.shape[0] < (page_skip + count) * itemsize:
                return DECODE_TRUNCATED
            _copy(out_bytes, done * itemsize, values, page_skip * itemsize, count * itemsize)
        elif encoding == 2 or encoding == 8:  # PLAIN_DICTIONARY, RLE_DICTIONARY
            if not dictionary_decode(values, num_values, page_skip, dictionary, out[done:done + count]):
                return DECODE_DICTIONARY
        else:
            return DECODE_ENCODING
    return DECODE_OK
