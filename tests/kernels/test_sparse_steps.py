"""Lazy sparse mini-batch steps (``cpu_train._apply_step_at``, ``cpu_sparse._batch_loss_grad`` with lazy work):
where they are chosen (``cpu_train.lazy_steps_exact``), that they take the dense rule's trajectory bit for bit
(parameters, loss history, what a divergence restores, early stopping), and that they never touch the
features outside the batch."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from linreg import LinearRegressor
from linreg import options as linreg_options
from linreg import sparse as linreg_sparse
from linreg._engine import EngineRun, EngineState
from linreg.kernels import cpu_sparse

N_SAMPLES, N_FEATURES = 600, 300


def sparse_data(dtype=np.float64, n_outputs=1, seed=0):
    """A CSR with ~3 non-zeros a row and features 0 and N_FEATURES - 1 in no row."""
    rng = np.random.default_rng(seed)
    X = sp.random(N_SAMPLES, N_FEATURES, density=0.01, format="csr", random_state=seed, dtype=np.float64)
    X = sp.csr_matrix(X[:, 1:-1])
    X = sp.hstack([sp.csr_matrix((N_SAMPLES, 1)), X, sp.csr_matrix((N_SAMPLES, 1))], format="csr")
    X.data = (X.data * 2 - 1).astype(dtype)
    Y = (X @ rng.standard_normal((N_FEATURES, n_outputs)) + 0.3).astype(dtype)
    return X, Y


def engine_run(X, Y, lazy=None, weights=None, rows=None, val_rows=None, lr=0.05, epochs=3, **options):
    """An ``EngineRun`` on sparse X from zeros; ``lazy`` False forces the dense step rule (the reference)."""
    source = linreg_sparse.SparseSource(X, Y, weights)
    spec = linreg_options.make_spec({**linreg_options.DEFAULTS, "lr": lr, "standardize": False, "epochs": epochs,
                                     "random_state": 0, **options})
    state = EngineState.raw(np.zeros((Y.shape[1], N_FEATURES)), np.zeros(Y.shape[1]))
    run = EngineRun(source.X, source.Y, spec, state, lr, epochs, weights=weights, rows=rows, val_rows=val_rows,
                    seed=0)
    if lazy is False:
        run.work = cpu_sparse.engine_work(source.X, Y.shape[1], run.work[1].shape[0], lazy=False)
    return run


def trajectory(run, epochs=3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = run.advance(epochs)
    a = run.state.arrays
    return {"done": done, "W": a.W.copy(), "b": a.b.copy(), "prev_W": a.prev_W.copy(), "prev_b": a.prev_b.copy(),
            "best_W": a.best_W.copy(), "counters": a.counters.copy(), "loss": run.loss_history.copy(),
            "val": run.val_history.copy()}


def assert_same_bits(got, expected):
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch_size", [1, 7, 32, 256])  # 256 of 600 rows: the column pass (all features)
def test_lazy_steps_take_the_dense_rules_trajectory_bit_for_bit(dtype, batch_size):
    X, Y = sparse_data(dtype)
    lazy = engine_run(X, Y, batch_size=batch_size)
    assert lazy.lazy_steps
    got = trajectory(lazy)
    expected = trajectory(engine_run(X, Y, lazy=False, batch_size=batch_size))
    assert got["done"] == 3 and np.all(np.isfinite(got["loss"]))
    assert not np.array_equal(got["W"], got["prev_W"])  # it did move
    assert_same_bits(got, expected)


def test_weighted_multi_output_in_order_and_a_second_block_of_epochs_are_bit_identical():
    X, Y = sparse_data(n_outputs=2, seed=1)
    weights = np.random.default_rng(2).uniform(0, 2, N_SAMPLES)
    weights[40:80] = 0.0  # whole batches of weight 0: no step, nothing listed
    runs = [engine_run(X, Y, lazy=lazy, weights=weights, batch_size=8, shuffle=False, epochs=4)
            for lazy in (None, False)]
    first = [trajectory(run, 2) for run in runs]
    assert_same_bits(first[0], first[1])
    assert_same_bits(trajectory(runs[0], 2), trajectory(runs[1], 2))  # the next block starts from the state


def test_a_run_resumed_from_its_state_dict_continues_bit_for_bit():
    X, Y = sparse_data(seed=7)
    whole = engine_run(X, Y, batch_size=8, epochs=4)
    trajectory(whole, 4)
    first = engine_run(X, Y, batch_size=8, epochs=4)
    trajectory(first, 2)
    resumed = engine_run(X, Y, batch_size=8, epochs=4)
    resumed.load_state_dict(first.state_dict())
    trajectory(resumed, 2)
    for name in ("W", "b", "prev_W", "prev_b", "counters"):
        np.testing.assert_array_equal(getattr(resumed.state.arrays, name), getattr(whole.state.arrays, name), name)
    np.testing.assert_array_equal(resumed.loss_history, whole.loss_history)


def test_early_stopping_keeps_and_restores_the_same_best_parameters():
    X, Y = sparse_data(seed=3)
    val_rows = np.arange(500, N_SAMPLES, dtype=np.int64)
    rows = np.arange(500, dtype=np.int64)
    got, expected = [], []
    for lazy, out in ((None, got), (False, expected)):
        run = engine_run(X, Y, lazy=lazy, rows=rows, val_rows=val_rows, batch_size=4, early_stopping=True,
                         tol=10.0, n_iter_no_change=2, epochs=20)
        out.append(trajectory(run, 20))
    assert got[0]["done"] < 20  # it stopped early (and restored the best parameters)
    assert_same_bits(got[0], expected[0])


def test_a_divergence_restores_the_same_parameters():
    X, Y = sparse_data(seed=4)
    got = trajectory(engine_run(X, Y, batch_size=2, lr=40.0, epochs=5), 5)
    expected = trajectory(engine_run(X, Y, lazy=False, batch_size=2, lr=40.0, epochs=5), 5)
    assert got["done"] < 5  # diverged
    assert_same_bits(got, expected)
    np.testing.assert_array_equal(got["W"], got["prev_W"])  # the last finite parameters


def test_lazy_steps_never_write_the_gradient_of_features_outside_the_batch():
    X, Y = sparse_data(seed=5)
    run = engine_run(X, Y, batch_size=16)
    dW = run.scratch[4]
    dW[:] = np.nan  # an O(n_features) pass of any kind (zeroing, scaling, stepping) would overwrite these
    trajectory(run, 2)
    assert np.isnan(dW[0, 0]) and np.isnan(dW[0, -1])  # features 0 and n_features - 1: in no row
    assert np.all(run.state.arrays.W[:, [0, -1]] == 0.0)
    assert np.isfinite(dW[0, 1:-1]).any()


@pytest.mark.parametrize("options, lazy", [
    ({"batch_size": 32}, True),
    ({"batch_size": 32, "penalty": "l2", "alpha": 0.0}, True),  # no penalty in effect
    ({"batch_size": 32, "momentum": 0.9}, False),
    ({"batch_size": 32, "weight_decay": 0.01}, False),
    ({"batch_size": 32, "penalty": "l2", "alpha": 1e-4}, False),
    ({"batch_size": 32, "penalty": "l1", "alpha": 1e-4}, False),
    ({"batch_size": 32, "optimizer": "adam", "lr": 1e-3}, False),
    ({}, False),  # full batch: every step moves every feature anyway
])
def test_lazy_steps_are_chosen_only_where_untouched_weights_provably_stay(options, lazy):
    X, Y = sparse_data()
    assert engine_run(X, Y, **options).lazy_steps is lazy


def test_standardized_runs_keep_the_dense_rule():
    X, Y = sparse_data()
    source = linreg_sparse.SparseSource(X, Y, None)
    spec = linreg_options.make_spec({**linreg_options.DEFAULTS, "lr": 0.05, "standardize": True, "epochs": 2,
                                     "batch_size": 32})
    state = EngineState(np.zeros((1, N_FEATURES)), np.zeros(1), np.zeros(N_FEATURES), np.ones(N_FEATURES), True)
    assert not EngineRun(source.X, source.Y, spec, state, 0.05, 2).lazy_steps


def test_the_estimators_lazy_sparse_fit_equals_the_dense_fit():
    X, Y = sparse_data(seed=6)
    options = {"batch_size": 16, "standardize": False, "lr": 0.05, "epochs": 6, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = LinearRegressor(**options).fit(X, Y[:, 0])
        expected = LinearRegressor(**options).fit(X.toarray(), Y[:, 0])
    np.testing.assert_allclose(got.coef_, expected.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.intercept_, expected.intercept_, rtol=1e-10)
    np.testing.assert_allclose(got.loss_history_, expected.loss_history_, rtol=1e-10)
