"""The page reader's decode kernels (``kernels.cpu_columns``): snappy, dictionary indices, runs of pages.

Each is compared bit for bit with pyarrow (its snappy codec, its decode of the same file) or with
a plain Python reference decoder, and fed corrupt and truncated input: a kernel returns an error
(the reader then reads the row group with pyarrow) and never writes outside its output.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from linreg import outofcore, parquet, parquet_pages
from linreg.kernels import cpu_columns

GUARD = 64


def guarded(n):
    """An output of n bytes inside a larger buffer filled with a guard pattern, to catch stray writes."""
    buffer = np.full(n + 2 * GUARD, 0xA5, np.uint8)
    return buffer, buffer[GUARD:GUARD + n]


def guard_intact(buffer):
    return (buffer[:GUARD] == 0xA5).all() and (buffer[-GUARD:] == 0xA5).all()


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def literal(data):
    """A snappy literal element, with the length in the tag or in 1..4 extra bytes (tags 60..63)."""
    size = len(data) - 1
    if size < 60:
        return bytes([size << 2]) + data
    extra = (size.bit_length() + 7) // 8
    return bytes([(59 + extra) << 2]) + size.to_bytes(extra, "little") + data


def snappy_inputs():
    rng = np.random.default_rng(5)
    yield rng.standard_normal(20_000).astype(np.float32).tobytes()  # a data page of floats: one long literal
    yield rng.integers(0, 4, 100_000).astype(np.uint8).tobytes()  # short matches at 1-byte offsets
    yield np.repeat(rng.integers(0, 255, 3000).astype(np.uint8), 40).tobytes()  # runs: overlapping copies
    yield np.tile(rng.integers(0, 255, 5000).astype(np.uint8), 30).tobytes()  # 2-byte offsets
    yield np.round(rng.standard_normal(50_000) * 2).astype(np.float32).tobytes()
    yield b"x"
    yield b""


@pytest.mark.parametrize("data", list(snappy_inputs()), ids=lambda d: f"{len(d)}B")
def test_snappy_decompresses_what_pyarrow_compresses(data):
    compressed = np.frombuffer(pa.Codec("snappy").compress(data, asbytes=True), np.uint8)
    buffer, out = guarded(len(data))
    assert cpu_columns.snappy_decompress(compressed, out) == len(data)
    assert out.tobytes() == data and guard_intact(buffer)
    # The uncompressed length is the block's: a wrong output size is an error, not a partial result.
    for size in (len(data) + 1, max(len(data) - 1, 0)) if data else (1,):
        buffer, out = guarded(size)
        assert cpu_columns.snappy_decompress(compressed, out) == -1 and guard_intact(buffer)


def test_snappy_elements_pyarrow_rarely_writes():
    """Literals with 1..4 length bytes, copies with 1-, 2- and 4-byte offsets, overlapping and not."""
    rng = np.random.default_rng(2)
    head = rng.integers(0, 255, 70_000).astype(np.uint8).tobytes()
    expected = bytearray(head)
    elements = bytearray(literal(head[:30]) + literal(head[30:300]) + literal(head[300:70_000]))
    for offset, size, tag in ((7, 11, 1), (3, 60, 2), (65_000, 64, 2), (69_999, 5, 3), (1, 33, 3)):
        if tag == 1:
            elements += bytes([1 | (size - 4) << 2 | (offset >> 8) << 5, offset & 0xFF])
        elif tag == 2:
            elements += bytes([2 | (size - 1) << 2]) + offset.to_bytes(2, "little")
        else:
            elements += bytes([3 | (size - 1) << 2]) + offset.to_bytes(4, "little")
        for _ in range(size):
            expected.append(expected[-offset])
    block = np.frombuffer(varint(len(expected)) + bytes(elements), np.uint8)
    buffer, out = guarded(len(expected))
    assert cpu_columns.snappy_decompress(block, out) == len(expected)
    assert out.tobytes() == bytes(expected) and guard_intact(buffer)
    assert pa.Codec("snappy").decompress(block.tobytes(), decompressed_size=len(expected)).to_pybytes() == expected


def test_corrupt_snappy_blocks_are_errors_that_write_nothing_outside():
    rng = np.random.default_rng(9)
    data = np.tile(rng.integers(0, 255, 700).astype(np.uint8), 20).tobytes()
    good = np.frombuffer(pa.Codec("snappy").compress(data, asbytes=True), np.uint8)
    bad = [good[:k] for k in range(len(good))]  # every truncation
    bad.append(np.frombuffer(varint(8) + bytes([1 << 2]) + b"ab" + bytes([1 | 0 << 2, 0]), np.uint8))  # offset 0
    bad.append(np.frombuffer(varint(8) + bytes([1 << 2]) + b"ab" + bytes([1 | 0 << 2, 3]), np.uint8))  # too far back
    bad.append(np.frombuffer(varint(4) + literal(b"abcdef"), np.uint8))  # a literal past the stated length
    for block in bad:
        buffer, out = guarded(len(data) if block.shape[0] > 8 else 8)
        assert cpu_columns.snappy_decompress(block, out) == -1 and guard_intact(buffer)
    for _ in range(300):  # random damage: an error, or (where it still parses) nothing written outside
        block = good.copy()
        block[rng.integers(0, block.shape[0], 3)] = rng.integers(0, 255, 3)
        buffer, out = guarded(len(data))
        assert cpu_columns.snappy_decompress(block, out) in (-1, len(data)) and guard_intact(buffer)


def bit_packed(indices, width):
    """Parquet's RLE / bit-packed hybrid, bit-packed runs only (groups of 8, least significant bit first)."""
    padded = list(indices) + [0] * (-len(indices) % 8)
    number = sum(int(v) << (k * width) for k, v in enumerate(padded))
    return varint((len(padded) // 8) << 1 | 1) + number.to_bytes(len(padded) * width // 8, "little")


@pytest.mark.parametrize("width", [1, 2, 3, 7, 8, 9, 13, 17, 18, 24, 25, 31, 32])
def test_dictionary_indices_of_every_bit_width(width):
    """Bit-packed runs of every width (an RLE run between), at any skip, the last group cut short after the
    last value (as writers may), against a Python reference; an index beyond the dictionary is an error."""
    rng = np.random.default_rng(width)
    n_dictionary = min(1 << width, 300_000)
    dictionary = rng.standard_normal(n_dictionary).astype(np.float64)
    first = rng.integers(0, n_dictionary, 1003)
    second = rng.integers(0, n_dictionary, 13)
    repeated = int(rng.integers(0, n_dictionary))
    width_bytes = (width + 7) // 8
    stream = bytes([width]) + bit_packed(first, width) + varint(9 << 1) + repeated.to_bytes(width_bytes, "little")
    stream += bit_packed(second, width)
    indices = np.concatenate([first, np.zeros(-len(first) % 8, np.int64), np.full(9, repeated), second])
    n = indices.shape[0]
    cut = len(stream) - (3 * width) // 8  # the last group's unused bytes dropped (13 of 16 values used)
    values = np.frombuffer(stream[:cut], np.uint8)
    for skip in (0, 1, 7, 8, 500, 1009, n - 13, n - 1):
        out = np.empty(n - skip)
        assert cpu_columns.dictionary_decode(values, n, skip, dictionary, out)
        np.testing.assert_array_equal(out, dictionary[indices[skip:]])
    assert not cpu_columns.dictionary_decode(values[:-1], n, 0, dictionary, np.empty(n))
    if n_dictionary > 1:
        assert not cpu_columns.dictionary_decode(values, n, 0, dictionary[:int(indices.max())], np.empty(n))


def plain_page_run(values_per_page, dtype, compressed, optional, run_lengths=None, level_value=1):
    """A run of v1 PLAIN data pages as the file would hold them (bodies with 5 bytes of header between them),
    and their page-table rows. Optional: definition levels of one RLE run (of ``run_lengths[p]`` levels, default
    the page's count) of ``level_value`` (1: present)."""
    rng = np.random.default_rng(4)
    raw, rows, first_row, stored = bytearray(), [], 0, []
    for p, count in enumerate(values_per_page):
        values = rng.standard_normal(count).astype(dtype)
        stored.append(values)
        body = values.tobytes()
        if optional:  # definition levels: 4 bytes of length, one RLE run of `count` 1s
            run = varint((run_lengths[p] if run_lengths else count) << 1) + bytes([level_value])
            body = len(run).to_bytes(4, "little") + run + body
        size = len(body)
        if compressed:
            body = pa.Codec("snappy").compress(body, asbytes=True)
        raw += b"HEADR"
        rows.append([0, len(raw), len(body), size, count, 0, first_row, 0, 1, -1])
        raw += body
        first_row += count
    return np.frombuffer(bytes(raw), np.uint8), np.array(rows, np.int64), np.concatenate(stored)


@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("optional", [True, False])
def test_a_run_of_pages_ending_exactly_at_the_buffer_end_and_truncated_runs(compressed, optional):
    """decode_pages over a run whose last page ends on the last byte of the read buffer (the reader sizes it
    so): every value, at any skip; the same buffer one byte short, or a page's levels saying null: an error."""
    raw, pages, stored = plain_page_run([1000, 1, 999, 2048], np.float32, compressed, optional)
    scratch = np.empty(int(pages[:, 3].max()), np.uint8)
    base = 1000  # the file offset of raw[0]
    pages[:, 1] += base
    for skip, n in ((0, 4048), (1, 4047), (999, 3049), (1000, 1), (1001, 3047), (2000, 2048), (3, 500)):
        out = np.full(n, np.nan, np.float32)
        first = int(np.searchsorted(pages[:, 6], skip, side="right")) - 1
        status = cpu_columns.decode_pages(raw, base, pages[first:], skip - int(pages[first, 6]), compressed,
                                          optional, np.empty(0, np.float32), scratch, out, out.view(np.uint8))
        assert status == cpu_columns.DECODE_OK
        assert out.tobytes() == stored[skip:skip + n].tobytes()
    out = np.empty(4048, np.float32)
    assert cpu_columns.decode_pages(raw[:-1], base, pages, 0, compressed, optional, np.empty(0, np.float32),
                                    scratch, out, out.view(np.uint8)) != cpu_columns.DECODE_OK
    if optional and not compressed:
        levels = raw.copy()
        levels[int(pages[2, 1]) - base + 4 + 2] = 0  # the third page's run of 1s becomes a run of 0s (nulls)
        assert cpu_columns.decode_pages(levels, base, pages, 0, compressed, optional, np.empty(0, np.float32),
                                        scratch, out, out.view(np.uint8)) == cpu_columns.DECODE_LEVELS


def test_snappy_pages_whose_levels_differ_from_the_usual_take_the_scratch_path():
    """A whole snappy page decompresses straight into the output when its levels are the usual run: a longer run
    header (a run of more levels than values, which readers accept) goes through the scratch buffer, the same
    values; levels saying null are refused either way."""
    counts = [500, 60, 700, 64]
    raw, pages, stored = plain_page_run(counts, np.float32, True, True, run_lengths=[500, 100, 700, 64])
    out = np.empty(sum(counts), np.float32)
    scratch = np.empty(int(pages[:, 3].max()), np.uint8)
    assert cpu_columns.decode_pages(raw, 0, pages, 0, True, True, np.empty(0, np.float32), scratch, out,
                                    out.view(np.uint8)) == cpu_columns.DECODE_OK
    assert out.tobytes() == stored.tobytes()
    raw, pages, _ = plain_page_run(counts, np.float32, True, True, level_value=0)
    assert cpu_columns.decode_pages(raw, 0, pages, 0, True, True, np.empty(0, np.float32), scratch, out,
                                    out.view(np.uint8)) == cpu_columns.DECODE_LEVELS


def write_default_file(path, n=30_000, dtype=np.float32):
    rng = np.random.default_rng(8)
    columns = {f"x{j}": rng.standard_normal(n).astype(dtype) for j in range(6)}
    columns["t"] = rng.standard_normal(n).astype(dtype)
    # Small pages and dictionaries: dictionary pages, then PLAIN ones after the fallback, in every row group.
    pq.write_table(pa.table(columns), path, row_group_size=12_000, data_page_size=8_000,
                   dictionary_pagesize_limit=20_000)
    return np.column_stack([columns[f"x{j}"] for j in range(6)])


def read_ranges(path, ranges, monkeypatch, threads, page_reader=True):
    monkeypatch.setattr(parquet, "DECODE_THREADS", threads)
    monkeypatch.setattr(parquet, "PAGE_READER", page_reader)
    dataset = outofcore.open_dataset(path, "t")
    rows = []
    for start, stop in ranges:
        X = np.empty((stop - start, dataset.n_features), dataset.dtype)
        dataset.X.read(start, stop, X)
        rows.append(X)
    refused = set(dataset.X._pyarrow_units)
    dataset.close()
    return rows, refused


def test_two_decoding_threads_read_the_same_bits_as_one_and_as_pyarrow(tmp_path, monkeypatch):
    """The columns split over the caller's thread and the background one: the same rows, bit for bit, as one
    thread and as pyarrow's decode, across pages, dictionary/PLAIN boundaries and row groups."""
    path = tmp_path / "f.parquet"
    stored = write_default_file(path)
    metadata = pq.read_metadata(path)
    assert "RLE_DICTIONARY" in metadata.row_group(0).column(0).encodings
    rng = np.random.default_rng(1)
    ranges = [(0, 30_000), (11_999, 12_001), (5, 29_000)]
    ranges += [tuple(sorted(rng.choice(30_001, 2, replace=False))) for _ in range(15)]
    two, refused_two = read_ranges(path, ranges, monkeypatch, threads=2)
    one, refused_one = read_ranges(path, ranges, monkeypatch, threads=1)
    theirs, _ = read_ranges(path, ranges, monkeypatch, threads=1, page_reader=False)
    assert not refused_two and not refused_one
    for (start, stop), a, b, c in zip(ranges, two, one, theirs, strict=True):
        assert a.tobytes() == b.tobytes() == c.tobytes() == stored[start:stop].tobytes()


def test_a_damaged_snappy_page_goes_to_pyarrow(tmp_path, monkeypatch):
    """A snappy page whose block no longer parses (its stated length changed on disk): the page reader refuses
    the row group and pyarrow reads it, from the start of the request: pyarrow's error (or rows) either way."""
    path = tmp_path / "f.parquet"
    write_default_file(path)
    metadata = pq.read_metadata(path)
    source = outofcore.open_dataset(path, "t").X
    pages = source._unit_pages(1)[2].data_pages
    source.close()
    plain = pages[pages[:, parquet_pages.P_ENCODING] == 0][1]
    data = bytearray(path.read_bytes())
    data[int(plain[parquet_pages.P_BODY])] ^= 0x01  # the block's first varint byte: its uncompressed length
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(bytes(data))
    assert pq.read_metadata(damaged).num_rows == metadata.num_rows

    source = outofcore.open_dataset(damaged, "t").X
    assert not source._fill_pages(12_000, 24_000) and source._pyarrow_units == {1}  # refused, not misread
    source.close()

    def outcome(page_reader):
        try:
            return read_ranges(damaged, [(0, 30_000)], monkeypatch, threads=2, page_reader=page_reader)[0][0].tobytes()
        except (OSError, ValueError, pa.ArrowException) as error:
            return type(error)

    assert outcome(True) == outcome(False)
