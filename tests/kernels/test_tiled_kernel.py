"""Issue 15's accuracy contract and determinism for every row kernel of ``kernels.cpu._loss_grad``.

The kernels (``kernels.cpu.kernel_variant``): the specialised kernel (one output, <= 8 features), the
one-output wide kernel (``_wide_rows``: C-contiguous data, one output, more features; 8 rows at a time in
8-lane float64 vectors, float64 throughout), the lanes kernel (``_lanes_rows``: C-contiguous data with
LANES_MIN_OUTPUTS or more outputs, the outputs in 8-lane float64 vectors, float64 throughout), the tiled
kernel (``_tiled_rows``: C-contiguous data of any other shape; float32 gradient partials over short blocks of
rows, flushed to float64) and the blocked kernel (any layout). Tests force a kernel on shapes it is not picked
for where it is correct for them (the lanes kernel takes any number of outputs, the wide kernel any number of
features). The contract (DESIGN.md
section 1): float32 data within 1e-6 (norm-wise relative) of a float64 reference at 10,000,000 rows and
within 1e-5 near the optimum of seed 000's data; float64 within 1e-12; bit-identical for any thread count.
"""

import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from helpers import random_problem, reference_loss_grad

from linreg import datasets
from linreg.kernels import cpu
from linreg.testing import assert_close

DTYPES = [np.float32, np.float64]
FIXED, WIDE, LANES, TILED, BLOCKED = "fixed", "wide", "lanes", "tiled", "blocked"


def variant_of(kind, X, Y):
    """The variant value of ``kind`` for (X, Y): what kernel_variant picks, or forced (for kernels' tests)."""
    if kind == FIXED:
        return (0.0,) * X.shape[1]
    return {WIDE: cpu.WIDE, LANES: cpu.LANES, TILED: cpu.TILED, BLOCKED: ()}[kind]


def loss_grad(X, Y, W, b, variant, chunk_rows=None, parallel=None):
    """``cpu._loss_grad`` with the given row kernel (and chunk layout); returns (loss, dW, db) as float64."""
    n_samples, n_features = X.shape
    n_outputs = W.shape[0]
    rows, n_chunks = cpu.chunking(n_samples, chunk_rows)
    work = cpu.Workspace(n_samples, n_features, n_outputs, X.dtype)
    run_parallel = work.parallel if parallel is None else parallel
    dW, db = np.empty_like(W), np.empty_like(b)
    scratch = np.zeros((n_chunks, work.residuals.shape[1]))
    value = cpu._loss_grad(X, Y, W, b, dW, db, run_parallel, rows, n_chunks, scratch,
                           np.zeros((n_chunks, n_outputs, n_features)), np.zeros((n_chunks, n_outputs)),
                           np.zeros(n_chunks), variant)
    return float(value), dW, db


def check_against_reference(result, X, Y, W, b, rtol, what):
    value, dW, db = result
    ref_loss, ref_dW, ref_db = reference_loss_grad(X, Y, W, b)
    for name, got, ref in (("loss", value, ref_loss), ("dW", dW, ref_dW), ("db", db, ref_db)):
        ref = np.asarray(ref, np.float64)
        error = np.abs(np.asarray(got, np.float64) - ref).max() / max(np.abs(ref).max(), 1e-300)
        assert error <= rtol, f"{what}: {name} relative error {error:.2e} > {rtol:g}"


