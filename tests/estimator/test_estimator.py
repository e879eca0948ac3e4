"""LinearRegressor's API: init options, predict, score, parameters, bad input."""

import warnings

import numpy as np
import pytest
from helpers import random_problem

import linreg
from linreg import LinearRegressor


def test_three_lines():
    X, y = linreg.datasets.seed_linear(random_state=0)
    model = LinearRegressor().fit(X, y)
    assert model.predict(X[:3]).shape == (3,) and model.score(X, y) > 0.999


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_shapes_and_attributes(backend):
    X, Y, _, _ = random_problem(30, 4, 3, np.float64)
    model = LinearRegressor(epochs=5, lr=0.01, backend=backend).fit(X, Y)
    assert model.coef_.shape == (3, 4) and model.intercept_.shape == (3,)
    assert model.n_iter_ == 5 and model.loss_history_.shape == (5,) and model.n_features_in_ == 4
    assert model.predict(X).shape == (30, 3)
    one = LinearRegressor(epochs=5, lr=0.01, backend=backend).fit(X, Y[:, 0])
    assert one.coef_.shape == (4,) and np.ndim(one.intercept_) == 0 and one.predict(X).shape == (30,)


def test_backends_agree():
    X, Y, _, _ = random_problem(50, 3, 2, np.float64)
    cpu = LinearRegressor(epochs=40, lr=0.05, init="zeros").fit(X, Y)
    torch = LinearRegressor(epochs=40, lr=0.05, init="zeros", backend="torch").fit(X, Y)
    np.testing.assert_allclose(cpu.loss_history_, torch.loss_history_, rtol=1e-10)
    np.testing.assert_allclose(cpu.predict(X), torch.predict(X), rtol=1e-10)


def test_init_options():
    X, Y, _, _ = random_problem(20, 3, 2, np.float32)
    zero = LinearRegressor(epochs=1, init="zeros").fit(X, Y)
    assert zero.loss_history_[0] == pytest.approx((Y.astype(np.float64) ** 2).mean(), rel=1e-6)
    a = LinearRegressor(epochs=1, init="randn", random_state=3).fit(X, Y)
    b = LinearRegressor(epochs=1, init="randn", random_state=3).fit(X, Y)
    c = LinearRegressor(epochs=1, init="randn", random_state=4).fit(X, Y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.array_equal(a.coef_, c.coef_)
    W0, b0 = np.full((2, 3), 0.5), np.array([1.0, -1.0])
    explicit = LinearRegressor(epochs=1, lr=1e-300, init=(W0, b0)).fit(X, Y)
    np.testing.assert_allclose(explicit.coef_, W0)
    vector = LinearRegressor(epochs=1, lr=1e-300, init=(np.ones(3), 2.0)).fit(X, Y[:, 0])
    np.testing.assert_allclose(vector.coef_, np.ones(3))
    assert vector.intercept_ == 2.0


def test_score_is_r2_like_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    X, Y, _, _ = random_problem(80, 3, 2, np.float64)
    model = LinearRegressor(epochs=50, lr=0.05).fit(X, Y)
    assert model.score(X, Y) == pytest.approx(metrics.r2_score(Y, model.predict(X)), rel=1e-12)
    one = LinearRegressor(epochs=50, lr=0.05).fit(X, Y[:, 0])
    constant = np.ones(80)  # scikit-learn's convention: 0.0 unless the fit is perfect
    assert one.score(X, constant) == metrics.r2_score(constant, one.predict(X)) == 0.0
    with pytest.raises(ValueError, match="y has 1 outputs, but this model was fitted with 2"):
        model.score(X, Y[:, 0])


def test_integer_input_becomes_float32_and_float64_wins():
    X = np.arange(12, dtype=np.int64).reshape(6, 2)
    y = np.arange(6, dtype=np.int32)
    model = LinearRegressor(epochs=2, lr=1e-3).fit(X, y)
    assert model.coef_.dtype == np.float32
    model = LinearRegressor(epochs=2, lr=1e-3).fit(X.astype(np.float32), y.astype(np.float64))
    assert model.coef_.dtype == np.float64


def test_lists_are_accepted():
    model = LinearRegressor(epochs=3, lr=1e-3).fit([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]], [1.0, 2.0, 3.0])
    assert model.predict([[1.0, 1.0]]).shape == (1,)


def test_caller_arrays_are_not_modified():
    X, Y, _, _ = random_problem(30, 3, 2, np.float32)
    X_f = np.asfortranarray(X)
    copies = X.copy(), Y.copy()
    W0, b0 = np.ones((2, 3), np.float32), np.zeros(2, np.float32)
    LinearRegressor(epochs=10, lr=0.01, init=(W0, b0)).fit(X_f, Y)
    np.testing.assert_array_equal(X_f, copies[0])
    np.testing.assert_array_equal(Y, copies[1])
    np.testing.assert_array_equal(W0, 1) and np.testing.assert_array_equal(b0, 0)


