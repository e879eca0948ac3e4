"""kernels.cpu against the torch autograd oracle and a float64 NumPy reference.

Tolerances come from linreg.testing (one place, with their reasons).
"""

import numpy as np
import pytest
from helpers import random_problem, reference_loss_grad
from hypothesis import given, settings
from hypothesis import strategies as st

from linreg import oracle
from linreg.kernels import cpu
from linreg.testing import assert_close

DTYPES = [np.float32, np.float64]
SMALL_CHUNK = 7  # patched chunk size: many chunks on tiny data

# (n_samples, n_features, n_outputs): 1x1x1, n_features=1, n_outputs 1..4, and
# n_samples just below, at and above one and several patched chunks.
SHAPES = [
    (1, 1, 1), (1, 5, 3), (6, 1, 1), (7, 3, 2), (8, 2, 4), (13, 4, 1), (14, 1, 3), (15, 5, 2),
    (3 * SMALL_CHUNK + 1, 3, 1), (200, 7, 4),
]


@pytest.fixture(params=["serial", "parallel"])
def path(request, monkeypatch):
    """Run each test on the serial and the parallel path, with small chunks."""
    monkeypatch.setattr(cpu, "CHUNK_ROWS", SMALL_CHUNK)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_WORK", 0 if request.param == "parallel" else 1 << 62)
    return request.param


