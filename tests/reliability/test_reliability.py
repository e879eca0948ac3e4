"""Issue 7's guarantees: divergence, interrupts and checkpoints, accuracy at scale, determinism, concurrency."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import random_problem

import linreg
from linreg import LinearRegressor, compilation

# -- divergence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [dict(), dict(momentum=0.5), dict(batch_size=64, optimizer="sgd", momentum=0.1)])
def test_exploding_loss_stops_long_before_overflow(params):
    """lr a little above 2/L: the loss grows ~4x per epoch; it is caught at 1e10 x the first loss."""
    X, y = linreg.datasets.seed_linear(n_samples=1000, random_state=0)
    model = LinearRegressor(epochs=5000, lr=1e-4, **params)
    with pytest.raises(linreg.DivergenceError, match=r"loss (exploded|became non-finite) .* at epoch \d+ with "
                                                     r"lr=0.0001.*standardize=True, lr='auto' or a smaller lr"):
        model.fit(X, y)
    assert model.stop_reason_ == "diverged" and model.n_iter_ < 200
    assert np.isfinite(model.loss_history_).all() and np.isfinite(model.coef_).all()
    assert model.loss_history_.max() <= 1e10 * model.loss_history_[0]


def test_divergence_keeps_the_parameters_of_the_last_finite_loss():
    X, y = linreg.datasets.seed_linear(n_samples=500, random_state=0)
    model = LinearRegressor(epochs=5000, lr=1e-4, momentum=0.5)
    with pytest.raises(linreg.DivergenceError):
        model.fit(X, y)
    kept_loss = ((model.predict(X) - y.astype(np.float64)) ** 2).mean()
    assert kept_loss == pytest.approx(model.loss_history_[-1], rel=1e-5)


# -- interrupts and checkpoints -------------------------------------------------------------------


def interrupt_soon(delay):
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.parametrize("params", [dict(lr=1e-5), dict(lr=0.01, optimizer="adam", batch_size=512)])
def test_ctrl_c_leaves_the_last_completed_epoch(params, monkeypatch):
    from linreg import driver

    X, y = linreg.datasets.seed_linear(n_samples=50_000, random_state=0)
    model = LinearRegressor(epochs=10**7, **params)
    # Compile first (an empty cache, as in CI, takes seconds): the interrupt must land in training, not compiling.
    compilation.prepare_fit(model, X, y)
    # A real SIGINT, sent once the fit's handler is installed: a timer started before fit() could fire during
    # validation or planning on a loaded machine, where the Ctrl-C contract is Python's own (it failed so in CI).
    timers, flags, lost = [], [], []
    enter = driver._interrupt_flag.__enter__

    def end_the_fit(flag):  # the SIGINT never reached the fit's handler: record what was there, end the fit
        lost.append((flag._installed, signal.getsignal(signal.SIGINT)))
        flag._set = True

    def enter_then_interrupt(self):
        flag = enter(self)
        if not timers:  # the first fit only (the second one below runs to its end)
            flags.append(flag)
            timers.append(interrupt_soon(0.3))
            # A lost SIGINT would leave 10**7 epochs to run: fail with what happened instead of hanging the suite.
            watchdog = threading.Timer(120.0, end_the_fit, (flag,))
            watchdog.daemon = True
            watchdog.start()
            timers.append(watchdog)
        return flag

    monkeypatch.setattr(driver._interrupt_flag, "__enter__", enter_then_interrupt)
    with pytest.raises(KeyboardInterrupt, match="interrupted after epoch"):
        model.fit(X, y)
    assert len(timers) == 2
    timers[1].cancel()
    timers[0].join()
    assert not lost, f"the SIGINT did not reach the fit's handler (installed, SIGINT handler): {lost}"
    assert model.stop_reason_ == "interrupted" and 0 < model.n_iter_ < 10**7
    assert model.loss_history_.shape == (model.n_iter_,)
    # The state is that of a fit of exactly n_iter_ epochs.
    again = LinearRegressor(epochs=model.n_iter_, random_state=model.random_state, **params)
    if "batch_size" not in params:
        again.fit(X, y)
        np.testing.assert_array_equal(again.coef_, model.coef_)
        np.testing.assert_array_equal(again.loss_history_, model.loss_history_)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored


PARAMS = [
    dict(lr=1e-5),  # plain GD: the seeds' loop
    dict(lr=0.01, optimizer="adam", batch_size=100, standardize=True),  # random_state=None: the seed is saved
    # Stops by tol at epoch 33 uninterrupted: the stopping state must survive the checkpoint too.
    dict(lr=0.005, standardize=True, momentum=0.9, schedule="cosine", tol=1e-6, n_iter_no_change=3, penalty="l2",
         alpha=1e-3),
    dict(lr=1e-5, backend="torch"),
]


def interrupt_after_blocks(monkeypatch, n_blocks):
    """Make the fit see a Ctrl-C after n_blocks blocks, as the SIGINT handler would report it."""
    from linreg import driver

    calls = {"n": 0}

    def is_set(self):
        calls["n"] += 1
        return calls["n"] >= n_blocks

    monkeypatch.setattr(driver._interrupt_flag, "is_set", is_set)


@pytest.mark.parametrize("params", PARAMS)
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path, monkeypatch, params):
    X, y = linreg.datasets.seed_linear(n_samples=1000, random_state=0)
    path = tmp_path / "run.npz"
    options = dict(epochs=60, checkpoint_path=str(path), checkpoint_every=10, **params)
    with monkeypatch.context() as patch:
        interrupt_after_blocks(patch, 2)
        first = LinearRegressor(**options)
        with pytest.raises(KeyboardInterrupt):
            first.fit(X, y)
    assert 0 < first.n_iter_ < 60 and first.n_iter_ % 10 == 0 and path.exists()
    resumed = LinearRegressor(**options).fit(X, y, resume=True)
    from linreg import checkpoint

    meta, _ = checkpoint.load(path, params=resumed.get_params(), data=checkpoint.fingerprint(X, y.reshape(-1, 1), None))
    # The uninterrupted run, with the seed the first fit drew (random_state=None for the Adam case).
    whole = LinearRegressor(**{**params, "epochs": 60, "random_state": meta["seed"]}).fit(X, y)
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)
    np.testing.assert_array_equal(resumed.intercept_, whole.intercept_)
    np.testing.assert_array_equal(resumed.loss_history_, whole.loss_history_)
    assert resumed.n_iter_ == whole.n_iter_ and resumed.stop_reason_ == whole.stop_reason_


def test_resume_refuses_other_data_or_options(tmp_path):
    X, y = linreg.datasets.seed_linear(n_samples=300, random_state=0)
    path = tmp_path / "run.npz"
    LinearRegressor(epochs=5, checkpoint_path=str(path)).fit(X, y)
    with pytest.raises(ValueError, match="different data"):
        LinearRegressor(epochs=9, checkpoint_path=str(path)).fit(X + 1, y, resume=True)
    with pytest.raises(ValueError, match=r"different hyper-parameters \(lr\)"):
        LinearRegressor(epochs=9, lr=1e-6, checkpoint_path=str(path)).fit(X, y, resume=True)
    with pytest.raises(ValueError, match="more than this fit's epochs"):
        LinearRegressor(epochs=3, checkpoint_path=str(path)).fit(X, y, resume=True)
    cosine = dict(schedule="cosine", lr=1e-5, momentum=0.5, checkpoint_path=str(path))
    LinearRegressor(epochs=5, **cosine).fit(X, y)
    with pytest.raises(ValueError, match=r"different hyper-parameters \(epochs\)"):
        LinearRegressor(epochs=9, **cosine).fit(X, y, resume=True)
    path.write_bytes(b"garbage")
    with pytest.raises(linreg.ModelFileError, match="not a readable linreg checkpoint"):
        LinearRegressor(epochs=9, checkpoint_path=str(path)).fit(X, y, resume=True)
    with pytest.warns(UserWarning, match="starting from scratch"):
        LinearRegressor(epochs=2, checkpoint_path=str(tmp_path / "none.npz")).fit(X, y, resume=True)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint_path"):
        LinearRegressor(checkpoint_every=3).fit(X, y)
    with pytest.raises(ValueError, match="resume=True reads the checkpoint"):
        LinearRegressor().fit(X, y, resume=True)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the previous checkpoint intact and no temporary file behind."""
    X, y = linreg.datasets.seed_linear(n_samples=300, random_state=0)
    path = tmp_path / "run.npz"
    LinearRegressor(epochs=5, checkpoint_path=str(path)).fit(X, y)
    before = path.read_bytes()

    def failing_savez(stream, **arrays):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        LinearRegressor(epochs=5, checkpoint_path=str(path)).fit(X, y)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]


