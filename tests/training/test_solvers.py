"""Solvers, standardisation, lr='auto' and stopping, against numpy.linalg.lstsq, scikit-learn and references."""

import warnings

import numpy as np
import pytest
from helpers import random_problem

import linreg
from linreg import LinearRegressor
from linreg.testing import assert_close

sklearn_linear = pytest.importorskip("sklearn.linear_model")


def noisy_problem(n_samples=300, n_features=5, n_outputs=2, dtype=np.float64, seed=0, offset=3.0):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n_samples, n_features)) * rng.uniform(0.5, 4, n_features) + offset).astype(dtype)
    W = rng.standard_normal((n_outputs, n_features))
    Y = (X @ W.T + rng.standard_normal(n_outputs) + 0.1 * rng.standard_normal((n_samples, n_outputs))).astype(dtype)
    return X, Y


def lstsq(X, Y, weights=None):
    A = np.hstack([X, np.ones((len(X), 1))]).astype(np.float64)
    root = np.ones(len(X)) if weights is None else np.sqrt(weights)
    theta = np.linalg.lstsq(A * root[:, None], Y.astype(np.float64) * root[:, None], rcond=None)[0]
    return theta[:-1].T, theta[-1]


# -- the exact solver ------------------------------------------------------------------------


@pytest.mark.parametrize("standardize", [False, True])
def test_normal_solver_equals_lstsq(standardize):
    X, Y = noisy_problem()
    model = LinearRegressor(solver="normal", standardize=standardize).fit(X, Y)
    W, b = lstsq(X, Y)
    assert_close(model.coef_, W, np.float64, "oracle", "coef_")
    assert_close(model.intercept_, b, np.float64, "oracle", "intercept_")
    assert model.n_iter_ == 1 and model.loss_history_.shape == (1,)
    assert model.loss_history_[0] == pytest.approx(((X @ W.T + b - Y) ** 2).mean(), rel=1e-9)


def test_normal_solver_with_sample_weights_equals_weighted_lstsq_and_sklearn():
    X, Y = noisy_problem()
    weights = np.random.default_rng(2).uniform(0, 2, len(X))
    model = LinearRegressor(solver="normal").fit(X, Y, sample_weight=weights)
    W, b = lstsq(X, Y, weights)
    assert_close(model.coef_, W, np.float64, "oracle", "coef_")
    reference = sklearn_linear.LinearRegression().fit(X, Y, sample_weight=weights)
    assert_close(model.coef_, reference.coef_, np.float64, "oracle", "coef_ vs scikit-learn")
    assert_close(model.intercept_, reference.intercept_, np.float64, "oracle", "intercept_ vs scikit-learn")


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_l2_normal_solver_equals_sklearn_ridge(n_outputs):
    """Ridge minimises ||y - Xw||^2 + a ||w||^2 per output: a = n_samples * n_outputs * alpha / 2."""
    X, Y = noisy_problem(n_outputs=n_outputs)
    alpha = 0.05
    model = LinearRegressor(solver="normal", penalty="l2", alpha=alpha).fit(X, Y)
    ridge = sklearn_linear.Ridge(alpha=len(X) * n_outputs * alpha / 2).fit(X, Y)
    assert_close(model.coef_, np.reshape(ridge.coef_, model.coef_.shape), np.float64, "oracle", "coef_ vs Ridge")
    assert_close(model.intercept_, np.reshape(ridge.intercept_, model.intercept_.shape), np.float64, "oracle",
                 "intercept_ vs Ridge")


def test_singular_system_warns_and_returns_minimum_norm_solution():
    X, Y = noisy_problem(n_outputs=1)
    X = np.hstack([X, X[:, :1]])  # a duplicated column: X^T X is singular
    with pytest.warns(linreg.IllConditionedWarning, match="singular"):
        model = LinearRegressor(solver="normal").fit(X, Y)
    W, b = lstsq(X, Y)  # lstsq also returns the minimum-norm solution
    assert_close(model.coef_, W, np.float64, "oracle", "coef_")


