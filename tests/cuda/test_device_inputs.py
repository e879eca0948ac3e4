"""GPU arrays beyond X and y: device sample weights, and checkpoints / resume of fits on device arrays.

Compared with the same fit on host arrays (bit for bit: the same kernels read the same numbers) and with
backend="cpu" (1e-6 relative, as tests/cuda/test_engine.py).
"""

import numpy as np
import pytest
from cuda_helpers import InterfaceOnly
from numba import cuda
from test_engine import N_SAMPLES, assert_rel, problem

from linreg import LinearRegressor, checkpoint

WEIGHTS = np.random.default_rng(8).uniform(0.0, 3.0, N_SAMPLES)
WEIGHTS[[1, 6]] = 0.0


@pytest.mark.parametrize("batch_size", [None, 4])
def test_device_sample_weight_trains_in_place_like_host_weights(batch_size, small_grid, transfers):
    X, Y, W0, b0 = problem()
    settings = dict(backend="cuda", lr=0.05, momentum=0.5, batch_size=batch_size, epochs=4, init=(W0, b0),
                    random_state=3)
    host = LinearRegressor(**settings).fit(X, Y, sample_weight=WEIGHTS)
    device_X, device_Y, device_w = cuda.to_device(X), cuda.to_device(Y), cuda.to_device(WEIGHTS)
    transfers.clear()
    device = LinearRegressor(**settings).fit(device_X, device_Y, sample_weight=device_w)
    permutations = 4 if batch_size else 0  # a shuffled epoch's permutation: n_samples int64, as many bytes
    assert transfers.to_device.count(WEIGHTS.nbytes) == permutations  # the weights are read where they are
    assert WEIGHTS.nbytes in transfers.to_host  # (once to the host, for the host's weight checks)
    assert X.nbytes not in transfers.to_device
    np.testing.assert_array_equal(device.coef_, host.coef_)
    np.testing.assert_array_equal(device.loss_history_, host.loss_history_)
    cpu = LinearRegressor(**(settings | dict(backend="cpu"))).fit(X, Y, sample_weight=WEIGHTS)
    assert_rel(device.coef_, cpu.coef_, "coef_")
    assert_rel(device.loss_history_, cpu.loss_history_, "loss history")


def test_foreign_and_converted_device_weights(small_grid):
    """Weights behind __cuda_array_interface__ (a torch/CuPy tensor), float32 weights (converted once) and device
    weights next to host X and y all train as the host weights do."""
    X, Y, W0, b0 = problem()
    settings = dict(backend="cuda", lr=0.05, batch_size=4, epochs=3, init=(W0, b0), random_state=1)
    expected = LinearRegressor(**settings).fit(X, Y, sample_weight=WEIGHTS.astype(np.float32))
    for weights in (InterfaceOnly(WEIGHTS.astype(np.float32)), cuda.to_device(WEIGHTS.astype(np.float32))):
        model = LinearRegressor(**settings).fit(cuda.to_device(X), InterfaceOnly(Y), sample_weight=weights)
        np.testing.assert_array_equal(model.coef_, expected.coef_)
    mixed = LinearRegressor(**settings).fit(X, Y, sample_weight=cuda.to_device(WEIGHTS.astype(np.float32)))
    np.testing.assert_array_equal(mixed.coef_, expected.coef_)


@pytest.mark.parametrize("solver", ["normal", "gram"])
def test_device_weights_with_the_device_statistics(solver, small_grid):
    X, Y, _, _ = problem()
    extra = dict(epochs=5, lr=0.1) if solver == "gram" else {}
    settings = dict(backend="cuda", solver=solver, init="zeros", **extra)
    device = LinearRegressor(**settings).fit(cuda.to_device(X), cuda.to_device(Y),
                                             sample_weight=cuda.to_device(WEIGHTS))
    cpu = LinearRegressor(**(settings | dict(backend="cpu"))).fit(X, Y, sample_weight=WEIGHTS)
    assert_rel(device.coef_, cpu.coef_, "coef_", 1e-9)


def test_device_weights_are_checked_like_host_weights(small_grid):
    X, Y, _, _ = problem()
    device_X, device_Y = cuda.to_device(X), cuda.to_device(Y)
    cases = [(np.full(N_SAMPLES, np.nan), "sample_weight contains nan"),
             (np.zeros(N_SAMPLES), "sample_weight sums to 0"),
             (np.ones(N_SAMPLES - 1), rf"sample_weight must have shape \({N_SAMPLES},\), got \({N_SAMPLES - 1},\)")]
    for weights, message in cases:
        with pytest.raises(ValueError, match=message):
            LinearRegressor(backend="cuda", lr=0.05, epochs=2).fit(device_X, device_Y,
                                                                  sample_weight=cuda.to_device(weights))


