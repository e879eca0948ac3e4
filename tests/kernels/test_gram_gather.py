"""The Gram pass (kernels/cpu_gram.py) and the mini-batch gather (kernels/cpu_gather.py) against float64
NumPy, on shapes around their chunk and block boundaries; their thread-count bit-identity; the exact
solver's float32 accuracy at 2,000,000 rows and its fused finiteness check."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from linreg import LinearRegressor
from linreg.kernels import cpu, cpu_gather, cpu_gram, cpu_train

DTYPES = [np.float32, np.float64]


def reference_gram(X, Y, rows=None, weights=None):
    """G = A^T S A, C = A^T S Y, yy = diag(Y^T S Y) for A = [X 1], float64 NumPy."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    s = np.ones(len(X)) if weights is None else np.asarray(weights, np.float64)
    if rows is not None:
        X, Y, s = X[rows], Y[rows], s[rows]
    A = np.hstack([X, np.ones((len(X), 1))])
    return A.T @ (s[:, None] * A), A.T @ (s[:, None] * Y), (s[:, None] * Y * Y).sum(axis=0)


def assert_statistics_close(got, expected, rtol=1e-12):
    for name, g, e in zip(("G", "C", "yy"), got, expected, strict=True):
        assert g.shape == e.shape, name
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(g, e, rtol=0, atol=rtol * scale, err_msg=name)


@pytest.fixture(params=["serial", "parallel"])
def small_chunks(request, monkeypatch):
    """Chunks of 16 rows (so blocks of 16: many chunk and block boundaries), walked serially or in prange."""
    monkeypatch.setattr(cpu, "CHUNK_ROWS", 16)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_WORK", 0 if request.param == "parallel" else 1 << 62)
    return request.param


