"""backend="cuda": whole fits against the CPU backend, what crosses the bus, device inputs and their validation.

A CUDA fit must reproduce the CPU fit's loss history and parameters within
linreg.testing's "trajectory" tolerance: both accumulate in float64 and
update in the data dtype; only the order of the float64 sums differs.
"""

import numpy as np
import pytest
from cuda_helpers import InterfaceOnly, data_pointer
from helpers import random_problem
from numba import cuda

from linreg import LinearRegressor, datasets
from linreg.cuda_backend import CudaBackend, check_device_X, check_device_X_y
from linreg.estimator import DivergenceError
from linreg.kernels import cuda as cuda_kernels
from linreg.testing import assert_close

EPOCHS = 12


def problem(name: str, dtype):
    """(X, y, estimator options): seed 000's and seed 003's problems and a wide one for the tiled path."""
    if name == "seed000":
        X, y = datasets.seed_linear(n_samples=13, random_state=0)
        return X.astype(dtype), y.astype(dtype), {"lr": 1e-5}
    if name == "crops":
        X, y = datasets.crops()
        return X.astype(dtype), y.astype(dtype), {"lr": 1e-5, "init": "randn", "random_state": 3}
    X, Y, _, _ = random_problem(14, 9, 3, dtype, seed=2)
    return X, Y, {"lr": 0.05}


def fit(backend: str, X, y, **options) -> LinearRegressor:
    return LinearRegressor(backend=backend, epochs=options.pop("epochs", EPOCHS), **options).fit(X, y)


def assert_same_fit(actual: LinearRegressor, expected: LinearRegressor, dtype, kind="trajectory"):
    assert actual.n_iter_ == expected.n_iter_
    assert actual.loss_history_.dtype == np.float64
    assert_close(actual.loss_history_, expected.loss_history_, dtype, kind, "loss history")
    assert_close(actual.coef_, expected.coef_, dtype, kind, "coef_")
    assert_close(actual.intercept_, expected.intercept_, dtype, kind, "intercept_")
    assert np.asarray(actual.coef_).dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["seed000", "crops", "wide"])
def test_fit_reproduces_the_cpu_fit(name, dtype, small_grid):
    X, y, options = problem(name, dtype)
    cuda_fit = fit("cuda", X, y, **options)
    assert_same_fit(cuda_fit, fit("cpu", X, y, **options), dtype)
    assert_close(cuda_fit.predict(X), LinearRegressor(backend="cpu", epochs=EPOCHS, **options).fit(X, y).predict(X),
                 dtype, "trajectory", "predict")


def test_fit_matches_the_torch_seed_loop(small_grid):
    """The seeds' own loop (torch autograd, float32) as the oracle of a whole fit."""
    X, y, options = problem("crops", np.float32)
    assert_same_fit(fit("cuda", X, y, **options), fit("torch", X, y, **options), np.float32)


#: lr 1 on seed 000's data multiplies the loss by ~1e4 an epoch: the explosion rule (1e10 times
#: the first loss) stops it within a few epochs, long before float32 or float64 overflow.
DIVERGING_EPOCHS = 40
#: The simulator computes in NumPy scalars, which warn on the overflow the divergence tests provoke.
overflow_expected = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                               "ignore:invalid value encountered:RuntimeWarning")


@overflow_expected
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_divergence_stops_like_the_cpu(dtype, small_grid):
    """Exploding loss: same epoch, same history (the diverging loss excluded), the parameters before it."""
    X, y, _ = problem("seed000", dtype)
    fits = {}
    for backend in ("cuda", "cpu"):
        fits[backend] = LinearRegressor(backend=backend, lr=1.0, epochs=DIVERGING_EPOCHS)
        with pytest.raises(DivergenceError, match="exploded"):
            fits[backend].fit(X, y)
    assert 0 < fits["cuda"].n_iter_ < DIVERGING_EPOCHS
    assert np.isfinite(fits["cuda"].loss_history_).all()
    assert np.isfinite(fits["cuda"].coef_).all()
    assert_same_fit(fits["cuda"], fits["cpu"], dtype)


@overflow_expected
@pytest.mark.parametrize("dtype, lr", [(np.float32, 1e30), (np.float64, 1e290)])
def test_non_finite_loss_stops_like_the_cpu(dtype, lr, small_grid):
    """An update that overflows W's dtype: the next loss is inf (not just exploding); W is restored."""
    X = np.array([[1e19], [1e19], [1e19]], dtype=dtype)
    y = np.zeros(3, dtype=dtype)
    fits = {}
    for backend in ("cuda", "cpu"):
        fits[backend] = LinearRegressor(backend=backend, lr=lr, epochs=5, init=(np.zeros((1, 1)), np.ones(1)))
        with pytest.raises(DivergenceError, match="non-finite"):
            fits[backend].fit(X, y)
    assert fits["cuda"].n_iter_ == 1
    np.testing.assert_array_equal(fits["cuda"].loss_history_, [1.0])
    assert fits["cuda"].coef_ == 0.0 and fits["cuda"].intercept_ == 1.0  # the parameters before the bad step
    assert_same_fit(fits["cuda"], fits["cpu"], dtype)