def test_kernel_variant_picks_the_kernel_by_shape_and_layout():
    for n_features in (cpu._MAX_FIXED_FEATURES + 1, 32, 257):
        X, Y, _, _ = random_problem(10, n_features, 1, np.float64)
        assert cpu.kernel_variant(X, Y) == cpu.WIDE
        assert cpu.kernel_variant(np.asfortranarray(X), Y) == ()
    X, Y, _, _ = random_problem(10, 3, 2, np.float64)
    assert cpu.kernel_variant(X, Y) == cpu.TILED
    X, Y, _, _ = random_problem(10, 64, cpu.LANES_MIN_OUTPUTS - 1, np.float32)
    assert cpu.kernel_variant(X, Y) == cpu.TILED
    for n_outputs in (cpu.LANES_MIN_OUTPUTS, 8, 16, 17):
        X, Y, _, _ = random_problem(10, 64, n_outputs, np.float32)
        assert cpu.kernel_variant(X, Y) == cpu.LANES
        assert cpu.kernel_variant(np.asfortranarray(X), Y) == ()
    X, Y, _, _ = random_problem(10, 5, 1, np.float32)
    assert cpu.kernel_variant(X, Y) == (0.0,) * 5
    assert cpu.kernel_variant(np.asfortranarray(X), Y) == ()


