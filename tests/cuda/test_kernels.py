"""kernels.cuda against the torch autograd oracle and kernels.cpu, on shapes that cross block and tile boundaries.

The launch geometry is patched small (conftest.SMALL_GRID): 4 threads and 4+
rows per block, at most 3 blocks, residual tiles of 3 rows x 2 outputs.
Tolerances come from linreg.testing: "reference" against kernels.cpu (both
accumulate in float64, only the order differs), "oracle" against torch.
"""

import numpy as np
import pytest
from helpers import random_problem

from linreg import oracle
from linreg.kernels import cpu
from linreg.kernels import cuda as cuda_kernels
from linreg.testing import assert_close

DTYPES = [np.float32, np.float64]
#: 1 row; bs - 1, bs, bs + 1 (bs = 4 rows and threads); several full blocks; the MAX_BLOCKS cap (5 rows a block).
N_SAMPLES = [1, 3, 4, 5, 12, 14]
#: (n_features, n_outputs) and the path it takes with the default buckets ((16, 1), (8, 4)).
WIDTHS = {
    (1, 1): "registers 16x1",
    (16, 1): "registers 16x1",
    (3, 2): "registers 8x4",
    (5, 4): "registers 8x4",
    (17, 1): "tiled",
    (9, 3): "tiled",
    (2, 5): "tiled",
}


def cuda_loss_grad(X, Y, W, b):
    dW, db = np.empty_like(W), np.empty_like(b)
    value = cuda_kernels.loss_grad(X, Y, W, b, dW, db)
    return value, dW, db


def torch_predict(X, W, b):
    import torch

    return oracle.model(torch.from_numpy(X), torch.from_numpy(W), torch.from_numpy(b)).numpy()


def check_all_kernels(X, Y, W, b, dtype):
    """predict, loss and loss_grad against kernels.cpu ("reference") and torch ("oracle")."""
    value, dW, db = cuda_loss_grad(X, Y, W, b)
    assert dW.dtype == db.dtype == dtype
    cpu_dW, cpu_db = np.empty_like(W), np.empty_like(b)
    cpu_value = cpu.loss_grad(X, Y, W, b, cpu_dW, cpu_db)
    torch_value, torch_dW, torch_db = oracle.loss_grad(X, Y, W, b)
    for name, (ref_value, ref_dW, ref_db), kind in [("cpu", (cpu_value, cpu_dW, cpu_db), "reference"),
                                                    ("torch", (torch_value, torch_dW, torch_db), "oracle")]:
        assert_close(value, ref_value, dtype, kind, f"loss_grad loss vs {name}")
        assert_close(dW, ref_dW, dtype, kind, f"dW vs {name}")
        assert_close(db, ref_db, dtype, kind, f"db vs {name}")
    assert_close(cuda_kernels.loss(X, Y, W, b), cpu_value, dtype, "reference", "loss vs cpu")
    assert_close(cuda_kernels.loss(X, Y, W, b), torch_value, dtype, "oracle", "loss vs torch")
    P = cuda_kernels.predict(X, W, b)
    assert isinstance(P, np.ndarray) and P.dtype == dtype and P.shape == (X.shape[0], W.shape[0])
    assert_close(P, cpu.predict(X, W, b), dtype, "reference", "predict vs cpu")
    assert_close(P, torch_predict(X, W, b), dtype, "oracle", "predict vs torch")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", list(WIDTHS), ids=[f"{f}x{o}-{p.replace(' ', '')}" for (f, o), p in WIDTHS.items()])