# -- the Gram pass ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_samples,n_features,n_outputs", [
    (1, 1, 1), (2, 1, 1), (5, 3, 2), (15, 2, 1), (16, 4, 3), (17, 5, 1), (33, 7, 2), (200, 6, 8), (64, 13, 1),
])
@pytest.mark.parametrize("subset", ["all", "rows"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gram_equals_numpy(small_chunks, dtype, n_samples, n_features, n_outputs, subset, weighted):
    rng = np.random.default_rng(n_samples * 31 + n_features)
    X = (rng.standard_normal((n_samples, n_features)) * 3 + 2).astype(dtype)
    Y = (rng.standard_normal((n_samples, n_outputs)) - 1).astype(dtype)
    weights = rng.uniform(0, 2, n_samples) if weighted else None
    rows = rng.permutation(n_samples)[: max(1, (2 * n_samples) // 3)].astype(np.int64) if subset == "rows" else None
    assert_statistics_close(cpu_train.gram(X, Y, rows, weights), reference_gram(X, Y, rows, weights))


@pytest.mark.parametrize("n_samples", [cpu_gram.BLOCK_ROWS - 1, cpu_gram.BLOCK_ROWS, cpu_gram.BLOCK_ROWS + 1,
                                       cpu.CHUNK_ROWS - 1, cpu.CHUNK_ROWS + 1, 3 * cpu.CHUNK_ROWS + 5])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gram_at_the_default_block_and_chunk_boundaries(n_samples, dtype):
    rng = np.random.default_rng(n_samples)
    X = rng.standard_normal((n_samples, 32)).astype(dtype)
    Y = rng.standard_normal((n_samples, 1)).astype(dtype)
    assert_statistics_close(cpu_train.gram(X, Y), reference_gram(X, Y))


def test_gram_of_data_far_from_zero_and_non_contiguous_views():
    """The shift is added back exactly; strided and Fortran-ordered inputs read the same rows."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((3000, 10)) * rng.uniform(0.1, 5, 10) + 1000.0
    X = np.asfortranarray(base[:, ::2])
    Y = base[:, 1:3]  # a strided view
    assert_statistics_close(cpu_train.gram(X, Y), reference_gram(X, Y))
    G, C, yy, shift_x, shift_y = cpu_gram.centred_gram(X, Y)
    np.testing.assert_allclose(shift_x, X[:cpu_gram.BLOCK_ROWS].mean(axis=0))
    assert_statistics_close((G, C, yy), reference_gram(X - shift_x, Y - shift_y))


def test_non_finite_input_propagates_into_the_statistics():
    """What the exact solver's fused check relies on: NaN or Inf anywhere makes the statistics non-finite."""
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((300, 4)), rng.standard_normal((300, 2))
    weights = rng.uniform(0.5, 1, 300)
    weights[123] = 0.0
    for value in (np.nan, np.inf, -np.inf):
        for target, where in ((X, (123, 2)), (X, (0, 0)), (Y, (299, 1))):
            bad = target.copy()
            bad[where] = value
            args = (bad, Y) if target is X else (X, bad)
            G, C, yy, _, _ = cpu_gram.centred_gram(*args, None, weights)
            assert not (np.isfinite(G).all() and np.isfinite(C).all() and np.isfinite(yy).all())


# -- the exact solver around it ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_float32_normal_solver_is_exact_at_2e6_rows(offset):
    """float32 data, 2,000,000 rows: coefficients within 1e-6 (each, relative) of float64 lstsq on [1 X].

    With features around 1000 the uncentred normal equations lost ~5 digits in the solve
    (6.6e-6 measured on 32 features); the statistics about a shift do not.
    """
    n, f = 2_000_000, 8
    rng = np.random.default_rng(5)
    X = (rng.standard_normal((n, f)) * rng.uniform(0.5, 4, f) + offset).astype(np.float32)
    w = rng.standard_normal(f)
    y = (X.astype(np.float64) @ w + 0.7 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    model = LinearRegressor(solver="normal").fit(X, y)
    assert model.coef_.dtype == np.float32
    A = np.empty((n, f + 1))
    A[:, 0] = 1.0
    A[:, 1:] = X
    theta = np.linalg.lstsq(A, y.astype(np.float64), rcond=None)[0]
    got = np.concatenate([[model.intercept_], model.coef_]).astype(np.float64)
    np.testing.assert_allclose(got, theta, rtol=1e-6, atol=0)


@pytest.mark.parametrize("options", [{"solver": "normal"}, {"solver": "gram", "epochs": 3},
                                     {"solver": "gram", "epochs": 3, "early_stopping": True, "tol": 1e-3,
                                      "standardize": True}], ids=["normal", "gram", "gram-early-stopping"])
@pytest.mark.parametrize("one_output", [True, False])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_gram_solvers_name_the_first_bad_entry_without_a_separate_scan(value, one_output, options):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((500, 3)).astype(np.float32)
    y = rng.standard_normal(500 if one_output else (500, 2)).astype(np.float32)
    bad_X = X.copy()
    bad_X[321, 2] = value
    bad_X[400, 0] = value
    with pytest.raises(ValueError, match=rf"X contains {value} at row 321, column 2"):
        LinearRegressor(**options).fit(bad_X, y)
    bad_y = y.copy()
    bad_y[77] = value
    where = "row 77" + ("" if one_output else ", column 0")
    with pytest.raises(ValueError, match=rf"y contains {value} at {where};"):
        LinearRegressor(**options).fit(X, bad_y)
    with pytest.raises(ValueError, match=r"X contains inf at row 321, column 2"):  # a zero weight does not hide it
        weights = np.ones(500)
        weights[321] = 0.0
        bad_X[321, 2] = np.inf
        LinearRegressor(**options).fit(bad_X, y, sample_weight=weights)


@pytest.mark.parametrize("solver", ["normal", "gram"])
def test_gram_solvers_skip_the_finiteness_scan(monkeypatch, solver):
    """The fused check: valid data is never scanned for NaN/Inf by the validation module."""
    from linreg import _validation

    scanned = []
    original = _validation.check_finite
    monkeypatch.setattr(_validation, "check_finite", lambda array, name: (scanned.append(name), original(array, name)))
    rng = np.random.default_rng(7)
    X = rng.standard_normal((400, 3))
    y = X @ [1.0, -2.0, 0.5] + 3.0
    model = LinearRegressor(solver=solver, lr="auto", epochs=300).fit(X, y)
    np.testing.assert_allclose(model.coef_, [1.0, -2.0, 0.5], rtol=1e-6)
    assert "X" not in scanned and "y" not in scanned
    LinearRegressor(epochs=2).fit(X, y)  # the other solvers still scan first
    assert "X" in scanned


# -- the mini-batch gather --------------------------------------------------------------------


def reference_batch(X, Y, W, b, positions, weights=None):
    X, Y, W, b = (np.asarray(a, np.float64) for a in (X, Y, W, b))
    s = np.ones(len(X)) if weights is None else np.asarray(weights, np.float64)
    x, y, s = X[positions], Y[positions], s[positions]
    R = x @ W.T + b - y
    return (s[:, None] * R * R).sum(), s.sum(), (s[:, None] * R).T @ x, (s[:, None] * R).sum(axis=0)


def gather(X, Y, W, b, rows, weights, start, stop):
    n = stop - start
    chunk_rows, n_chunks = cpu.chunking(n)
    parallel = n * W.size >= cpu.PARALLEL_MIN_WORK
    n_outputs, n_features = W.shape
    dW, db = np.empty((n_outputs, n_features)), np.empty(n_outputs)
    scratch = max(n_outputs, int(cpu._scratch_size(n_features, n_outputs)))
    loss, weight = cpu_train._gather_loss_grad(
        X, Y, W, b, rows, weights, start, stop, dW, db, parallel, chunk_rows, n_chunks,
        np.zeros((n_chunks, scratch)), np.zeros((n_chunks, n_outputs, n_features)), np.zeros((n_chunks, n_outputs)),
        np.zeros(n_chunks), np.zeros(n_chunks))
    scale = n_outputs * weight
    return loss * scale, weight, dW * scale / 2, db * scale / 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features,n_outputs", [(1, 1), (3, 2), (32, 1), (13, 4)])
@pytest.mark.parametrize("layout", ["shuffled", "in-order", "fortran"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gather_equals_numpy_on_batches_around_block_boundaries(small_chunks, dtype, n_features, n_outputs,
                                                                layout, weighted):
    n = 300
    rng = np.random.default_rng(n_features * 7 + n_outputs)
    X = rng.standard_normal((n, n_features)).astype(dtype)
    Y = rng.standard_normal((n, n_outputs)).astype(dtype)
    if layout == "fortran":
        X, Y = np.asfortranarray(X), np.asfortranarray(Y)
    W = rng.standard_normal((n_outputs, n_features)).astype(dtype)
    b = rng.standard_normal(n_outputs).astype(dtype)
    weights = rng.uniform(0, 2, n) if weighted else np.empty(0)
    order = cpu_train.epoch_order(11, 2, n) if layout != "in-order" else np.empty(0, np.int64)
    block = cpu._block_rows(n_features)
    start = 0
    # The gather takes rows 4 at a time (a tail of 1-3 repeats a row with weight 0); chunks, blocks, odd sizes.
    for size in (1, 2, 3, 4, 5, 7, 8, 9, block - 1, block, block + 1, 2 * block + 3, 31):
        stop = min(start + size, n)
        positions = order[start:stop] if order.shape[0] else np.arange(start, stop)
        got = gather(X, Y, W, b, order, weights, start, stop)
        expected = reference_batch(X, Y, W, b, positions, weights if weighted else None)
        for name, g, e in zip(("loss", "weight", "dW", "db"), got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(e).max())),
                                       err_msg=f"{name} of positions [{start}, {stop})")
        start = stop


@pytest.mark.parametrize("prefetch", [True, False])
def test_gather_sum_reads_every_row_in_order(prefetch):
    rng = np.random.default_rng(8)
    X, Y = rng.standard_normal((1000, 5)).astype(np.float32), rng.standard_normal((1000, 2)).astype(np.float32)
    order = cpu_train.epoch_order(1, 0, 1000)[:700]
    expected = X[order].astype(np.float64).sum() + Y[order].astype(np.float64).sum()
    assert cpu_gather.gather_sum(X, Y, order, prefetch) == pytest.approx(expected, rel=1e-12)


# -- thread-count bit-identity (fresh processes) ---------------------------------------------

KERNELS_IN_A_FRESH_PROCESS = """
import json, numpy as np
from linreg.kernels import cpu, cpu_gram, cpu_train
rng = np.random.default_rng(0)
X = (rng.standard_normal((30000, 21)) + 5).astype(np.float32)
Y = rng.standard_normal((30000, 2)).astype(np.float32)
weights = rng.uniform(0, 2, 30000)
rows = rng.permutation(30000)[:25000].astype(np.int64)
out = {}
for name, args in (("plain", ()), ("rows+weights", (rows, weights))):
    out["gram " + name] = [a.tobytes().hex() for a in cpu_gram.centred_gram(X, Y, *args)]
W = rng.standard_normal((2, 21)).astype(np.float32)
b = rng.standard_normal(2).astype(np.float32)
order = cpu_train.epoch_order(3, 1, 30000)
n = 20000  # one big batch: the parallel path of _gather_loss_grad
chunk_rows, n_chunks = cpu.chunking(n)
assert n * W.size >= cpu.PARALLEL_MIN_WORK
dW, db = np.empty((2, 21)), np.empty(2)
loss, weight = cpu_train._gather_loss_grad(X, Y, W, b, order, weights, 5000, 5000 + n, dW, db, True, chunk_rows,
    n_chunks, np.zeros((n_chunks, 4000)), np.zeros((n_chunks, 2, 21)), np.zeros((n_chunks, 2)), np.zeros(n_chunks),
    np.zeros(n_chunks))
out["gather"] = [np.float64(loss).tobytes().hex(), dW.tobytes().hex(), db.tobytes().hex()]
print(json.dumps(out))
"""


def test_gram_and_gather_are_bit_identical_for_one_and_two_threads():
    outputs = []
    for threads in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", KERNELS_IN_A_FRESH_PROCESS], capture_output=True, text=True,
                                timeout=300, env={**os.environ, "NUMBA_NUM_THREADS": threads})
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1]