def test_cli_ctrl_c_saves_and_resume_finishes_like_an_uninterrupted_run(tmp_path):
    # Long enough (seconds) that the interrupt sent after the first checkpoint lands inside the fit, not after it:
    # a SIGINT that reaches a process already shutting down kills it with no message (exit -2).
    common = ["--n-samples", "20000", "--epochs", "100000", "--no-progress", "--no-compare"]
    checkpoint, saved = tmp_path / "ck.npz", tmp_path / "model.npz"
    command = [sys.executable, "-m", "linreg", "train", *common, "--checkpoint", str(checkpoint),
               "--checkpoint-every", "1000", "--save", str(saved)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.fail("the run finished before it could be interrupted; make it longer")
    assert process.returncode == 130, err
    assert "interrupted: fit interrupted after epoch" in err and "--resume" in err
    interrupted = linreg.load(saved)
    assert 0 < interrupted.n_iter_ < 100000 and interrupted.stop_reason_ == "interrupted"
    result = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    X, y = linreg.datasets.seed_linear(n_samples=20000, random_state=0)
    whole = LinearRegressor(epochs=100000, lr=1e-5).fit(X, y)  # the CLI demo runs seed 000's step
    resumed = linreg.load(saved)
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)
    np.testing.assert_array_equal(resumed.loss_history_, whole.loss_history_)


