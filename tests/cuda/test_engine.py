"""backend="cuda" beyond the seeds' loop: the option matrix of tests/training/test_optimizers.py (and the other
engine options) against backend="cpu", with the steps on the device (linreg.cuda_engine, kernels.cuda_train).

Same stop reason and n_iter, parameters and histories within 1e-6 relative (float64). Tiny shapes and the
patched small grid (4 threads, 4 rows a block, at most 3 blocks, 3 x 2 tiles) so several blocks and tiles run:
13 rows are 4 batches of 4 (the last partial: 1 row) or 3 full-batch blocks of 5 rows.
"""

import numpy as np
import pytest
from helpers import random_problem

from linreg import LinearRegressor, _engine, driver, options
from linreg.cuda_engine import CudaEngineRun, DeviceRows
from linreg.kernels import cpu_train

N_SAMPLES, N_FEATURES, N_OUTPUTS = 13, 3, 2
RTOL = 1e-6


def problem(dtype=np.float64, seed=0):
    X, Y, W0, b0 = random_problem(N_SAMPLES, N_FEATURES, N_OUTPUTS, dtype, seed)
    return X, (Y + 0.5 * X @ np.ones((N_FEATURES, N_OUTPUTS), dtype)).astype(dtype), W0, b0


def assert_rel(actual, expected, what, rtol=RTOL):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(np.linalg.norm(expected), 1e-300)
    error = np.linalg.norm(actual - expected) / scale
    assert error <= rtol, f"{what}: relative error {error:.3g} > {rtol:g}"


def fit_both(params, *, dtype=np.float64, weights=None, rtol=RTOL, **fit_kwargs):
    X, Y, W0, b0 = problem(dtype)
    settings = dict(epochs=4, init=(W0, b0), random_state=7) | params
    cpu = LinearRegressor(backend="cpu", **settings).fit(X, Y, sample_weight=weights, **fit_kwargs)
    gpu = LinearRegressor(backend="cuda", **settings).fit(X, Y, sample_weight=weights, **fit_kwargs)
    assert gpu.stop_reason_ == cpu.stop_reason_
    assert gpu.n_iter_ == cpu.n_iter_
    assert_rel(gpu.loss_history_, cpu.loss_history_, "loss history", rtol)
    assert_rel(gpu.coef_, cpu.coef_, "coef_", rtol)
    assert_rel(gpu.intercept_, cpu.intercept_, "intercept_", rtol)
    if getattr(cpu, "validation_loss_history_", None) is not None:
        assert_rel(gpu.validation_loss_history_, cpu.validation_loss_history_, "validation history", rtol)
    return cpu, gpu


SGD_CASES = [
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.8, nesterov=True),
    dict(momentum=0.5, weight_decay=0.1),
    dict(weight_decay=0.05),
]
ADAM_CASES = [
    dict(optimizer="adam"),
    dict(optimizer="adam", betas=(0.8, 0.99), eps=1e-6),
    dict(optimizer="adam", amsgrad=True, weight_decay=0.1),
    dict(optimizer="adamw"),
    dict(optimizer="adamw", weight_decay=0.2, amsgrad=True),
]