def test_ill_conditioned_system_warns():
    X, Y = noisy_problem(n_outputs=1)
    X = np.hstack([X, X[:, :1] + 1e-6 * np.random.default_rng(0).standard_normal((len(X), 1))])
    with pytest.warns(linreg.IllConditionedWarning, match="ill-conditioned"):
        LinearRegressor(solver="normal").fit(X, Y)


def test_feature_scale_alone_does_not_warn():
    """Jacobi scaling removes conditioning that only comes from units."""
    X, Y = noisy_problem(n_outputs=1)
    X = X * np.array([1e-6, 1, 1e6, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = LinearRegressor(solver="normal").fit(X, Y)
    assert_close(model.coef_, lstsq(X, Y)[0], np.float64, "oracle", "coef_")


# -- gradient descent that converges ---------------------------------------------------------


def test_seed_000_bias_converges_with_standardize_and_auto_lr():
    """The issue's bar: bias 4 and all coefficients within 1e-3 in at most 100 epochs."""
    X, y = linreg.datasets.seed_linear(random_state=0)
    model = LinearRegressor(standardize=True, lr="auto", epochs=100).fit(X, y)
    np.testing.assert_allclose(model.coef_, [2, 8, 1, 3, 6], atol=1e-3)
    assert abs(model.intercept_ - 4) < 1e-3
    seed = LinearRegressor(**linreg.datasets.SEED_000_SETTINGS).fit(X, y)
    assert abs(seed.intercept_ - 4) > 2.9  # the seed's setting does not get there


def test_auto_lr_is_one_over_the_largest_hessian_eigenvalue():
    X, Y = noisy_problem()
    model = LinearRegressor(lr="auto", epochs=50).fit(X, Y)
    A = np.hstack([X, np.ones((len(X), 1))])
    largest = np.linalg.eigvalsh(2 / Y.size * A.T @ A)[-1]
    assert model.lr_ == pytest.approx(1 / largest, rel=1e-10)
    assert np.all(np.diff(model.loss_history_) <= 0)  # full-batch GD at 1/L never increases the loss
    ridge = LinearRegressor(lr="auto", epochs=5, penalty="l2", alpha=0.5).fit(X, Y)
    assert ridge.lr_ == pytest.approx(1 / (largest + 0.5), rel=1e-10)


def test_standardize_equals_fitting_standardised_data():
    """standardize=True is a reparametrisation: the same trajectory as fitting (X - mu) / sigma."""
    X, Y = noisy_problem()
    mu, sigma = X.mean(axis=0), X.std(axis=0)
    ours = LinearRegressor(standardize=True, lr=0.1, epochs=40, init="zeros", momentum=0.5).fit(X, Y)
    manual = LinearRegressor(lr=0.1, epochs=40, init="zeros", momentum=0.5).fit((X - mu) / sigma, Y)
    np.testing.assert_allclose(ours.loss_history_, manual.loss_history_, rtol=1e-10)
    np.testing.assert_allclose(ours.coef_, manual.coef_ / sigma, rtol=1e-9)
    np.testing.assert_allclose(ours.intercept_, manual.intercept_ - (manual.coef_ / sigma) @ mu, rtol=1e-9)
    # A constant column is left unscaled (as StandardScaler), not divided by zero.
    X[:, 2] = 7.0
    assert np.isfinite(LinearRegressor(standardize=True, lr="auto", epochs=5).fit(X, Y).coef_).all()


@pytest.mark.parametrize("optimizer, options", [("sgd", dict(momentum=0.9)), ("adam", dict())])
def test_gram_solver_follows_streaming_gd(optimizer, options):
    X, Y = noisy_problem()
    lr = 0.01 if optimizer == "sgd" else 0.05
    common = dict(lr=lr, epochs=60, optimizer=optimizer, init="zeros", **options)
    streaming = LinearRegressor(**common).fit(X, Y)
    gram = LinearRegressor(solver="gram", **common).fit(X, Y)
    # Up to rounding: the Gram loss subtracts large terms (y^T y - 2 theta^T C + ...), ~1e-12 here.
    np.testing.assert_allclose(gram.loss_history_, streaming.loss_history_, rtol=1e-9)
    np.testing.assert_allclose(gram.coef_, streaming.coef_, rtol=1e-9, atol=1e-12)


def test_gd_with_l2_converges_to_ridge_and_l1_to_elastic_net():
    X, Y = noisy_problem(n_outputs=1)
    y = Y[:, 0]
    alpha = 0.02
    ridge = LinearRegressor(penalty="l2", alpha=alpha, lr="auto", standardize=False, epochs=20000,
                            init="zeros", solver="gram").fit(X, y)
    reference = sklearn_linear.Ridge(alpha=len(X) * alpha / 2).fit(X, y)
    np.testing.assert_allclose(ridge.coef_, reference.coef_, rtol=1e-6)
    # ElasticNet minimises 1/(2n)||r||^2 + a*l1*||w||_1 + a*(1-l1)/2*||w||^2: a = alpha / 2.
    net = LinearRegressor(penalty="elasticnet", alpha=alpha, l1_ratio=0.5, lr="auto", epochs=20000,
                          init="zeros", solver="gram").fit(X, y)
    reference = sklearn_linear.ElasticNet(alpha=alpha / 2, l1_ratio=0.5, tol=1e-12, max_iter=100000).fit(X, y)
    assert np.all(reference.coef_ != 0)  # smooth at the optimum: GD converges there exactly
    np.testing.assert_allclose(net.coef_, reference.coef_, rtol=1e-5)
    np.testing.assert_allclose(net.intercept_, reference.intercept_, rtol=1e-5)


def test_sgd_regressor_alpha_mapping():
    """SGDRegressor minimises 1/n sum 1/2 r^2 + a R(w): the same minimiser as ours with a = alpha / 2.

    alpha is large enough that the wrong mapping (a = alpha) would move the
    coefficients by 11%, while SGDRegressor's own noise here is under 1%.
    """
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 4))
    y = X @ [1.5, -2, 0.5, 1] + 0.7 + 0.3 * rng.standard_normal(2000)
    alpha = 0.5
    ours = LinearRegressor(solver="normal", penalty="l2", alpha=alpha).fit(X, y)
    sgd = sklearn_linear.SGDRegressor(alpha=alpha / 2, penalty="l2", max_iter=1000, tol=1e-8, eta0=0.01,
                                      learning_rate="invscaling", power_t=0.5, random_state=0,
                                      average=True).fit(X, y)
    np.testing.assert_allclose(ours.coef_, sgd.coef_, rtol=2e-2)
    wrong = LinearRegressor(solver="normal", penalty="l2", alpha=alpha / 2).fit(X, y)
    assert np.abs(wrong.coef_ - sgd.coef_).max() > 5 * np.abs(ours.coef_ - sgd.coef_).max()