# -- accuracy at scale ---------------------------------------------------------------------------


@pytest.mark.slow
def test_float32_accuracy_at_ten_million_samples():
    """float64 accumulation of float32 partials: loss and gradients within 1e-6 of a float64 reference."""
    from linreg.kernels import cpu

    n_samples = 10_000_000
    rng = np.random.default_rng(0)
    X = rng.uniform(10, 100, (n_samples, 3)).astype(np.float32)  # large mean: the hard case for float32 sums
    W = np.array([[2.0, -1.0, 0.5]], np.float32)
    b = np.array([3.0], np.float32)
    Y = (X.astype(np.float64) @ W.T.astype(np.float64) + 3.0 + rng.standard_normal((n_samples, 1))).astype(np.float32)
    dW, db = np.empty_like(W), np.empty_like(b)
    loss = cpu.loss_grad(X, Y, W, b, dW, db)
    R = X.astype(np.float64) @ W.T.astype(np.float64) + 3.0 - Y.astype(np.float64)
    reference_loss = float((R * R).sum() / R.size)
    reference_dW = 2 / R.size * (R.T @ X.astype(np.float64))
    reference_db = 2 / R.size * R.sum(axis=0)
    del R
    assert abs(loss - reference_loss) / reference_loss <= 1e-6
    assert np.abs(dW - reference_dW).max() / np.abs(reference_dW).max() <= 1e-6
    assert np.abs(db - reference_db).max() / np.abs(reference_db).max() <= 1e-6


# -- determinism and concurrency --------------------------------------------------------------------