@overflow_expected
def test_progress_blocks_give_the_same_fit_bit_for_bit(small_grid):
    """advance() in blocks (progress display) syncs once per block and changes nothing, divergence included."""
    X, y, _ = problem("seed000", np.float64)
    for lr, epochs in [(1e-5, EPOCHS), (1.0, DIVERGING_EPOCHS)]:
        plain = LinearRegressor(backend="cuda", lr=lr, epochs=epochs)
        shown = LinearRegressor(backend="cuda", lr=lr, epochs=epochs, progress=True)
        for estimator in (plain, shown):
            if lr == 1.0:
                with pytest.raises(DivergenceError):
                    estimator.fit(X, y)
            else:
                estimator.fit(X, y)
        np.testing.assert_array_equal(shown.loss_history_, plain.loss_history_)
        np.testing.assert_array_equal(shown.coef_, plain.coef_)
        np.testing.assert_array_equal(shown.intercept_, plain.intercept_)


def test_a_step_is_two_launches_and_advance_syncs_once(small_grid, transfers):
    X, y, _ = problem("crops", np.float32)
    W0, b0 = np.ones((2, 3), np.float32), np.zeros(2, np.float32)
    run = CudaBackend().start_gd(X, y, W0, b0, 1e-5, 20)
    transfers.clear()
    assert run.advance(7) == 7
    partials = "register_partials_8x4"
    assert transfers.launches == [partials, "finish_step"] * 7
    assert transfers.to_device == []
    assert transfers.to_host == [8]  # stop_epoch: the one synchronisation
    transfers.clear()
    assert run.advance(20) == 13  # capped at the run's 20 epochs
    assert len(transfers.launches) == 2 * 13 and transfers.to_host == [8]


def test_one_copy_of_the_data_per_fit(small_grid, transfers, monkeypatch):
    """Host data crosses once (X, Y, initial W and b); W, b and the history come back once, after the loop;
    in between, each advance() (the estimator calls it in blocks) reads back only the 8-byte stop flag."""
    from linreg import cuda_backend

    advances = []
    advance = cuda_backend._CudaRun.advance

    def counting_advance(run, n_epochs):
        advances.append(n_epochs)
        return advance(run, n_epochs)

    monkeypatch.setattr(cuda_backend._CudaRun, "advance", counting_advance)
    X, y, options = problem("wide", np.float32)
    estimator = fit("cuda", X, y, **options)
    n_outputs, n_features = estimator.coef_.shape
    itemsize = X.dtype.itemsize
    W_bytes, b_bytes, history_bytes = n_outputs * n_features * itemsize, n_outputs * itemsize, 8 * EPOCHS
    assert sorted(transfers.to_device) == sorted([X.nbytes, y.nbytes, W_bytes, b_bytes])
    assert sum(advances) == EPOCHS
    assert sorted(transfers.to_host) == sorted([8] * len(advances) + [W_bytes, b_bytes, history_bytes])
    assert transfers.launches.count("tiled_partials") == EPOCHS
    assert transfers.launches.count("finish_step") == EPOCHS


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_inputs_are_used_in_place(dtype, small_grid, transfers):
    """numba device arrays and __cuda_array_interface__ objects: no copy of X or Y, the same fit as host data."""
    X, Y, _, _ = random_problem(14, 3, 2, dtype, seed=9)
    W0, b0 = np.ones((2, 3), dtype), np.zeros(2, dtype)
    host_run = CudaBackend().start_gd(X, Y, W0, b0, 0.05, EPOCHS)
    host_run.advance(EPOCHS)
    expected = host_run.result()
    for make in (cuda.to_device, InterfaceOnly):
        X_in, Y_in = make(X), make(Y)
        transfers.clear()
        X_device, Y_device = check_device_X_y(X_in, Y_in)
        assert data_pointer(X_device) == data_pointer(cuda_kernels.as_device_array(X_in))
        assert data_pointer(Y_device) == data_pointer(cuda_kernels.as_device_array(Y_in))
        run = CudaBackend().start_gd(X_device, Y_device, W0, b0, 0.05, EPOCHS)
        run.advance(EPOCHS)
        assert sorted(transfers.to_device) == sorted([W0.nbytes, b0.nbytes])  # the parameters only
        for got, want in zip(run.result(), expected, strict=True):
            np.testing.assert_array_equal(got, want)
        P = CudaBackend().predict(X_device, *expected[:2])
        np.testing.assert_array_equal(P, CudaBackend().predict(X, *expected[:2]))