@pytest.mark.parametrize("n_samples", N_SAMPLES)
def test_kernels_against_cpu_and_torch(n_samples, width, dtype, small_grid):
    n_features, n_outputs = width
    X, Y, W, b = random_problem(n_samples, n_features, n_outputs, dtype, seed=n_samples)
    work = cuda_kernels.Workspace(n_samples, n_features, n_outputs, dtype)
    expected = WIDTHS[width]
    assert (work.register_shape is None) == (expected == "tiled")
    if work.register_shape is not None:
        assert expected == f"registers {work.register_shape[0]}x{work.register_shape[1]}"
    check_all_kernels(X, Y, W, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_samples, n_features, n_outputs", [(5, 1, 1), (14, 3, 2), (12, 5, 4)])
def test_tiled_path_on_register_shapes(n_samples, n_features, n_outputs, dtype, small_grid, monkeypatch):
    """With no register buckets the tiled kernel takes the small shapes too, n_features=1 included."""
    monkeypatch.setattr(cuda_kernels, "REGISTER_SHAPES", ())
    assert cuda_kernels.Workspace(n_samples, n_features, n_outputs, dtype).register_shape is None
    check_all_kernels(*random_problem(n_samples, n_features, n_outputs, dtype, seed=3), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiled_output_groups(dtype, small_grid, monkeypatch):
    """An output tile wider than the per-thread register group (10 > 8 outputs): two groups, one partial."""
    monkeypatch.setattr(cuda_kernels, "TILE_OUTPUTS", 10)
    check_all_kernels(*random_problem(7, 3, 10, dtype, seed=4), dtype)


@pytest.mark.parametrize("threads", [1, 3, 5])
def test_tree_reduction_with_any_block_size(threads, small_grid, monkeypatch):
    """The shared-memory tree pairs entries correctly for 1 and non-power-of-two thread counts."""
    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", threads)
    for width in [(3, 2), (9, 3)]:
        check_all_kernels(*random_problem(11, *width, np.float64, seed=threads), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_are_deterministic(dtype, small_grid):
    """Same inputs, same grid: bit-identical loss and gradients, call after call."""
    X, Y, W, b = random_problem(14, 9, 3, dtype, seed=7)
    first = cuda_loss_grad(X, Y, W, b)
    for _ in range(2):
        again = cuda_loss_grad(X, Y, W, b)
        assert again[0] == first[0]
        np.testing.assert_array_equal(again[1], first[1])
        np.testing.assert_array_equal(again[2], first[2])


def test_default_geometry_on_a_larger_problem():
    """The unpatched tunables (one block here) on a problem bigger than a residual tile: both paths."""
    for width in [(5, 2), (20, 3)]:
        X, Y, W, b = random_problem(70, *width, np.float64, seed=11)
        assert cuda_kernels.grid(70) == (1, cuda_kernels.ROWS_PER_BLOCK)
        value, dW, db = cuda_loss_grad(X, Y, W, b)
        cpu_dW, cpu_db = np.empty_like(W), np.empty_like(b)
        assert_close(value, cpu.loss_grad(X, Y, W, b, cpu_dW, cpu_db), np.float64, "reference", "loss")
        assert_close(dW, cpu_dW, np.float64, "reference", "dW")
        assert_close(db, cpu_db, np.float64, "reference", "db")


def test_grid_depends_only_on_the_shape_and_the_tunables(small_grid, monkeypatch):
    assert cuda_kernels.grid(1) == (1, 4)
    assert cuda_kernels.grid(4) == (1, 4)
    assert cuda_kernels.grid(5) == (2, 4)
    assert cuda_kernels.grid(12) == (3, 4)
    assert cuda_kernels.grid(14) == (3, 5)  # MAX_BLOCKS = 3: rows per block grow instead
    monkeypatch.setattr(cuda_kernels, "MAX_PARTIALS_BYTES", 8 * 100)
    assert cuda_kernels.grid(12, n_terms=50) == (2, 6)  # 2 blocks x 50 terms fill the 100-float64 budget
    assert cuda_kernels.grid(12, n_terms=1000) == (1, 12)


def test_partials_budget_keeps_results(small_grid, monkeypatch):
    """Fewer, longer blocks for a wide problem: same results within the reference tolerance."""
    monkeypatch.setattr(cuda_kernels, "MAX_PARTIALS_BYTES", 8 * 40)
    X, Y, W, b = random_problem(14, 9, 3, np.float64, seed=8)
    assert cuda_kernels.Workspace(14, 9, 3, np.float64).n_blocks == 1
    check_all_kernels(X, Y, W, b, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_1024_features_16_outputs(dtype, small_grid, monkeypatch):
    """The issue's wide case takes the tiled path and agrees with the references (the compile check shows no spill)."""
    monkeypatch.setattr(cuda_kernels, "TILE_OUTPUTS", 16)  # two register groups of 8 outputs per feature
    X, Y, W, b = random_problem(6, 1024, 16, dtype, seed=6)
    assert cuda_kernels.Workspace(6, 1024, 16, dtype).register_shape is None
    value, dW, db = cuda_loss_grad(X, Y, W, b)
    cpu_dW, cpu_db = np.empty_like(W), np.empty_like(b)
    cpu_value = cpu.loss_grad(X, Y, W, b, cpu_dW, cpu_db)
    assert_close(value, cpu_value, dtype, "reference", "loss")
    assert_close(dW, cpu_dW, dtype, "reference", "dW")
    assert_close(db, cpu_db, dtype, "reference", "db")
    torch_value, torch_dW, _ = oracle.loss_grad(X, Y, W, b)
    assert_close(value, torch_value, dtype, "oracle", "loss vs torch")
    assert_close(dW, torch_dW, dtype, "oracle", "dW vs torch")


def test_device_inputs_and_outputs_stay_on_the_device(small_grid, transfers):
    """Device arrays in, device arrays out: no copy of X, Y or the results."""
    from numba import cuda

    X, Y, W, b = random_problem(9, 3, 2, np.float64, seed=5)
    devices = [cuda.to_device(a) for a in (X, Y, W, b)]
    dW, db = cuda.device_array_like(W), cuda.device_array_like(b)
    transfers.clear()
    P = cuda_kernels.predict(devices[0], devices[2], devices[3])
    assert transfers.to_device == [] and transfers.to_host == []
    value = cuda_kernels.loss_grad(*devices, dW, db)
    assert transfers.to_device == []
    assert transfers.to_host == [8]  # the loss value only
    np.testing.assert_array_equal(P.copy_to_host(), cuda_kernels.predict(X, W, b))
    reference = cuda_loss_grad(X, Y, W, b)
    assert value == reference[0]
    np.testing.assert_array_equal(dW.copy_to_host(), reference[1])
    np.testing.assert_array_equal(db.copy_to_host(), reference[2])


def test_first_nonfinite_finds_the_first_in_row_major_order(small_grid):
    from numba import cuda

    A = np.arange(35, dtype=np.float32).reshape(7, 5)
    assert cuda_kernels.first_nonfinite(cuda.to_device(A)) is None
    A[5, 1], A[2, 3], A[6, 4] = np.inf, np.nan, -np.inf
    assert cuda_kernels.first_nonfinite(cuda.to_device(A)) == (2, 3)


def test_cast_converts_on_the_device(small_grid):
    from numba import cuda

    y = np.arange(10, dtype=np.int64)
    column = cuda_kernels.cast(cuda.to_device(y)[::2], np.float32)
    assert column.shape == (5, 1) and column.dtype == np.float32
    np.testing.assert_array_equal(column.copy_to_host()[:, 0], y[::2].astype(np.float32))
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    wide = cuda_kernels.cast(cuda.to_device(X), np.float64)
    np.testing.assert_array_equal(wide.copy_to_host(), X.astype(np.float64))


def test_launches_refuse_host_arrays():
    """A host array argument would be copied to the device and back on every launch."""
    with pytest.raises(TypeError, match="host array"):
        cuda_kernels._launch(cuda_kernels._fill, 1, np.zeros(3, np.int64), 0)


@pytest.mark.parametrize("bad, message", [
    ({"W": np.ones((2, 4))}, "W must have shape"),
    ({"b": np.ones(3)}, "b must have shape"),
    ({"Y": np.ones((6, 2))}, "Y must have shape"),
    ({"X": np.ones((5, 3), np.float32)}, "must have X's dtype"),
    ({"X": np.ones((5, 3), np.int64)}, "float32 or float64"),
    ({"X": [[1.0]]}, "numpy.ndarray or a CUDA device array"),
])
def test_wrappers_check_shapes_and_dtypes(bad, message):
    arrays = {"X": np.ones((5, 3)), "Y": np.ones((5, 2)), "W": np.ones((2, 3)), "b": np.ones(2)} | bad
    with pytest.raises((TypeError, ValueError), match=message):
        cuda_loss_grad(arrays["X"], arrays["Y"], arrays["W"], arrays["b"])