# -- stopping --------------------------------------------------------------------------------


def reference_stop(history, tol, n_iter_no_change):
    """scikit-learn's rule: count epochs with loss > best - tol; stop when the count reaches n."""
    best, count = np.inf, 0
    for epoch, loss in enumerate(history):
        count = count + 1 if loss > best - tol else 0
        best = min(best, loss)
        if count >= n_iter_no_change:
            return epoch + 1
    return None


def test_tol_stops_like_scikit_learn():
    X, Y = noisy_problem()
    full = LinearRegressor(lr=0.01, epochs=400, momentum=0.5).fit(X, Y)
    expected = reference_stop(full.loss_history_, 1e-3, 3)
    stopped = LinearRegressor(lr=0.01, epochs=400, momentum=0.5, tol=1e-3, n_iter_no_change=3).fit(X, Y)
    assert expected is not None and stopped.n_iter_ == expected and stopped.stop_reason_ == "tol"
    np.testing.assert_array_equal(stopped.loss_history_, full.loss_history_[:expected])


def test_convergence_warning_when_epochs_run_out():
    X, Y = noisy_problem()
    with pytest.warns(linreg.ConvergenceWarning, match="epoch budget"):
        model = LinearRegressor(lr=1e-4, epochs=5, tol=1e-9).fit(X, Y)
    assert model.n_iter_ == 5 and model.stop_reason_ == "epochs"