@pytest.mark.parametrize("stop_at", [0, 5, EPOCHS])
def test_checkpoint_state_continues_bit_for_bit(stop_at, small_grid):
    """state_dict after k epochs, load_state_dict into a new run, finish: the same as one uninterrupted run."""
    X, Y, _, _ = random_problem(14, 9, 3, np.float64, seed=12)
    W0, b0 = np.ones((3, 9)), np.zeros(3)
    whole = CudaBackend().start_gd(X, Y, W0, b0, 0.05, EPOCHS)
    whole.advance(EPOCHS)
    first = CudaBackend().start_gd(X, Y, W0, b0, 0.05, EPOCHS)
    first.advance(stop_at)
    state = first.state_dict()
    assert state["loss_history"].shape == (stop_at,)
    resumed = CudaBackend().start_gd(X, Y, W0 * 7, b0 + 3, 0.05, EPOCHS)  # other parameters: the state wins
    resumed.load_state_dict(state)
    assert resumed.n_done == stop_at
    resumed.advance(EPOCHS)
    for got, want in zip(resumed.result(), whole.result(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_interface_view_shares_memory(small_grid):
    """A CUDA-array-interface object is viewed, not copied: writes through the original are seen."""
    Y = np.zeros((4, 2))
    source = InterfaceOnly(Y)
    view = cuda_kernels.as_device_array(source)
    assert data_pointer(view) == source.__cuda_array_interface__["data"][0]
    assert view.shape == (4, 2) and view.dtype == np.float64


def test_device_validation_promotes_and_reshapes_on_the_device(small_grid):
    X, Y, _, _ = random_problem(9, 3, 1, np.float32, seed=1)
    X_device, Y_device = check_device_X_y(cuda.to_device(X), cuda.to_device(Y[:, 0].astype(np.float64)))
    assert X_device.dtype == Y_device.dtype == np.float64 and Y_device.shape == (9, 1)
    np.testing.assert_array_equal(X_device.copy_to_host(), X.astype(np.float64))
    long_y = np.repeat(Y[:, 0], 2)
    _, strided = check_device_X_y(cuda.to_device(X), cuda.to_device(long_y)[::2])
    np.testing.assert_array_equal(strided.copy_to_host()[:, 0], long_y[::2])
    integers = np.arange(18, dtype=np.int32).reshape(9, 2)
    assert check_device_X(cuda.to_device(integers)).dtype == np.float32


@pytest.mark.parametrize("where", [(0, 0), (6, 2)])
def test_device_validation_names_non_finite_entries(where, small_grid):
    X, Y, _, _ = random_problem(8, 3, 2, np.float64, seed=1)
    X[where] = np.nan
    with pytest.raises(ValueError, match=rf"X contains nan at row {where[0]}, column {where[1]}"):
        check_device_X_y(cuda.to_device(X), cuda.to_device(Y))
    X[where] = 0.0
    Y[5, 0] = -np.inf
    with pytest.raises(ValueError, match=r"y contains -inf at row 5, column 0"):
        check_device_X_y(cuda.to_device(X), cuda.to_device(Y))


@pytest.mark.parametrize("X_shape, y_shape, message", [
    ((8,), (8,), "X must be 2-D"),
    ((0, 3), (0,), "X is empty"),
    ((8, 3), (7,), "same number of samples"),
    ((8, 3), (8, 2, 1), "y must be 1-D"),
])
def test_device_validation_checks_shapes(X_shape, y_shape, message, small_grid):
    with pytest.raises(ValueError, match=message):
        check_device_X_y(cuda.to_device(np.ones(X_shape)), cuda.to_device(np.ones(y_shape)))


def test_device_validation_rejects_other_dtypes(small_grid):
    with pytest.raises(TypeError, match="float32 or float64"):
        check_device_X(cuda.to_device(np.ones((3, 2), np.complex64)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_estimator_takes_device_arrays_end_to_end(dtype, small_grid, transfers):
    """fit, predict and score on device arrays through LinearRegressor: X and y are never copied in."""
    X, y, options = problem("seed000", dtype)
    host = fit("cuda", X, y, **options)
    device_X, device_y = cuda.to_device(X), cuda.to_device(y)
    transfers.clear()
    model = fit("cuda", device_X, device_y, **options)
    # Only the initial W (1x5) and b cross; X and y stay where they are.
    assert transfers.to_device == [5 * np.dtype(dtype).itemsize, np.dtype(dtype).itemsize]
    np.testing.assert_array_equal(model.coef_, host.coef_)
    np.testing.assert_array_equal(model.loss_history_, host.loss_history_)
    np.testing.assert_array_equal(model.predict(device_X), host.predict(X))
    assert model.score(device_X, device_y) == host.score(X, y)
    bad = X.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"X contains nan at row 5, column 2"):
        fit("cuda", cuda.to_device(bad), device_y, **options)
    negative = np.ones(len(X))
    negative[3] = -1.0
    with pytest.raises(ValueError, match=r"sample_weight must be non-negative, got -1.0 at row 3"):
        LinearRegressor(backend="cuda").fit(device_X, device_y, sample_weight=cuda.to_device(negative))
    with pytest.raises(ValueError, match="X has 4 features, but LinearRegressor is expecting 5"):
        model.predict(cuda.to_device(np.ascontiguousarray(X[:, :4])))


def test_reruns_are_bit_identical(small_grid):
    """Deterministic reductions: the same fit twice gives the same bits (block partials in a fixed order)."""
    X, y, options = problem("wide", np.float32)
    first, second = fit("cuda", X, y, **options), fit("cuda", X, y, **options)
    np.testing.assert_array_equal(first.coef_, second.coef_)
    np.testing.assert_array_equal(first.loss_history_, second.loss_history_)
