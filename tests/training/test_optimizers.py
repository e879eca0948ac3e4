"""Optimisers, penalties, schedules and mini-batches against torch.optim, step for step, in float64."""

import numpy as np
import pytest
from helpers import minibatches, random_problem, torch_reference_fit

from linreg import LinearRegressor
from linreg.kernels import cpu_train
from linreg.testing import assert_close

torch = pytest.importorskip("torch")

N_SAMPLES, N_FEATURES, N_OUTPUTS = 53, 4, 2  # 53 = 3 batches of 16 and a partial batch of 5


def problem(seed=0):
    X, Y, W0, b0 = random_problem(N_SAMPLES, N_FEATURES, N_OUTPUTS, np.float64, seed)
    return X, Y + 0.5 * X @ np.ones((N_FEATURES, N_OUTPUTS)), W0, b0


def groups(w, b, weight_decay):
    return [{"params": [w], "weight_decay": weight_decay}, {"params": [b], "weight_decay": 0.0}]


def compare(params, make_optimizer, *, epochs=12, batch_size=None, shuffle=True, seed=7, penalty=None,
            make_scheduler=None, weights=None):
    X, Y, W0, b0 = problem()
    model = LinearRegressor(epochs=epochs, init=(W0, b0), batch_size=batch_size, shuffle=shuffle,
                            random_state=seed, **params).fit(X, Y, sample_weight=weights)
    batches = None
    if batch_size is not None:
        def order(epoch):
            return cpu_train.epoch_order(seed, epoch, N_SAMPLES) if shuffle else np.arange(N_SAMPLES)
        batches = minibatches(order, batch_size)
    W, b, history = torch_reference_fit(X, Y, W0, b0, epochs=epochs, make_optimizer=make_optimizer,
                                        batches=batches, weights=weights, penalty=penalty,
                                        make_scheduler=make_scheduler)
    assert model.n_iter_ == epochs
    assert_close(model.loss_history_, history, np.float64, "trajectory", "loss history")
    assert_close(model.coef_, W, np.float64, "trajectory", "coef_")
    assert_close(model.intercept_, b, np.float64, "trajectory", "intercept_")
    return model


SGD_CASES = [
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.8, nesterov=True),
    dict(momentum=0.5, weight_decay=0.1),
    dict(weight_decay=0.05),
]


