"""Edge cases and state across fits: each test pins a defect a review found (it failed before the fix)."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
from helpers import random_problem

import linreg
from linreg import LinearRegressor


def problem(n_samples=200, seed=0):
    X, Y, _, _ = random_problem(n_samples, 3, 1, np.float64, seed)
    return X, X @ np.array([1.0, 2.0, 3.0]) + 0.5 + 0.01 * Y[:, 0]


@pytest.mark.parametrize("schedule", ["cosine", "step", "exponential", "invscaling"])
def test_partial_fit_calls_follow_the_schedule_of_fit(schedule):
    """k partial_fit calls = fit(epochs=k), cosine included (its period is t_max or epochs, not 1)."""
    X, y = problem()
    params = dict(lr=0.05, schedule=schedule, step_size=2, gamma=0.5, batch_size=32, random_state=1, epochs=6)
    fitted = LinearRegressor(**params).fit(X, y)
    partial = LinearRegressor(**params)
    for _ in range(6):
        partial.partial_fit(X, y)
    np.testing.assert_array_equal(partial.coef_, fitted.coef_)


def test_partial_fit_continues_after_fit_and_fit_starts_over():
    X, y = problem()
    model = LinearRegressor(lr=0.05, epochs=300, momentum=0.5)
    for _ in range(3):
        model.partial_fit(X, y)
    model.fit(X, y)
    fitted = model.coef_.copy()
    model.partial_fit(X, y)  # one more epoch from the fit, not from the earlier partial_fit state
    assert model.n_iter_ == 1 and np.abs(model.coef_ - fitted).max() < 1e-3
    np.testing.assert_allclose(model.coef_, [1, 2, 3], atol=0.05)


@pytest.mark.parametrize("batch_size", [None, 10])
def test_zero_weight_rows_are_ignored_not_a_crash(batch_size):
    X, y = problem()
    weights = np.ones(len(X))
    weights[:50] = 0.0  # with batch_size=10 and no shuffle: 5 whole batches of zero weight
    model = LinearRegressor(lr=0.05, epochs=20, batch_size=batch_size, shuffle=False).fit(X, y, sample_weight=weights)
    assert np.isfinite(model.coef_).all() and np.isfinite(model.loss_history_).all()
    if batch_size is None:  # full batch: exactly the fit without those rows
        without = LinearRegressor(lr=0.05, epochs=20).fit(X[50:], y[50:])
        np.testing.assert_allclose(model.coef_, without.coef_, rtol=1e-12)
        np.testing.assert_allclose(model.loss_history_, without.loss_history_, rtol=1e-12)


def test_zero_weight_rows_out_of_core_agree_with_in_memory(tmp_path):
    X, y = problem()
    weights = np.ones(len(X))
    weights[:50] = 0.0
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    options = dict(lr=0.05, epochs=10)
    streamed = LinearRegressor(**options).fit(tmp_path / "X.npy", tmp_path / "y.npy", sample_weight=weights)
    in_memory = LinearRegressor(**options).fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(streamed.coef_, in_memory.coef_, rtol=1e-12)


def test_all_zero_weight_split_is_a_clear_error():
    X, y = problem(20)
    weights = np.zeros(20)
    weights[0] = 1.0
    with pytest.raises(ValueError, match="split has only zero sample weights"):
        LinearRegressor(early_stopping=True, tol=1e-3, validation_fraction=0.5, random_state=0).fit(
            X, y, sample_weight=weights)


def test_refit_leaves_no_stale_attributes():
    X, y = problem()
    model = LinearRegressor(lr=0.05, epochs=50, early_stopping=True, tol=1e-9)
    model.fit(X, y)
    assert hasattr(model, "validation_loss_history_")
    model.set_params(early_stopping=False, tol=None, epochs=7).fit(X, y)
    assert not hasattr(model, "validation_loss_history_") and model.n_iter_ == 7
    model.set_params(lr="auto").fit(X, y)
    assert model.lr_ > 0
    model.set_params(solver="normal").fit(X, y)
    assert model.lr_ is None  # the exact solver has no learning rate
    assert not any(isinstance(value, np.ndarray) and value.nbytes >= X.nbytes for value in vars(model).values())


def test_a_fitted_model_does_not_hold_the_training_data():
    X, y = problem(100_000)
    model = LinearRegressor(lr=0.05, epochs=3, momentum=0.5).fit(X, y)
    assert len(pickle.dumps(model)) < X.nbytes / 10


def test_normal_solver_reports_the_standardised_penalty_like_gd():
    X, y = problem()
    X = X * [1, 10, 100] + 50
    options = dict(penalty="l2", alpha=0.5, standardize=True)
    exact = LinearRegressor(solver="normal", **options).fit(X, y)
    descent = LinearRegressor(lr="auto", epochs=3000, solver="gram", **options).fit(X, y)
    np.testing.assert_allclose(exact.coef_, descent.coef_, rtol=1e-8)
    assert exact.loss_history_[0] == pytest.approx(descent.loss_history_[-1], rel=1e-8)


def test_auto_lr_accounts_for_weight_decay():
    """weight_decay adds curvature; lr='auto' must include it (this diverged at epoch 9 before)."""
    X, y = problem()
    decay = LinearRegressor(lr="auto", weight_decay=10.0, epochs=500).fit(X, y)
    ridge = LinearRegressor(solver="normal", penalty="l2", alpha=10.0).fit(X, y)
    np.testing.assert_allclose(decay.coef_, ridge.coef_, rtol=1e-10)
    plain = LinearRegressor(lr="auto", epochs=1).fit(X, y)
    assert 1 / decay.lr_ == pytest.approx(1 / plain.lr_ + 10.0, rel=1e-12)


def test_early_stopping_keeps_the_best_parameters_when_the_epochs_run_out():
    X, y = problem(400)
    y = y + np.random.default_rng(5).standard_normal(400)
    model = LinearRegressor(lr=0.2, epochs=40, momentum=0.9, early_stopping=True, tol=1e-12, n_iter_no_change=1000,
                            random_state=3, validation_fraction=0.3)
    with pytest.warns(linreg.ConvergenceWarning):
        model.fit(X, y)
    assert model.stop_reason_ == "epochs"
    _, validation = linreg.training.split_validation(400, 0.3, 3)
    kept = ((model.predict(X[validation]) - y[validation]) ** 2).mean()
    assert kept == pytest.approx(model.validation_loss_history_.min(), rel=1e-10)
    assert model.validation_loss_history_.argmin() < len(model.validation_loss_history_) - 1


def test_numpy_integer_hyper_parameters_save_and_checkpoint(tmp_path):
    X, y = problem()
    model = LinearRegressor(epochs=np.int64(5), random_state=np.int64(2), lr=1e-3, batch_size=np.int64(32),
                            checkpoint_path=str(tmp_path / "ck.npz"), checkpoint_every=np.int64(2)).fit(X, y)
    model.save(tmp_path / "m.npz")
    assert linreg.load(tmp_path / "m.npz").epochs == 5


def test_bad_output_paths_fail_before_training(tmp_path):
    X, y = problem()
    with pytest.raises(ValueError, match="does not exist or is not writable"):
        LinearRegressor(checkpoint_path=str(tmp_path / "missing" / "ck.npz")).fit(X, y)
    for flag in ("--save", "--checkpoint", "--plot"):
        result = subprocess.run([sys.executable, "-m", "linreg", "train", "--no-progress", flag,
                                 str(tmp_path / "missing" / "file")], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "does not exist or is not writable" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (2**63, ValueError), (True, TypeError), (1.5, TypeError)])
def test_random_state_range(seed, error):
    X, y = problem(20)
    with pytest.raises(error, match="random_state must be"):
        LinearRegressor(random_state=seed, batch_size=4).fit(X, y)