def test_early_stopping_on_validation_loss_keeps_the_best_parameters():
    X, Y = noisy_problem(n_samples=400)
    model = LinearRegressor(lr=0.01, epochs=2000, early_stopping=True, validation_fraction=0.2, tol=1e-4,
                            n_iter_no_change=4, random_state=5, momentum=0.8).fit(X, Y)
    assert model.stop_reason_ == "early_stopping" and model.n_iter_ < 2000
    history = model.validation_loss_history_
    assert history.shape == (model.n_iter_,)
    assert reference_stop(history, 1e-4, 4) == model.n_iter_
    train, validation = linreg.training.split_validation(400, 0.2, 5)
    assert len(validation) == 80 and len(np.intersect1d(train, validation)) == 0
    best = history.min()
    kept = ((model.predict(X[validation]) - Y[validation]) ** 2).mean()
    assert kept == pytest.approx(best, rel=1e-10)


def test_adaptive_schedule_divides_lr_by_5_and_stops_below_1e_6():
    X, Y = noisy_problem()
    tol, n_iter_no_change = 1e-3, 3
    # lr so large the loss oscillates: adaptive must cut it until it improves again.
    model = LinearRegressor(lr=0.5, epochs=3000, schedule="adaptive", tol=tol, n_iter_no_change=n_iter_no_change,
                            standardize=True).fit(X, Y)
    assert model.stop_reason_ == "adaptive"
    reference = reference_adaptive(X, Y, 0.5, tol, n_iter_no_change, model.n_iter_ + 10)
    # Every stall decision of the reference is 2% away from the tol threshold here, so
    # rounding cannot flip one (at tol=1e-6 a decision sits within 1e-11 of it).
    assert len(reference) == model.n_iter_
    np.testing.assert_allclose(model.loss_history_, reference, rtol=1e-8)


def reference_adaptive(X, Y, lr, tol, n_iter_no_change, epochs):
    """Plain NumPy GD on standardised X with scikit-learn's adaptive rule, from init="ones" in original units."""
    mu, sigma = X.mean(0), X.std(0)
    Xs = (X - mu) / sigma
    W, b = np.ones((Y.shape[1], X.shape[1])) * sigma, np.ones(Y.shape[1]) + mu.sum()
    best, count, history = np.inf, 0, []
    for _ in range(epochs):
        R = Xs @ W.T + b - Y
        loss = (R**2).mean()
        history.append(loss)
        W, b = W - lr * 2 / R.size * R.T @ Xs, b - lr * 2 / R.size * R.sum(0)
        count = count + 1 if loss > best - tol else 0
        best = min(best, loss)
        if count >= n_iter_no_change:
            if lr > 1e-6:
                lr, count = lr / 5, 0
            else:
                break
    return np.array(history)


# -- warm start, partial_fit, sample_weight ------------------------------------------------------


def test_warm_start_continues_the_fit():
    X, y = linreg.datasets.seed_linear(n_samples=500, random_state=0)
    once = LinearRegressor(epochs=60).fit(X, y)
    twice = LinearRegressor(epochs=20, warm_start=True).fit(X, y)
    twice.set_params(epochs=40).fit(X, y)
    np.testing.assert_array_equal(once.coef_, twice.coef_)
    assert once.intercept_ == twice.intercept_


def test_partial_fit_epochs_equal_fit_epochs():
    X, Y = noisy_problem()
    params = dict(lr=0.01, batch_size=32, momentum=0.9, random_state=3, schedule="step", step_size=2, gamma=0.5)
    fitted = LinearRegressor(epochs=5, **params).fit(X, Y)
    partial = LinearRegressor(**params)
    for _ in range(5):
        partial.partial_fit(X, Y)
    np.testing.assert_array_equal(partial.coef_, fitted.coef_)
    np.testing.assert_array_equal(partial.loss_history_, fitted.loss_history_)
    assert partial.n_iter_ == 5


def test_integer_sample_weights_equal_repeated_rows():
    X, Y = noisy_problem(n_samples=50)
    counts = np.random.default_rng(0).integers(0, 4, 50)
    weighted = LinearRegressor(lr=0.01, epochs=30, momentum=0.5).fit(X, Y, sample_weight=counts)
    repeated = LinearRegressor(lr=0.01, epochs=30, momentum=0.5).fit(np.repeat(X, counts, 0), np.repeat(Y, counts, 0))
    np.testing.assert_allclose(weighted.loss_history_, repeated.loss_history_, rtol=1e-10)
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, rtol=1e-10)