def test_get_set_params_and_repr():
    model = LinearRegressor(epochs=7, lr=0.1)
    params = model.get_params()
    assert (params["epochs"], params["lr"], params["init"], params["backend"]) == (7, 0.1, "ones", "cpu")
    assert model.set_params(epochs=9) is model and model.epochs == 9
    assert repr(model) == "LinearRegressor(epochs=9, lr=0.1)"
    with pytest.raises(ValueError, match="Invalid parameter 'epoch'"):
        model.set_params(epoch=3)
    with pytest.raises(TypeError):
        LinearRegressor(100)  # keyword-only


def test_progress_bar_gives_the_same_fit(capsys):
    X, Y, _, _ = random_problem(40, 3, 1, np.float32)
    quiet = LinearRegressor(epochs=250, lr=0.01).fit(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tqdm may warn about the terminal
        shown = LinearRegressor(epochs=250, lr=0.01, progress=True).fit(X, Y)
    np.testing.assert_array_equal(quiet.loss_history_, shown.loss_history_)
    np.testing.assert_array_equal(quiet.coef_, shown.coef_)
    assert "250/250" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_divergence_raises_and_keeps_last_finite_parameters(backend):
    X, y = linreg.datasets.seed_linear(n_samples=200, random_state=0)
    model = LinearRegressor(epochs=500, lr=1.0, backend=backend)
    with pytest.raises(linreg.DivergenceError, match=r"at epoch \d+ with lr=1;") as info:
        model.fit(X, y)
    assert "smaller lr" in str(info.value)
    assert 0 < model.n_iter_ < 500 and np.isfinite(model.loss_history_).all()
    assert np.isfinite(model.coef_).all() and np.isfinite(model.intercept_)


def test_not_fitted():
    with pytest.raises(linreg.NotFittedError, match="not fitted"):
        LinearRegressor().predict([[1.0]])


def test_predict_checks_features():
    X, Y, _, _ = random_problem(10, 3, 1, np.float64)
    model = LinearRegressor(epochs=1).fit(X, Y)
    with pytest.raises(ValueError, match="X has 2 features, but LinearRegressor is expecting 3 features as input"):
        model.predict(X[:, :2])


GOOD_X = np.ones((4, 2))
GOOD_Y = np.ones(4)
BAD_X_NAN = np.ones((4, 2))
BAD_X_NAN[2, 1] = np.nan
BAD_Y_INF = np.ones(4)
BAD_Y_INF[3] = -np.inf


@pytest.mark.parametrize("params, X, y, error, match", [
    ({}, BAD_X_NAN, GOOD_Y, ValueError, r"X contains nan at row 2, column 1"),
    ({}, GOOD_X, BAD_Y_INF, ValueError, r"y contains -inf at row 3"),
    ({}, GOOD_X, np.ones(3), ValueError, r"same number of samples, got X \(4, 2\) and y \(3,\)"),
    ({}, np.ones(4), GOOD_Y, ValueError, r"X must be 2-D .* got shape \(4,\).*reshape"),
    ({}, np.ones((4, 2, 1)), GOOD_Y, ValueError, "X must be 2-D"),
    ({}, GOOD_X, np.ones((4, 1, 1)), ValueError, "y must be 1-D"),
    ({}, np.ones((0, 2)), np.ones(0), ValueError, "X is empty"),
    ({}, np.ones((4, 0)), GOOD_Y, ValueError, "X has no features"),
    ({}, np.array([["a", "b"]] * 4), GOOD_Y, TypeError, "X must hold numbers"),
    ({}, GOOD_X, np.array(["x"] * 4), TypeError, "y must hold numbers"),
    ({}, GOOD_X.astype(np.complex128), GOOD_Y, TypeError, "complex128"),
    ({"lr": 0.0}, GOOD_X, GOOD_Y, ValueError, "lr must be > 0"),
    ({"lr": -1e-3}, GOOD_X, GOOD_Y, ValueError, "lr must be > 0"),
    ({"lr": float("nan")}, GOOD_X, GOOD_Y, ValueError, "lr must be > 0 and finite"),
    ({"lr": "fast"}, GOOD_X, GOOD_Y, ValueError, "lr must be a positive number or .auto., got .fast."),
    ({"epochs": 0}, GOOD_X, GOOD_Y, ValueError, "epochs must be > 0"),
    ({"epochs": 2.5}, GOOD_X, GOOD_Y, TypeError, "epochs must be an integer"),
    ({"backend": "gpu"}, GOOD_X, GOOD_Y, ValueError, "backend must be one of 'cpu', 'torch'"),
    ({"init": "random"}, GOOD_X, GOOD_Y, ValueError, "init must be one of"),
    ({"init": (np.ones(3), 0.0)}, GOOD_X, GOOD_Y, ValueError, r"init W must have shape \(1, 2\)"),
    ({"init": (np.ones((1, 2)), np.ones(2))}, GOOD_X, GOOD_Y, ValueError, r"init b must have shape \(1,\)"),
    ({"init": (np.full((1, 2), np.nan), 0.0)}, GOOD_X, GOOD_Y, ValueError, "init W contains nan"),
])
def test_bad_input_is_rejected_before_any_work(params, X, y, error, match, monkeypatch):
    from linreg import backends

    def no_work(*args, **kwargs):
        raise AssertionError("the backend was reached despite bad input")

    monkeypatch.setattr(backends.CpuBackend, "start_gd", no_work)
    with pytest.raises(error, match=match):
        LinearRegressor(**params).fit(X, y)