def call_loss_grad(X, Y, W, b):
    dW, db = np.empty_like(W), np.empty_like(b)
    value = cpu.loss_grad(X, Y, W, b, dW, db)
    return value, dW, db


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_loss_grad_against_reference_and_oracle(shape, dtype, path):
    X, Y, W, b = random_problem(*shape, dtype)
    value, dW, db = call_loss_grad(X, Y, W, b)
    assert dW.dtype == db.dtype == dtype
    for name, ref, kind in [("reference", reference_loss_grad(X, Y, W, b), "reference"),
                            ("torch", oracle.loss_grad(X, Y, W, b), "oracle")]:
        ref_loss, ref_dW, ref_db = ref
        assert_close(value, ref_loss, dtype, kind, f"loss vs {name}")
        assert_close(dW, ref_dW, dtype, kind, f"dW vs {name}")
        assert_close(db, ref_db, dtype, kind, f"db vs {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_loss_and_predict_against_reference(shape, dtype, path):
    X, Y, W, b = random_problem(*shape, dtype)
    ref_loss, _, _ = reference_loss_grad(X, Y, W, b)
    assert_close(cpu.loss(X, Y, W, b), ref_loss, dtype, "reference", "loss")
    assert_close(cpu.loss(X, Y, W, b), oracle.loss_grad(X, Y, W, b)[0], dtype, "oracle", "loss vs torch")
    P = cpu.predict(X, W, b)
    assert P.dtype == dtype and P.shape == (shape[0], shape[2])
    assert_close(P, X.astype(np.float64) @ W.astype(np.float64).T + b, dtype, "reference", "predict")


@pytest.mark.parametrize("n_samples", [cpu.CHUNK_ROWS - 1, cpu.CHUNK_ROWS, cpu.CHUNK_ROWS + 1,
                                       2 * cpu.CHUNK_ROWS + 1])
def test_default_chunk_boundaries(n_samples):
    X, Y, W, b = random_problem(n_samples, 3, 2, np.float32)
    ref_loss, ref_dW, ref_db = reference_loss_grad(X, Y, W, b)
    value, dW, db = call_loss_grad(X, Y, W, b)
    assert_close(value, ref_loss, np.float32, "reference", "loss")
    assert_close(dW, ref_dW, np.float32, "reference", "dW")
    assert_close(db, ref_db, np.float32, "reference", "db")


def test_chunking_depends_on_n_samples_only():
    assert cpu.chunking(1) == (cpu.CHUNK_ROWS, 1)
    assert cpu.chunking(cpu.CHUNK_ROWS + 1) == (cpu.CHUNK_ROWS, 2)
    rows, n_chunks = cpu.chunking(10**9)
    assert n_chunks <= cpu.MAX_CHUNKS and rows * n_chunks >= 10**9
    assert cpu.chunking(100, chunk_rows=7, max_chunks=4) == (25, 4)


def test_max_chunks_caps_partials(monkeypatch):
    """With MAX_CHUNKS reached, chunks grow instead of multiplying; results unchanged."""
    monkeypatch.setattr(cpu, "CHUNK_ROWS", 2)
    monkeypatch.setattr(cpu, "MAX_CHUNKS", 3)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_WORK", 0)
    X, Y, W, b = random_problem(50, 3, 2, np.float64)
    value, dW, db = call_loss_grad(X, Y, W, b)
    ref_loss, ref_dW, ref_db = reference_loss_grad(X, Y, W, b)
    assert_close(value, ref_loss, np.float64, "reference", "loss")
    assert_close(dW, ref_dW, np.float64, "reference", "dW")


@pytest.mark.parametrize("dtype", DTYPES)
def test_serial_and_parallel_paths_are_bit_identical(dtype, monkeypatch):
    monkeypatch.setattr(cpu, "CHUNK_ROWS", 64)
    X, Y, W, b = random_problem(1000, 6, 3, dtype)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_WORK", 1 << 62)
    serial = call_loss_grad(X, Y, W, b)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_WORK", 0)
    parallel = call_loss_grad(X, Y, W, b)
    assert serial[0] == parallel[0]
    np.testing.assert_array_equal(serial[1], parallel[1])
    np.testing.assert_array_equal(serial[2], parallel[2])


@pytest.mark.parametrize("layout", ["fortran", "strided_rows", "strided_columns"])
def test_any_memory_layout(layout, path):
    X, Y, W, b = random_problem(60, 8, 2, np.float64)
    if layout == "fortran":
        X, Y = np.asfortranarray(X), np.asfortranarray(Y)
    elif layout == "strided_rows":
        X, Y = X[::2], Y[::2]
    else:
        X, W = X[:, ::2], W[:, ::2]
    assert not X.flags.c_contiguous
    value, dW, db = call_loss_grad(X, Y, W, b)
    ref_loss, ref_dW, ref_db = reference_loss_grad(X, Y, W, b)
    assert_close(value, ref_loss, np.float64, "reference", "loss")
    assert_close(dW, ref_dW, np.float64, "reference", "dW")
    assert_close(db, ref_db, np.float64, "reference", "db")
    assert_close(cpu.predict(X, W, b), X @ W.T + b, np.float64, "reference", "predict")


def test_inputs_are_not_modified(path):
    X, Y, W, b = random_problem(40, 3, 2, np.float32)
    copies = [a.copy() for a in (X, Y, W, b)]
    call_loss_grad(X, Y, W, b)
    cpu.loss(X, Y, W, b)
    cpu.predict(X, W, b)
    for original, copy in zip((X, Y, W, b), copies, strict=True):
        np.testing.assert_array_equal(original, copy)


@settings(max_examples=40, deadline=None)
@given(n_samples=st.integers(1, 40), n_features=st.integers(1, 9), n_outputs=st.integers(1, 4),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_property_matches_reference(n_samples, n_features, n_outputs, dtype, seed):
    X, Y, W, b = random_problem(n_samples, n_features, n_outputs, dtype, seed)
    value, dW, db = call_loss_grad(X, Y, W, b)
    ref_loss, ref_dW, ref_db = reference_loss_grad(X, Y, W, b)
    assert_close(value, ref_loss, dtype, "reference", "loss")
    assert_close(dW, ref_dW, dtype, "reference", "dW")
    assert_close(db, ref_db, dtype, "reference", "db")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gd_loop_follows_the_seed_loop(dtype):
    """The compiled loop's loss history and parameters equal the seeds' torch loop's."""
    X, Y, W, b = random_problem(300, 4, 2, dtype)
    lr = 0.05
    history = np.zeros(60)
    W_ours, b_ours = W.copy(), b.copy()
    assert cpu.gd(X, Y, W_ours, b_ours, lr, history) == 60
    W_torch, b_torch, history_torch = oracle.seed_loop(X, Y, W, b, lr=lr, epochs=60)
    assert_close(history, history_torch, dtype, "trajectory", "loss history")
    assert_close(W_ours, W_torch, dtype, "trajectory", "W")
    assert_close(b_ours, b_torch, dtype, "trajectory", "b")


def test_gd_in_blocks_equals_gd_at_once():
    X, Y, W, b = random_problem(100, 3, 1, np.float32)
    once_W, once_b, once_history = W.copy(), b.copy(), np.zeros(30)
    cpu.gd(X, Y, once_W, once_b, 0.01, once_history)
    block_W, block_b, block_history = W.copy(), b.copy(), np.zeros(30)
    work = cpu.Workspace(100, 3, 1, np.float32)
    for start in range(0, 30, 7):
        cpu.gd(X, Y, block_W, block_b, 0.01, block_history, start, min(start + 7, 30), work)
    np.testing.assert_array_equal(once_history, block_history)
    np.testing.assert_array_equal(once_W, block_W)


@pytest.mark.parametrize("blocks", [1, 3])
def test_gd_stops_at_divergence_and_keeps_last_finite_parameters(blocks):
    """Non-finite or EXPLOSION_FACTOR x the first loss: stop, restore the previous epoch's parameters,
    also when the divergence falls on the first epoch of a later call (the loop runs in blocks)."""
    X, Y, W, b = random_problem(50, 3, 1, np.float64)
    X *= 30
    history = np.zeros(1000)
    work = cpu.Workspace(50, 3, 1, np.float64)
    done = 0
    for stop in np.linspace(0, 1000, blocks + 1).astype(int)[1:] if blocks > 1 else [1000]:
        done += cpu.gd(X, Y, W, b, 0.03, history, done, stop, work)
        if done < stop:
            break
    assert 1 < done < 1000
    assert np.isfinite(history[:done]).all()
    assert not np.isfinite(history[done]) or history[done] > cpu.EXPLOSION_FACTOR * history[0]
    assert np.isfinite(W).all() and np.isfinite(b).all()
    # The kept parameters are those whose loss is the last one accepted.
    assert cpu.loss(X, Y, W, b) == pytest.approx(history[done - 1], rel=1e-12)


def test_gd_divergence_at_the_start_of_a_later_call_restores_too():
    X, Y, W, b = random_problem(50, 3, 1, np.float64)
    X *= 30
    history = np.zeros(100)
    probe_W, probe_b = W.copy(), b.copy()
    done = cpu.gd(X, Y, probe_W, probe_b, 0.03, history.copy())
    work = cpu.Workspace(50, 3, 1, np.float64)
    cpu.gd(X, Y, W, b, 0.03, history, 0, done, work)  # stop just before the divergence
    assert cpu.gd(X, Y, W, b, 0.03, history, done, 100, work) == 0
    np.testing.assert_array_equal(W, probe_W)
    np.testing.assert_array_equal(b, probe_b)


@pytest.mark.parametrize("call, error, match", [
    (lambda X, Y, W, b: cpu.loss(X.astype(np.float32), Y, W, b), TypeError, "Y must have X's dtype"),
    (lambda X, Y, W, b: cpu.loss(X.astype(np.int64), Y, W, b), TypeError, "float32 or float64"),
    (lambda X, Y, W, b: cpu.loss(X[:, :2], Y, W, b), ValueError, "W must have shape"),
    (lambda X, Y, W, b: cpu.loss(X, Y[:5], W, b), ValueError, "Y must have shape"),
    (lambda X, Y, W, b: cpu.loss(X, Y, W, b[:1]), ValueError, "b must have shape"),
    (lambda X, Y, W, b: cpu.loss(X[0], Y, W, b), ValueError, "X must be 2-D"),
    (lambda X, Y, W, b: cpu.loss(X[:0], Y[:0], W, b), ValueError, "n_samples"),
    (lambda X, Y, W, b: cpu.loss(X.tolist(), Y, W, b), TypeError, "numpy.ndarray"),
    (lambda X, Y, W, b: cpu.predict(X, W, b, out=np.empty((3, 3))), ValueError, "out must be"),
    (lambda X, Y, W, b: cpu.loss_grad(X, Y, W, b, np.empty(3), np.empty(2)), ValueError, "dW must be"),
    (lambda X, Y, W, b: cpu.gd(X, Y, W, b, 0.1, np.zeros(3, np.float32)), TypeError, "loss_history"),
])
def test_bad_input(call, error, match):
    X, Y, W, b = random_problem(10, 3, 2, np.float64)
    with pytest.raises(error, match=match):
        call(X, Y, W, b)