# -- combinations that are errors -----------------------------------------------------------------


@pytest.mark.parametrize("params, fit_kwargs, match", [
    (dict(backend="torch", batch_size=16), {}, "backend='torch' runs plain full-batch .* batch_size=16"),
    (dict(backend="torch", standardize=True), {}, "standardize=True"),
    (dict(backend="torch"), dict(sample_weight=np.ones(20)), "sample_weight"),
    (dict(solver="normal", penalty="l1"), {}, "no closed form"),
    (dict(solver="gram", batch_size=8), {}, "batch_size must be None"),
    (dict(optimizer="adam", lr="auto"), {}, "lr='auto' .* needs optimizer='sgd'"),
    (dict(optimizer="adam", momentum=0.9), {}, "momentum, dampening and nesterov are SGD options"),
    (dict(nesterov=True), {}, "nesterov=True needs momentum > 0"),
    (dict(schedule="adaptive"), {}, "set tol"),
    (dict(early_stopping=True), {}, "set tol"),
    (dict(early_stopping=True, tol=1e-3, validation_fraction=0.99), {}, "leaves 0 training .* 1 of each"),
    (dict(lr="fast"), {}, "lr must be a positive number or 'auto'"),
    (dict(solver="sgd"), {}, "solver must be one of"),
    (dict(penalty="ridge"), {}, "penalty must be one of"),
    (dict(betas=(0.9, 1.0), optimizer="adam"), {}, r"betas\[1\] must be a finite number in \[0, 1\)"),
    (dict(l1_ratio=1.5, penalty="elasticnet"), {}, r"l1_ratio must be a finite number in \[0, 1\]"),
    (dict(batch_size=0), {}, "batch_size must be > 0"),
    ({}, dict(sample_weight=-np.ones(20)), "sample_weight must be non-negative"),
    ({}, dict(sample_weight=np.ones(19)), r"sample_weight must have shape \(20,\)"),
    ({}, dict(sample_weight=np.zeros(20)), "sums to 0"),
])
def test_unsupported_combinations_are_clear_errors(params, fit_kwargs, match):
    X, Y, _, _ = random_problem(20, 3, 1, np.float64)
    with pytest.raises((ValueError, TypeError), match=match):
        LinearRegressor(**params).fit(X, Y, **fit_kwargs)


def test_partial_fit_rejects_whole_data_options():
    X, Y, _, _ = random_problem(20, 3, 1, np.float64)
    with pytest.raises(ValueError, match="partial_fit needs solver='gd'"):
        LinearRegressor(standardize=True).partial_fit(X, Y)


def test_stepper_over_chunks_equals_the_in_memory_engine():
    """Gradient sums of several chunks, then one Stepper step: the update out-of-core and distributed use."""
    from linreg import options
    from linreg._engine import EngineState, Stepper, batch_sums

    X, Y = noisy_problem(n_samples=203)
    weights = np.random.default_rng(3).uniform(0.5, 2, len(X))
    params = LinearRegressor(lr=0.01, momentum=0.9, penalty="elasticnet", alpha=0.01, standardize=True,
                             epochs=25).get_params()
    reference = LinearRegressor(**params).fit(X, Y, sample_weight=weights)
    mu = np.average(X, axis=0, weights=weights)
    sigma = np.sqrt(np.average((X - mu) ** 2, axis=0, weights=weights))
    state = EngineState(np.ones((2, 5)), np.ones(2), mu, sigma, True)
    stepper = Stepper(options.make_spec(params), state, X.dtype)
    history = []
    for _ in range(25):
        W, b = stepper.kernel_params()
        sums = sum(batch_sums(X[rows], Y[rows], W, b, weights[rows]) for rows in np.array_split(np.arange(203), 3))
        history.append(stepper.step(sums, 0.01))
    np.testing.assert_allclose(history, reference.loss_history_, rtol=1e-12)
    np.testing.assert_allclose(state.original_units()[0], reference.coef_, rtol=1e-12)
