"""kernels.cpu_columns: columns of a record batch copied into a row-major chunk, against NumPy's column copies."""

import numpy as np
import pytest

from linreg import parquet
from linreg.kernels import cpu_columns


@pytest.mark.parametrize("out_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows", [1, cpu_columns.BLOCK_ROWS - 1, cpu_columns.BLOCK_ROWS + 1,
                                    parquet.KERNEL_ROWS + 3 * cpu_columns.BLOCK_ROWS + 5])
def test_columns_land_in_their_target_columns_converted_as_numpy_converts(n_rows, out_dtype):
    rng = np.random.default_rng(n_rows)
    columns = [rng.standard_normal(n_rows), rng.standard_normal(n_rows).astype(np.float32),
               rng.integers(-1000, 1000, n_rows).astype(np.int64), rng.integers(-9, 9, n_rows).astype(np.int16),
               rng.random(n_rows) < 0.5, rng.standard_normal(n_rows).astype(np.float16)]
    for column in columns:
        column.setflags(write=False)  # as Arrow's buffers are
    targets = [4, 0, 5, 2, 1, 3]  # not in order
    expected = np.full((n_rows, 7), -7.0, out_dtype)  # column 6 is nobody's: left as it was
    for column, target in zip(columns, targets, strict=True):
        expected[:, target] = column.astype(out_dtype)
    out = np.full((n_rows, 7), -7.0, out_dtype)
    # By dtype, as ParquetColumns.read calls it (the kernel takes one dtype of column per call).
    for column, target in zip(columns, targets, strict=True):
        parquet._columns_to_rows([column], [target], out)
    np.testing.assert_array_equal(out, expected)
    same_dtype = [rng.standard_normal(n_rows) for _ in range(5)]
    out = np.full((n_rows, 7), -7.0, out_dtype)
    parquet._columns_to_rows(same_dtype, [6, 1, 0, 3, 2], out)
    for column, target in zip(same_dtype, [6, 1, 0, 3, 2], strict=True):
        np.testing.assert_array_equal(out[:, target], column.astype(out_dtype))
    np.testing.assert_array_equal(out[:, [4, 5]], -7.0)


def test_the_kernel_runs_for_large_pieces_and_numpy_for_small_ones(monkeypatch):
    calls = []
    original = cpu_columns.columns_to_rows
    monkeypatch.setattr(cpu_columns, "columns_to_rows", lambda *args: calls.append(args[2].shape) or original(*args))
    for n_rows in (parquet.KERNEL_ROWS - 1, parquet.KERNEL_ROWS):
        out = np.empty((n_rows, 2))
        parquet._columns_to_rows([np.arange(n_rows, dtype=np.float64), np.ones(n_rows)], [1, 0], out)
        np.testing.assert_array_equal(out, np.column_stack([np.ones(n_rows), np.arange(n_rows)]))
    assert calls == [(parquet.KERNEL_ROWS, 2)]


@pytest.mark.parametrize("stored, out_dtype", [(np.float32, np.float32), (np.float32, np.float64),
                                               (np.float64, np.float64)])
@pytest.mark.parametrize("n_rows", [1, cpu_columns.TILE_ROWS - 1, cpu_columns.TILE_ROWS + 1,
                                    5 * cpu_columns.TILE_ROWS + 7])
def test_column_major_buffers_become_rows(n_rows, stored, out_dtype):
    """column_major_to_rows on the page reader's padded buffer (parquet._column_buffer), wider than the rows asked
    for: row i of out is column i of the buffer, converted; nothing past n_rows is read into out."""
    rng = np.random.default_rng(n_rows)
    buffer = parquet._column_buffer(9, n_rows + 3, np.dtype(stored))
    buffer[:] = rng.standard_normal(buffer.shape)
    assert buffer.strides[0] % 4096 == 64  # the columns' streams 64 bytes apart modulo 4 KiB
    out = np.empty((n_rows, 9), out_dtype)
    cpu_columns.column_major_to_rows(buffer[:, :n_rows], out)
    np.testing.assert_array_equal(out, buffer[:, :n_rows].T.astype(out_dtype))