def label(options):
    return ",".join(f"{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("batch_size", [None, 4])
@pytest.mark.parametrize("case", SGD_CASES, ids=label)
def test_sgd_options(case, batch_size, small_grid):
    fit_both(dict(lr=0.05, batch_size=batch_size) | case)


@pytest.mark.parametrize("batch_size", [None, 4])
@pytest.mark.parametrize("case", ADAM_CASES, ids=label)
def test_adam_options(case, batch_size, small_grid):
    fit_both(dict(lr=0.03, batch_size=batch_size) | case)


@pytest.mark.parametrize("penalty, alpha, l1_ratio", [("l2", 0.3, 0.15), ("l1", 0.05, 0.15),
                                                      ("elasticnet", 0.1, 0.4)])
def test_penalties(penalty, alpha, l1_ratio, small_grid):
    fit_both(dict(lr=0.05, penalty=penalty, alpha=alpha, l1_ratio=l1_ratio, momentum=0.5, batch_size=4))


@pytest.mark.parametrize("schedule", [dict(schedule="step", step_size=2, gamma=0.5),
                                      dict(schedule="exponential", gamma=0.8),
                                      dict(schedule="cosine", t_max=3, eta_min=0.001),
                                      dict(schedule="invscaling", power_t=0.5)], ids=label)
def test_schedules(schedule, small_grid):
    fit_both(dict(lr=0.08, momentum=0.9, batch_size=4) | schedule)


@pytest.mark.parametrize("shuffle", [True, False])
def test_minibatch_order_and_partial_last_batch(shuffle, small_grid):
    cpu, _ = fit_both(dict(lr=0.05, batch_size=4, shuffle=shuffle))
    assert cpu.n_iter_ == 4


@pytest.mark.parametrize("batch_size", [None, 4])
def test_sample_weights(batch_size, small_grid):
    weights = np.random.default_rng(1).uniform(0, 3, N_SAMPLES)
    weights[[2, 5]] = 0.0
    fit_both(dict(lr=0.05, momentum=0.5, batch_size=batch_size), weights=weights)


def test_tol_stops_at_the_same_epoch(small_grid):
    cpu, _ = fit_both(dict(lr=0.05, tol=0.5, n_iter_no_change=2, epochs=30))
    assert cpu.stop_reason_ == "tol" and cpu.n_iter_ < 30


def test_adaptive_schedule_stops_at_the_same_epoch(small_grid):
    cpu, _ = fit_both(dict(lr=0.05, schedule="adaptive", tol=10.0, n_iter_no_change=1, epochs=40, batch_size=4))
    assert cpu.stop_reason_ == "adaptive" and cpu.n_iter_ < 40


def test_early_stopping_on_validation_rows(small_grid):
    cpu, _ = fit_both(dict(lr=0.05, early_stopping=True, tol=10.0, n_iter_no_change=2, validation_fraction=0.3,
                           epochs=30, batch_size=4))
    assert cpu.stop_reason_ == "early_stopping" and cpu.n_iter_ < 30


def test_standardize_and_auto_lr_from_device_statistics(small_grid):
    X, Y, _, _ = problem()
    X = X * 40.0 + 55.0  # seed 000's features: far from 0, the case standardisation is for
    cpu = LinearRegressor(backend="cpu", standardize=True, lr="auto", epochs=5, init="zeros").fit(X, Y)
    gpu = LinearRegressor(backend="cuda", standardize=True, lr="auto", epochs=5, init="zeros").fit(X, Y)
    assert gpu.n_iter_ == cpu.n_iter_ and gpu.lr_ == pytest.approx(cpu.lr_, rel=1e-12)
    assert_rel(gpu.loss_history_, cpu.loss_history_, "loss history")
    assert_rel(gpu.coef_, cpu.coef_, "coef_")
    assert_rel(gpu.intercept_, cpu.intercept_, "intercept_")


@pytest.mark.parametrize("solver", ["normal", "gram"])
def test_exact_and_gram_solvers_from_device_statistics(solver, small_grid):
    weights = np.random.default_rng(2).uniform(0.5, 2, N_SAMPLES)
    extra = dict(epochs=6, lr=0.1) if solver == "gram" else {}
    fit_both(dict(solver=solver, init="zeros", **extra), weights=weights, rtol=1e-9)


def test_warm_start_continues_like_the_cpu(small_grid):
    X, Y, W0, b0 = problem()
    models = {}
    for backend in ("cpu", "cuda"):
        model = LinearRegressor(backend=backend, lr=0.05, epochs=2, batch_size=4, momentum=0.5, warm_start=True,
                                init=(W0, b0), random_state=3).fit(X, Y)
        models[backend] = model.fit(X, Y)
    assert_rel(models["cuda"].coef_, models["cpu"].coef_, "coef_")
    assert_rel(models["cuda"].loss_history_, models["cpu"].loss_history_, "loss history")


def test_partial_fit_continues_like_the_cpu(small_grid):
    X, Y, W0, b0 = problem()
    models = {backend: LinearRegressor(backend=backend, lr=0.05, batch_size=4, optimizer="adam", init=(W0, b0),
                                       random_state=5) for backend in ("cpu", "cuda")}
    for _ in range(3):
        for model in models.values():
            model.partial_fit(X, Y)
    assert models["cuda"].n_iter_ == models["cpu"].n_iter_ == 3
    assert_rel(models["cuda"].coef_, models["cpu"].coef_, "coef_")
    assert_rel(models["cuda"].loss_history_, models["cpu"].loss_history_, "loss history")


def test_divergence_stops_at_the_same_epoch_with_the_last_finite_parameters(small_grid):
    X, Y, W0, b0 = problem()
    results = {}
    for backend in ("cpu", "cuda"):
        model = LinearRegressor(backend=backend, lr=30.0, epochs=40, batch_size=4, momentum=0.9, init=(W0, b0),
                                random_state=1)
        with pytest.raises(driver.DivergenceError):
            model.fit(X, Y)
        results[backend] = model
    assert results["cuda"].n_iter_ == results["cpu"].n_iter_ < 40
    assert results["cuda"].stop_reason_ == results["cpu"].stop_reason_ == "diverged"
    assert_rel(results["cuda"].coef_, results["cpu"].coef_, "coef_")
    assert np.isfinite(results["cuda"].coef_).all()


def test_float32_data(small_grid):
    fit_both(dict(lr=0.05, batch_size=4, momentum=0.9), dtype=np.float32, rtol=1e-5)


# --------------------------------------------------------------------------- the run itself


def make_run(params, X, Y, W0, b0, epochs):
    spec = options.make_spec(LinearRegressor(epochs=epochs, **params).get_params())
    state = _engine.EngineState.raw(W0.astype(np.float64), b0.astype(np.float64))
    return DeviceRows(driver.InMemory(X, Y, None)).start_gd(spec, state, params["lr"], None, None, 11)


def test_checkpoint_state_continues_bit_for_bit(small_grid):
    X, Y, W0, b0 = problem()
    params = dict(lr=0.05, batch_size=4, optimizer="adam")
    whole = make_run(params, X, Y, W0, b0, 5)
    whole.advance(5)
    first = make_run(params, X, Y, W0, b0, 5)
    first.advance(2)
    saved = first.state_dict()
    resumed = make_run(params, X, Y, W0, b0, 5)
    resumed.load_state_dict(saved)
    resumed.advance(3)
    for a, b in zip(resumed.result(), whole.result(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_launches_per_step_and_copies_per_block(small_grid, transfers):
    """2 launches a step, 1 more an epoch; per advance: one permutation copy per shuffled epoch in, the state
    and histories out once; the data never crosses again."""
    X, Y, W0, b0 = problem()
    run = make_run(dict(lr=0.05, batch_size=4, momentum=0.9), X, Y, W0, b0, 6)
    assert isinstance(run, CudaEngineRun)
    transfers.clear()
    run.advance(3)
    steps = 4  # 13 rows in batches of 4
    expected = (["batch_partials", "engine_step"] * steps + ["engine_epoch_end"]) * 3
    assert transfers.launches == expected
    assert transfers.to_device == [N_SAMPLES * 8] * 3  # each epoch's permutation, nothing else
    n_state = len(cpu_train.TrainState._fields)
    assert len(transfers.to_host) == n_state + 2  # the block's one read-back: state arrays and the two histories
    cpu = LinearRegressor(lr=0.05, batch_size=4, momentum=0.9, epochs=6, init=(W0, b0), random_state=11)
    assert_rel(run.history(3), cpu.fit(X, Y).loss_history_[:3], "loss history")  # the same shuffle as the CPU


def test_estimator_checkpoint_resume_lands_where_an_uninterrupted_fit_does(small_grid, tmp_path, transfers):
    X, Y, W0, b0 = problem()
    settings = dict(backend="cuda", lr=0.05, batch_size=4, optimizer="adam", init=(W0, b0), random_state=2,
                    checkpoint_path=str(tmp_path / "run.npz"), checkpoint_every=1)
    LinearRegressor(epochs=3, **settings).fit(X, Y)
    transfers.clear()
    resumed = LinearRegressor(epochs=6, **settings).fit(X, Y, resume=True)
    assert transfers.launches.count("engine_epoch_end") == 3  # it resumed at epoch 3: only 3 more epochs ran
    whole = LinearRegressor(epochs=6, **(settings | dict(checkpoint_path=None, checkpoint_every=None))).fit(X, Y)
    assert resumed.n_iter_ == whole.n_iter_ == 6
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)
    np.testing.assert_array_equal(resumed.loss_history_, whole.loss_history_)


def test_device_arrays_train_in_place_with_every_option(small_grid, transfers):
    """Device X and y: the statistics (moments, Gram for lr="auto") and the steps read them where they are."""
    from numba import cuda

    X, Y, W0, b0 = problem()
    settings = dict(backend="cuda", batch_size=4, standardize=True, lr="auto", tol=10.0, n_iter_no_change=2,
                    early_stopping=True, validation_fraction=0.3, epochs=20, init=(W0, b0), random_state=4)
    host = LinearRegressor(**settings).fit(X, Y)
    device_X, device_Y = cuda.to_device(X), cuda.to_device(Y)
    transfers.clear()
    device = LinearRegressor(**settings).fit(device_X, device_Y)
    assert X.nbytes not in transfers.to_device and Y.nbytes not in transfers.to_device
    assert max(transfers.to_device) < Y.nbytes  # only small things cross: state, rows, permutations
    np.testing.assert_array_equal(device.coef_, host.coef_)
    np.testing.assert_array_equal(device.loss_history_, host.loss_history_)
    cpu = LinearRegressor(**(settings | dict(backend="cpu"))).fit(X, Y)
    assert device.n_iter_ == cpu.n_iter_ < 20 and device.stop_reason_ == cpu.stop_reason_ == "early_stopping"
    assert_rel(device.coef_, cpu.coef_, "coef_")


def test_validation_adds_one_launch_an_epoch_and_reruns_are_bit_identical(small_grid, transfers):
    X, Y, W0, b0 = problem()
    settings = dict(backend="cuda", lr=0.05, batch_size=4, early_stopping=True, tol=1e-9, n_iter_no_change=50,
                    validation_fraction=0.3, epochs=2, init=(W0, b0), random_state=6)
    transfers.clear()
    with pytest.warns(Warning, match="epoch budget"):
        first = LinearRegressor(**settings).fit(X, Y)
    n_train = N_SAMPLES - 3  # validation_fraction 0.3 of 13 rows holds out 3 (at least one)
    steps = -(-n_train // 4)
    engine = [name for name in transfers.launches if name in ("batch_partials", "engine_step", "engine_epoch_end")]
    assert engine == (["batch_partials", "engine_step"] * steps + ["batch_partials", "engine_epoch_end"]) * 2
    with pytest.warns(Warning, match="epoch budget"):
        second = LinearRegressor(**settings).fit(X, Y)
    np.testing.assert_array_equal(first.coef_, second.coef_)
    np.testing.assert_array_equal(first.validation_loss_history_, second.validation_loss_history_)