def test_partial_fit_with_device_weights(small_grid):
    X, Y, W0, b0 = problem()
    models = {kind: LinearRegressor(backend="cuda", lr=0.05, batch_size=4, init=(W0, b0), random_state=2)
              for kind in ("host", "device")}
    for _ in range(2):
        models["host"].partial_fit(X, Y, sample_weight=WEIGHTS)
        models["device"].partial_fit(cuda.to_device(X), cuda.to_device(Y), sample_weight=cuda.to_device(WEIGHTS))
    np.testing.assert_array_equal(models["device"].coef_, models["host"].coef_)


def test_device_data_fingerprint_equals_the_host_one(small_grid):
    from linreg.cuda_engine import DeviceData
    from linreg.kernels import cuda as cuda_kernels

    X, Y, _, _ = problem()
    device = DeviceData(cuda.to_device(X), cuda.to_device(Y), WEIGHTS, cuda.to_device(WEIGHTS))
    assert device.fingerprint() == checkpoint.fingerprint(X, Y, WEIGHTS)
    other = X.copy()
    other[6, 1] += 1.0  # row 6 is one of the sampled rows (all 13 are)
    assert DeviceData(cuda.to_device(other), cuda.to_device(Y), WEIGHTS, None).fingerprint() != device.fingerprint()
    rows = np.array([12, 0, 5])
    np.testing.assert_array_equal(cuda_kernels.rows_to_host(cuda.to_device(X), rows), X[rows])


def test_checkpoint_and_resume_with_device_arrays(small_grid, tmp_path, transfers):
    """A fit on device arrays writes checkpoints and resumes from them (or from one written with host arrays of
    the same numbers), ending exactly where the uninterrupted fit ends."""
    X, Y, W0, b0 = problem()
    path = tmp_path / "run.npz"
    settings = dict(backend="cuda", lr=0.05, batch_size=4, optimizer="adam", init=(W0, b0), random_state=2,
                    checkpoint_path=str(path), checkpoint_every=1)
    device_X, device_Y, device_w = cuda.to_device(X), cuda.to_device(Y), cuda.to_device(WEIGHTS)
    LinearRegressor(epochs=3, **settings).fit(device_X, device_Y, sample_weight=device_w)
    transfers.clear()
    resumed = LinearRegressor(epochs=6, **settings).fit(device_X, device_Y, sample_weight=device_w, resume=True)
    assert transfers.launches.count("engine_epoch_end") == 3  # it resumed at epoch 3
    whole = LinearRegressor(epochs=6, **(settings | dict(checkpoint_path=None, checkpoint_every=None))).fit(
        device_X, device_Y, sample_weight=device_w)
    assert resumed.n_iter_ == whole.n_iter_ == 6
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)
    np.testing.assert_array_equal(resumed.loss_history_, whole.loss_history_)
    # The same numbers on the host: the checkpoint's fingerprint matches, so the host fit resumes from it too.
    LinearRegressor(epochs=3, **settings).fit(device_X, device_Y, sample_weight=device_w)
    transfers.clear()
    from_host = LinearRegressor(epochs=6, **settings).fit(X, Y, sample_weight=WEIGHTS, resume=True)
    assert transfers.launches.count("engine_epoch_end") == 3
    np.testing.assert_array_equal(from_host.coef_, whole.coef_)
    # Other data: refused, as on the host.
    other = Y.copy()
    other[0, 0] += 1.0
    with pytest.raises(ValueError, match="data"):
        LinearRegressor(epochs=6, **settings).fit(device_X, cuda.to_device(other), sample_weight=device_w,
                                                  resume=True)


def test_checkpoint_and_resume_of_the_plain_loop_with_device_arrays(small_grid, tmp_path, transfers):
    """The seeds' plain loop (kernels.cuda.gd) on device arrays: checkpoints and resume too."""
    X, Y, W0, b0 = problem()
    settings = dict(backend="cuda", lr=0.05, init=(W0, b0), checkpoint_path=str(tmp_path / "plain.npz"),
                    checkpoint_every=2)
    device_X, device_Y = cuda.to_device(X), cuda.to_device(Y)
    LinearRegressor(epochs=4, **settings).fit(device_X, device_Y)
    transfers.clear()
    resumed = LinearRegressor(epochs=7, **settings).fit(device_X, device_Y, resume=True)
    assert transfers.launches.count("finish_step") == 3  # epochs 4, 5, 6 only
    whole = LinearRegressor(epochs=7, **(settings | dict(checkpoint_path=None, checkpoint_every=None))).fit(
        device_X, device_Y)
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)
    np.testing.assert_array_equal(resumed.loss_history_, whole.loss_history_)