def test_two_fits_in_two_threads_are_both_correct():
    problems = [random_problem(30_000, 8, 2, np.float64, seed) for seed in (1, 2)]
    options = [dict(lr=0.05, momentum=0.9, batch_size=256, random_state=3), dict(lr=0.05, epochs=40)]
    expected = [LinearRegressor(epochs=20, **options[0]).fit(*problems[0][:2]),
                LinearRegressor(**{"epochs": 20, **options[1]}).fit(*problems[1][:2])]
    results = [None, None]
    errors = []

    def work(k):
        try:
            results[k] = LinearRegressor(**{"epochs": 20, **options[k]}).fit(*problems[k][:2])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got.coef_, want.coef_)
        np.testing.assert_array_equal(got.loss_history_, want.loss_history_)


ENGINE_FIT = """
import json, sys, numpy as np, linreg
from linreg.kernels import cpu
cpu.CHUNK_ROWS = 256
rng = np.random.default_rng(0)
X = rng.standard_normal((60000, 6)).astype(np.float32)
y = X @ np.arange(1, 7, dtype=np.float32) + 0.1 * rng.standard_normal(60000).astype(np.float32)
params = json.loads(sys.argv[1])
model = linreg.LinearRegressor(**params).fit(X, y)
print(json.dumps({"coef": model.coef_.tobytes().hex(), "history": model.loss_history_.tobytes().hex()}))
"""


@pytest.mark.parametrize("params", [
    dict(epochs=15, lr=0.01, optimizer="adam", batch_size=4096, random_state=1),
    dict(epochs=15, lr="auto", standardize=True, momentum=0.5, penalty="elasticnet"),
    dict(epochs=15, lr="auto", solver="gram"),
    dict(solver="normal"),
], ids=["adam-minibatch", "standardize-auto", "gram", "normal"])
def test_engine_fits_are_bit_identical_for_1_and_2_threads(params):
    import json

    outputs = []
    for threads in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", ENGINE_FIT, json.dumps(params)], capture_output=True,
                                text=True, timeout=300, env={**os.environ, "NUMBA_NUM_THREADS": threads})
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]


def test_reruns_are_bit_identical_on_each_backend():
    X, y = linreg.datasets.seed_linear(n_samples=2000, random_state=0)
    for backend in ("cpu", "torch"):
        first = LinearRegressor(epochs=50, backend=backend).fit(X, y)
        second = LinearRegressor(epochs=50, backend=backend).fit(X, y)
        np.testing.assert_array_equal(first.coef_, second.coef_)
        np.testing.assert_array_equal(first.loss_history_, second.loss_history_)


def test_unwritable_kernel_cache_directory_does_not_break_a_fit():
    code = ("import numpy as np, linreg\n"
            "X = np.random.default_rng(0).standard_normal((100, 3))\n"
            "m = linreg.LinearRegressor(epochs=3, lr=1e-3, momentum=0.5).fit(X, X.sum(1))\n"
            "print(m.coef_.tobytes().hex())")
    results = []
    for cache in ("/dev/null/not-a-directory", None):
        env = {**os.environ}
        if cache:
            env["NUMBA_CACHE_DIR"] = cache
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr
        results.append(result.stdout)
    assert results[0] == results[1]


def test_ctrl_c_out_of_core_leaves_the_last_completed_epoch(tmp_path, monkeypatch):
    from linreg import outofcore

    outofcore.write_synthetic(tmp_path / "X.npy", tmp_path / "y.npy", 5000, 4, random_state=1)
    interrupt_after_blocks(monkeypatch, 2)
    model = LinearRegressor(epochs=1000, lr=0.01)
    with pytest.raises(KeyboardInterrupt, match="interrupted after epoch"):
        model.fit(tmp_path / "X.npy", tmp_path / "y.npy")
    assert model.stop_reason_ == "interrupted" and 0 < model.n_iter_ < 1000
    monkeypatch.undo()
    again = LinearRegressor(epochs=model.n_iter_, lr=0.01).fit(tmp_path / "X.npy", tmp_path / "y.npy")
    np.testing.assert_array_equal(again.coef_, model.coef_)