@pytest.mark.parametrize("batch_size", [None, 16])
@pytest.mark.parametrize("options", SGD_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_sgd_matches_torch(options, batch_size):
    lr = 0.05

    def make(w, b):
        rest = {k: v for k, v in options.items() if k != "weight_decay"}
        return torch.optim.SGD(groups(w, b, options.get("weight_decay", 0.0)), lr=lr, **rest)

    compare(dict(lr=lr, optimizer="sgd", **options), make, batch_size=batch_size)


ADAM_CASES = [
    ("adam", dict()),
    ("adam", dict(betas=(0.8, 0.99), eps=1e-6)),
    ("adam", dict(amsgrad=True, weight_decay=0.1)),
    ("adamw", dict()),  # torch's default weight_decay 0.01
    ("adamw", dict(weight_decay=0.2, amsgrad=True)),
]


@pytest.mark.parametrize("batch_size", [None, 16])
@pytest.mark.parametrize("optimizer, options", ADAM_CASES, ids=lambda o: str(o))
def test_adam_matches_torch(optimizer, options, batch_size):
    lr = 0.03
    torch_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    default_decay = {"adam": 0.0, "adamw": 0.01}[optimizer]

    def make(w, b):
        rest = {k: v for k, v in options.items() if k != "weight_decay"}
        return torch_class(groups(w, b, options.get("weight_decay", default_decay)), lr=lr, **rest)

    compare(dict(lr=lr, optimizer=optimizer, **options), make, batch_size=batch_size)


@pytest.mark.parametrize("penalty, alpha, l1_ratio", [("l2", 0.3, 0.15), ("l1", 0.05, 0.15),
                                                      ("elasticnet", 0.1, 0.4)])
def test_penalties_match_torch_autograd(penalty, alpha, l1_ratio):
    """The objective is mse + alpha * ((1 - l1) / 2 ||W||^2 + l1 ||W||_1), bias unpenalised."""
    l1 = {"l2": 0.0, "l1": 1.0, "elasticnet": l1_ratio}[penalty]

    def regulariser(w):
        return alpha * ((1 - l1) / 2 * (w * w).sum() + l1 * w.abs().sum())

    compare(dict(lr=0.05, penalty=penalty, alpha=alpha, l1_ratio=l1_ratio, momentum=0.5),
            lambda w, b: torch.optim.SGD([w, b], lr=0.05, momentum=0.5), penalty=regulariser, batch_size=16)


def test_l2_penalty_and_weight_decay_take_the_same_steps():
    """torch's weight_decay adds wd * W to the gradient: the L2 penalty with alpha = wd."""
    X, Y, _, _ = problem()
    decay = LinearRegressor(epochs=30, lr=0.05, weight_decay=0.2, init="zeros").fit(X, Y)
    penalty = LinearRegressor(epochs=30, lr=0.05, penalty="l2", alpha=0.2, init="zeros").fit(X, Y)
    np.testing.assert_allclose(decay.coef_, penalty.coef_, rtol=1e-12)


@pytest.mark.parametrize("schedule, options, make_scheduler", [
    ("step", dict(step_size=3, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    ("exponential", dict(gamma=0.8), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8)),
    ("cosine", dict(t_max=8, eta_min=0.001),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8, eta_min=0.001)),
    ("cosine", dict(), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12)),
])
def test_schedules_match_torch_lr_scheduler(schedule, options, make_scheduler):
    compare(dict(lr=0.08, schedule=schedule, momentum=0.9, **options),
            lambda w, b: torch.optim.SGD([w, b], lr=0.08, momentum=0.9), make_scheduler=make_scheduler,
            batch_size=16)


def test_invscaling_schedule():
    """scikit-learn's eta0 / t ** power_t, with t the 1-based epoch."""
    power_t = 0.5
    compare(dict(lr=0.1, schedule="invscaling", power_t=power_t),
            lambda w, b: torch.optim.SGD([w, b], lr=0.1),
            make_scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (e + 1) ** power_t))


@pytest.mark.parametrize("shuffle", [True, False])
def test_minibatch_order_and_partial_last_batch(shuffle):
    model = compare(dict(lr=0.05), lambda w, b: torch.optim.SGD([w, b], lr=0.05), batch_size=16, shuffle=shuffle)
    assert model.n_iter_ == 12


def test_sample_weights_match_torch():
    weights = np.random.default_rng(1).uniform(0, 3, N_SAMPLES)
    compare(dict(lr=0.05, momentum=0.5), lambda w, b: torch.optim.SGD([w, b], lr=0.05, momentum=0.5),
            batch_size=16, weights=weights)
    compare(dict(lr=0.05), lambda w, b: torch.optim.SGD([w, b], lr=0.05), weights=weights)


def test_epoch_order_is_a_seeded_permutation():
    first = cpu_train.epoch_order(3, 0, 1000)
    assert sorted(first) == list(range(1000))
    np.testing.assert_array_equal(first, cpu_train.epoch_order(3, 0, 1000))
    assert not np.array_equal(first, cpu_train.epoch_order(3, 1, 1000))
    assert not np.array_equal(first, cpu_train.epoch_order(4, 0, 1000))
    rows = np.array([5, 9, 11, 20])
    assert sorted(cpu_train.epoch_order(3, 0, 30, rows)) == list(rows)


def test_batch_size_above_n_samples_is_one_batch():
    X, Y, _, _ = problem()
    big = LinearRegressor(epochs=5, lr=0.05, batch_size=10_000, momentum=0.5).fit(X, Y)
    full = LinearRegressor(epochs=5, lr=0.05, momentum=0.5).fit(X, Y)
    np.testing.assert_array_equal(big.loss_history_, full.loss_history_)