# Row counts around the tiled kernel's 4-row tiles and _TILE_ROWS-row blocks, and the blocked kernel's blocks.
ROWS = [1, 3, 4, 5, 31, 32, 33, 67, 130]
# Features: 1, around a 16-lane float32 vector, odd; outputs: 1, 2 (one pair), 3 (a pair and one), 8, 16.
SHAPES = [(1, 1), (1, 2), (17, 1), (17, 3), (33, 8), (7, 16), (130, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features, n_outputs", SHAPES)
@pytest.mark.parametrize("kind", [LANES, TILED, BLOCKED])
def test_every_kernel_at_tile_block_and_chunk_boundaries(kind, n_features, n_outputs, dtype):
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    for n_samples in ROWS:
        X, Y, W, b = random_problem(n_samples, n_features, n_outputs, dtype, seed=n_samples)
        variant = variant_of(kind, X, Y)
        for chunk_rows, parallel in ((None, False), (7, False), (33, True)):  # chunks cut tiles and blocks
            result = loss_grad(X, Y, W, b, variant, chunk_rows, parallel)
            check_against_reference(result, X, Y, W, b, rtol, f"{kind} {X.shape}->{n_outputs} chunks {chunk_rows}")


# The lanes kernel: rows around its 8-row tiles (the one-row remainder path) and chunks, features odd and
# around 64, outputs 1..17 (idle lanes in every group but the 8th and 16th; 17: a third group of one).
LANE_ROWS = [1, 7, 8, 9, 15, 17, 63, 1023, 1025]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features", [1, 3, 63, 65, 257])
def test_the_lanes_kernel_at_tile_and_chunk_boundaries_for_1_to_17_outputs(n_features, dtype):
    """All float64 arithmetic: float64 within 1e-12, float32 within 1e-7, the rounding of the loss and
    gradients to float32 (dW and db are X's dtype; the contract asks 1e-6)."""
    rtol = 1e-7 if dtype == np.float32 else 1e-12
    for n_outputs in range(1, 18):
        for n_samples in LANE_ROWS:
            X, Y, W, b = random_problem(n_samples, n_features, n_outputs, dtype, seed=n_samples + n_outputs)
            for chunk_rows, parallel in ((None, False), (13, True)):  # 13: chunks cut the 8-row tiles
                check_against_reference(loss_grad(X, Y, W, b, cpu.LANES, chunk_rows, parallel), X, Y, W, b, rtol,
                                        f"lanes {X.shape}->{n_outputs} chunks {chunk_rows}")


# The one-output wide kernel: rows around its 8-row groups (the one-row remainder path) and chunks; features
# around its 8-lane steps (a masked tail of 1..7 features, or none) and the specialised kernel's limit.
WIDE_ROWS = [1, 7, 8, 9, 15, 16, 17, 63, 130, 1025]
WIDE_FEATURES = [1, 7, 8, 9, 16, 17, 33, 130, 257]


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_wide_kernel_at_group_tail_and_chunk_boundaries(dtype):
    """All float64 arithmetic: float64 within 1e-12, float32 within 1e-7 (the rounding of the float32 loss and
    gradients; the contract asks 1e-6)."""
    rtol = 1e-7 if dtype == np.float32 else 1e-12
    for n_features in WIDE_FEATURES:
        for n_samples in WIDE_ROWS:
            X, Y, W, b = random_problem(n_samples, n_features, 1, dtype, seed=n_samples + n_features)
            for chunk_rows, parallel in ((None, False), (13, True)):  # 13: chunks cut the 8-row groups
                check_against_reference(loss_grad(X, Y, W, b, cpu.WIDE, chunk_rows, parallel), X, Y, W, b, rtol,
                                        f"wide {X.shape} chunks {chunk_rows}")


@pytest.mark.parametrize("bad", ["nan in X", "inf in X", "nan in Y", "inf in W", "nan in the tail"])
def test_the_wide_kernel_keeps_non_finite_values(bad):
    """No nnan/ninf arithmetic: a NaN or Inf in a group, in its feature tail or in the last rows (one at a time)
    makes the loss non-finite."""
    X, Y, W, b = random_problem(101, 19, 1, np.float32, seed=2)
    array, index = {"nan in X": (X, (57, 4)), "inf in X": (X, (3, 18)), "nan in Y": (Y, (12, 0)),
                    "inf in W": (W, (0, 17)), "nan in the tail": (X, (100, 2))}[bad]
    array[index] = np.nan if "nan" in bad else np.inf
    value, _, _ = loss_grad(X, Y, W, b, cpu.WIDE)
    assert not np.isfinite(value)


@pytest.mark.parametrize("bad", ["nan in X", "inf in X", "nan in Y", "inf in W"])
def test_the_lanes_kernel_keeps_non_finite_values(bad):
    """No nnan/ninf arithmetic: a NaN or Inf anywhere makes the loss non-finite, so divergence is seen."""
    X, Y, W, b = random_problem(100, 9, 8, np.float32, seed=2)
    array, index = {"nan in X": (X, (57, 4)), "inf in X": (X, (3, 8)), "nan in Y": (Y, (99, 7)),
                    "inf in W": (W, (5, 0))}[bad]
    array[index] = np.nan if "nan" in bad else np.inf
    value, _, _ = loss_grad(X, Y, W, b, cpu.LANES)
    assert not np.isfinite(value)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features", [1, 5, 8])
def test_the_specialised_kernel_at_chunk_boundaries(n_features, dtype):
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    for n_samples in ROWS:
        X, Y, W, b = random_problem(n_samples, n_features, 1, dtype, seed=n_samples)
        for chunk_rows, parallel in ((None, False), (7, True)):
            result = loss_grad(X, Y, W, b, variant_of(FIXED, X, Y), chunk_rows, parallel)
            check_against_reference(result, X, Y, W, b, rtol, f"fixed {X.shape} chunks {chunk_rows}")


def seed_like(n_samples, n_features, n_outputs, seed=0):
    """Seed 000's kind of data: integer features 10..99 in float32, Y an exact integer combination plus 4."""
    rng = np.random.default_rng(seed)
    X = rng.integers(10, 100, (n_samples, n_features)).astype(np.float32)
    coef = rng.integers(1, 10, (n_outputs, n_features)).astype(np.float32)
    Y = (X.astype(np.float64) @ coef.T.astype(np.float64) + datasets.SEED_BIAS).astype(np.float32)
    return X, Y, coef, rng


@pytest.mark.parametrize("kind", [FIXED, WIDE, TILED, BLOCKED])
@pytest.mark.parametrize("distance", [1e-3, 1e-5, 1e-7])
def test_float32_within_1e5_near_seed_000s_optimum(kind, distance):
    """Seed 000's data (5000x5) at parameters a relative ``distance`` from its optimum (coef, bias 4), where the
    residuals cancel to a small fraction of the predictions: every kernel within 1e-5 of float64."""
    X, y = datasets.seed_linear(random_state=0)
    Y = y.reshape(-1, 1)
    rng = np.random.default_rng(1)
    coef = np.asarray(datasets.SEED_COEF, np.float64)
    W = (coef * (1 + distance * rng.standard_normal(coef.shape))).astype(np.float32).reshape(1, -1)
    b = np.array([datasets.SEED_BIAS * (1 + distance)], np.float32)
    for parallel in (False, True):
        result = loss_grad(X, Y, W, b, variant_of(kind, X, Y), 512, parallel)
        check_against_reference(result, X, Y, W, b, 1e-5, f"{kind}, distance {distance}")


@pytest.mark.parametrize("kind, n_features, n_outputs", [(WIDE, 32, 1), (WIDE, 61, 1), (WIDE, 128, 1),
                                                         (TILED, 32, 1), (TILED, 64, 8), (TILED, 128, 3),
                                                         (LANES, 64, 8), (LANES, 32, 16), (LANES, 128, 5),
                                                         (LANES, 65, 17)])
@pytest.mark.parametrize("distance", [1e-3, 1e-6])
def test_float32_wide_kernels_near_the_optimum_of_wide_seed_like_data(kind, n_features, n_outputs, distance):
    """The same on wide data of seed 000's kind (features 10..99, exact targets): the tiled kernel's float32
    gradient partials keep it within 1e-5 (measured ~5e-8: the rounding of dW to float32), the lanes
    kernel's float64 arithmetic too."""
    X, Y, coef, rng = seed_like(20_000, n_features, n_outputs)
    W = (coef * (1 + distance * rng.standard_normal(coef.shape))).astype(np.float32)
    b = np.full(n_outputs, datasets.SEED_BIAS, np.float32)
    check_against_reference(loss_grad(X, Y, W, b, variant_of(kind, X, Y)), X, Y, W, b, 1e-5,
                            f"{kind} {n_features}->{n_outputs}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", [WIDE, LANES, TILED, BLOCKED])
def test_ill_conditioned_data(kind, dtype):
    """Columns around 1000 with spreads from 1e-2 to 10 and two nearly collinear columns: condition number
    ~1e10 for X^T X. The float64 residuals keep the cancellation; float32 within 1e-6, float64 within 1e-12."""
    rng = np.random.default_rng(3)
    n_samples, n_features = 30_000, 12
    spread = np.logspace(-2, 1, n_features)
    X = 1000.0 + spread * rng.standard_normal((n_samples, n_features))
    X[:, 1] = X[:, 0] + 1e-4 * rng.standard_normal(n_samples)
    n_outputs = 1 if kind == WIDE else 2  # the wide kernel is the one-output kernel
    W_true = rng.standard_normal((n_outputs, n_features))
    Y = X @ W_true.T + 0.01 * rng.standard_normal((n_samples, n_outputs))
    X, Y = X.astype(dtype), Y.astype(dtype)
    W = (W_true * (1 + 1e-4 * rng.standard_normal(W_true.shape))).astype(dtype)
    b = np.zeros(n_outputs, dtype)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    check_against_reference(loss_grad(X, Y, W, b, variant_of(kind, X, Y)), X, Y, W, b, rtol, kind)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, n_outputs", [(TILED, 3), (WIDE, 1)])
def test_kernels_on_data_they_prefetch(kind, n_outputs, dtype):
    """X just over _TILED_PREFETCH_MIN_BYTES takes the prefetching copy of the loops: odd row count (a
    partial tile, block or group), features with a tail, the tiled kernel with an output pair and an unpaired
    output; serial, parallel, 1 and 2 threads."""
    n_features = 61
    n_samples = (cpu._TILED_PREFETCH_MIN_BYTES // (n_features * np.dtype(dtype).itemsize) // 8 + 1) * 8 + 5
    X, Y, W, b = random_problem(n_samples, n_features, n_outputs, dtype, seed=11)
    assert X.nbytes > cpu._TILED_PREFETCH_MIN_BYTES and n_samples % 4 != 0
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    variant = variant_of(kind, X, Y)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = loss_grad(X, Y, W, b, variant, None, True)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = loss_grad(X, Y, W, b, variant, None, True)
    finally:
        numba.set_num_threads(threads)
    serial = loss_grad(X, Y, W, b, variant, None, False)
    check_against_reference(one, X, Y, W, b, rtol, f"{kind}, prefetching")
    for other in (two, serial):
        assert other[0] == one[0]
        np.testing.assert_array_equal(other[1], one[1])
        np.testing.assert_array_equal(other[2], one[2])


def _chunked_reference(X, Y, W, b, rows=1_000_000):
    """reference_loss_grad in float64, a million rows at a time (modest memory at 10,000,000 rows)."""
    W64, b64 = W.astype(np.float64), b.astype(np.float64)
    squares, dW, db = 0.0, np.zeros(W.shape), np.zeros(b.shape)
    for start in range(0, X.shape[0], rows):
        x = X[start:start + rows].astype(np.float64)
        R = x @ W64.T + b64 - Y[start:start + rows]
        squares += float((R * R).sum())
        dW += R.T @ x
        db += R.sum(axis=0)
    n_elements = X.shape[0] * W.shape[0]
    return squares / n_elements, 2 / n_elements * dW, 2 / n_elements * db


@pytest.mark.slow
@pytest.mark.parametrize("variant, W, b", [
    # 2 outputs, 160 MB of float32 (X streams from memory, prefetched): the tiled kernel
    (cpu.TILED, [[2.0, -1.0], [0.5, 1.5]], [3.0, -2.0]),
    # 5 outputs, 240 MB: kernel_variant picks the lanes kernel
    (cpu.LANES, [[2.0, -1.0], [0.5, 1.5], [1.0, 1.0], [-3.0, 0.25], [0.0, 1.0]], [3.0, -2.0, 0.5, 1.0, -1.0]),
], ids=["tiled", "lanes"])
def test_float32_multi_output_within_1e6_at_ten_million_rows(variant, W, b):
    """10,000,000 rows (2 features) with a large mean, the hard case for float32 sums: each multi-output
    kernel's loss and gradients, through ``cpu.loss_grad``, within 1e-6 of float64."""
    n_samples = 10_000_000
    rng = np.random.default_rng(0)
    X = rng.uniform(10, 100, (n_samples, 2)).astype(np.float32)
    W, b = np.array(W, np.float32), np.array(b, np.float32)
    Y = (X @ W.T + b + rng.standard_normal((n_samples, W.shape[0]), dtype=np.float32)).astype(np.float32)
    assert cpu.kernel_variant(X, Y) == variant
    dW, db = np.empty_like(W), np.empty_like(b)
    value = cpu.loss_grad(X, Y, W, b, dW, db)
    ref_loss, ref_dW, ref_db = _chunked_reference(X, Y, W, b)
    assert abs(value - ref_loss) / ref_loss <= 1e-6
    assert_close(dW, ref_dW, np.float32, "reference", "dW")
    assert_close(db, ref_db, np.float32, "reference", "db")


@pytest.mark.slow
def test_float32_one_output_wide_kernel_within_1e6_at_ten_million_rows():
    """10,000,000 rows of 9 features (the fewest the wide kernel is picked for; 360 MB, so X streams and is
    prefetched) with a large mean, the hard case for float32 sums: loss and gradients, through
    ``cpu.loss_grad``, within 1e-6 of float64."""
    n_samples, n_features = 10_000_000, cpu._MAX_FIXED_FEATURES + 1
    rng = np.random.default_rng(0)
    X = rng.uniform(10, 100, (n_samples, n_features)).astype(np.float32)
    W = np.linspace(-2.0, 2.0, n_features, dtype=np.float32).reshape(1, -1)
    b = np.array([3.0], np.float32)
    Y = (X @ W.T + b + rng.standard_normal((n_samples, 1), dtype=np.float32)).astype(np.float32)
    assert cpu.kernel_variant(X, Y) == cpu.WIDE and X.nbytes > cpu._TILED_PREFETCH_MIN_BYTES
    dW, db = np.empty_like(W), np.empty_like(b)
    value = cpu.loss_grad(X, Y, W, b, dW, db)
    ref_loss, ref_dW, ref_db = _chunked_reference(X, Y, W, b)
    assert abs(value - ref_loss) / ref_loss <= 1e-6
    assert_close(dW, ref_dW, np.float32, "reference", "dW")
    assert_close(db, ref_db, np.float32, "reference", "db")


# -- determinism -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, shape", [(FIXED, (5, 1)), (WIDE, (9, 1)), (WIDE, (33, 1)), (TILED, (33, 1)),
                                         (TILED, (64, 8)), (TILED, (7, 3)),
                                         (LANES, (64, 8)), (LANES, (3, 16)), (LANES, (65, 17)),
                                         (BLOCKED, (33, 3))])
def test_bit_identical_for_one_and_two_threads(kind, shape, dtype):
    """Every kernel on the parallel path with numba's pool at 1 and 2 threads, and the serial path: equal bits."""
    n_features, n_outputs = shape
    X, Y, W, b = random_problem(5000, n_features, n_outputs, dtype, seed=7)
    if kind == BLOCKED:
        X = np.asfortranarray(X)
    variant = variant_of(kind, X, Y)
    threads = numba.get_num_threads()
    try:
        results = []
        for count in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(count)
            results.append(loss_grad(X, Y, W, b, variant, 256, True))
    finally:
        numba.set_num_threads(threads)
    results.append(loss_grad(X, Y, W, b, variant, 256, False))
    for other in results[1:]:
        assert other[0] == results[0][0]
        np.testing.assert_array_equal(other[1], results[0][1])
        np.testing.assert_array_equal(other[2], results[0][2])


FIT_VARIANTS = """
import numpy as np
from numba.core.registry import CPUDispatcher
import linreg
from linreg.kernels import cpu
rng = np.random.default_rng(0)
X = rng.standard_normal((3000, 32)).astype(np.float32)
y = X @ rng.standard_normal({coef_shape}).astype(np.float32)
linreg.LinearRegressor(epochs=3, lr=0.01, optimizer="{optimizer}", momentum={momentum}).fit(X, y)
print({{name: len(f.signatures) for name, f in vars(cpu).items() if isinstance(f, CPUDispatcher)}})
"""


def compiled_row_kernels(optimizer, momentum, coef_shape, cache_dir):
    """The number of compiled signatures of each kernels.cpu dispatcher after one full-batch fit in a fresh
    process with an empty cache (a compile shows every kernel the fit reaches)."""
    code = FIT_VARIANTS.format(optimizer=optimizer, momentum=momentum, coef_shape=coef_shape)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)})
    assert result.returncode == 0, result.stderr
    return eval(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("optimizer, momentum", [("sgd", 0.9), ("adam", 0.0)])
def test_the_training_engine_runs_the_wide_kernel(optimizer, momentum, tmp_path):
    """A full-batch momentum or Adam fit on 32 features, one output, streams with the one-output wide kernel,
    and only it (the tiled kernel is reached the same way, by kernel_variant, for 2-4 outputs)."""
    counts = compiled_row_kernels(optimizer, momentum, 32, tmp_path)
    assert counts["_wide_rows"] == 1
    assert (counts["_tiled_rows"] == 0 and counts["_blocked_rows"] == 0 and counts["_fixed_rows"] == 0
            and counts["_lanes_rows"] == 0)


@pytest.mark.parametrize("optimizer, momentum", [("sgd", 0.9), ("adam", 0.0)])
def test_the_training_engine_runs_the_lanes_kernel_for_eight_outputs(optimizer, momentum, tmp_path):
    """Issue 15 item 2: a full-batch momentum or Adam fit with 8 outputs runs the lanes kernel, and only it."""
    counts = compiled_row_kernels(optimizer, momentum, (32, 8), tmp_path)
    assert counts["_lanes_rows"] == 1
    assert (counts["_tiled_rows"] == 0 and counts["_blocked_rows"] == 0 and counts["_fixed_rows"] == 0
            and counts["_wide_rows"] == 0)
