"""Ahead-of-time compiled plain GD (``linreg.aot``, ``kernels.aot_gd``): same bits as the JIT kernels, a fit in a
new process without numba, the cache key, the fallbacks, ``linreg compile``.

The libraries are built here (``linreg compile --aot-only``, once per module) into a folder of the test's own
(``LINREG_AOT_DIR``): CI starts with an empty cache.
"""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import linreg
from linreg import aot, compilation
from linreg.kernels import cpu, layout

ROOT = Path(__file__).resolve().parents[2]
BUILT = [(dtype, n) for dtype in ("float32", "float64") for n in (1, 5, 8)]  # one library


def _forget_loaded():
    aot._loaded.clear()
    aot._scheduled.clear()


def _run_module(*args, **env):
    """``python -m ...`` in a new process with this checkout's linreg; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


@pytest.fixture(scope="module")
def library_dir(tmp_path_factory):
    """A folder with the BUILT variants, built by ``linreg compile`` (one library); what it printed."""
    folder = tmp_path_factory.mktemp("aot")
    features = sorted({str(n) for _, n in BUILT})
    done = _run_module("linreg", "compile", "--aot-only", "--dtype", "float32,float64", "--features",
                       ",".join(features), LINREG_AOT_DIR=str(folder), LINREG_AOT="1")
    assert done.returncode == 0, done.stdout + done.stderr
    return folder, done.stdout.splitlines()


@pytest.fixture
def aot_dir(library_dir, monkeypatch):
    monkeypatch.setenv("LINREG_AOT_DIR", str(library_dir[0]))
    monkeypatch.delenv("LINREG_AOT", raising=False)
    _forget_loaded()
    yield library_dir[0]
    _forget_loaded()


def test_linreg_compile_says_what_it_built_where_and_how_long(aot_dir, library_dir):
    folder, lines = library_dir
    assert f"ahead-of-time libraries: {folder}" in lines
    features = ",".join(sorted({str(n) for _, n in BUILT}))
    line = next(line for line in lines if line.startswith("aot     "))
    assert line.startswith(f"aot     float32 {features}; float64 {features} features: built in "), line
    library = aot.library_path("float32", 5)
    assert library is not None and line.endswith(f" s ({library})"), line
    assert set(aot.libraries()) == {(d, int(n)) for d in ("float32", "float64") for n in features.split(",")}
    assert lines[-1].startswith("done in ")
    assert not list(folder.glob("*.lock")) and not list(folder.glob("*.failed"))
    # A second run finds them built.
    again = _run_module("linreg", "compile", "--aot-only", "--dtype", "float32", "--features", "5",
                        LINREG_AOT_DIR=str(folder))
    assert f"aot     float32 5 features: cached in 0.0 s ({library})" in again.stdout, again.stdout


def _problem(n_samples, n_features, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n_samples, n_features)) * 10 + 55).astype(dtype)  # seed 000's scale
    Y = (X @ np.arange(1, n_features + 1).reshape(-1, 1) + 3 + rng.standard_normal((n_samples, 1))).astype(dtype)
    return X, Y


def _run(gd, workspace, X, Y, lr, epochs, blocks):
    W = np.ones((1, X.shape[1]), X.dtype)
    b = np.ones(1, X.dtype)
    history = np.zeros(epochs)
    done = 0
    for start, stop in zip(blocks[:-1], blocks[1:], strict=True):  # in blocks, as the driver calls it
        done += gd(X, Y, W, b, lr, history, start, stop, workspace)
        if done < stop:
            break
    return done, W, b, history


@pytest.mark.parametrize("dtype,n_features", BUILT)
def test_aot_equals_the_jit_kernel_bit_for_bit(aot_dir, dtype, n_features):
    """Every row count class: one row, around the chunk size (1024), several chunks, the transposed limit."""
    limit = layout.transposed_max_rows(n_features)
    for n_samples in (1, 2, 1023, 1024, 1025, 3 * 1024 + 7, limit):
        X, Y = _problem(n_samples, n_features, dtype)
        W = np.ones((1, n_features), dtype)
        kernel = aot.gd_kernel(X, Y, W, np.ones(1, dtype), schedule=False)
        assert kernel is not None, f"no AOT kernel for {dtype}, {n_features} features, {n_samples} rows"
        jit_work = cpu.Workspace(n_samples, n_features, 1, np.dtype(dtype))
        assert cpu.use_transposed(n_samples, n_features, 1, jit_work.parallel)  # the JIT takes the same loop
        for lr in (1e-5, 1.0):  # 1.0 diverges: the restore-on-divergence path too
            ours = _run(kernel.gd, aot.Kernel(kernel.function, n_samples, n_features, np.dtype(dtype)).workspace,
                        X, Y, lr, 60, [0, 4, 36, 60])
            theirs = _run(cpu.gd, cpu.Workspace(n_samples, n_features, 1, np.dtype(dtype)), X, Y, lr, 60,
                          [0, 4, 36, 60])
            assert ours[0] == theirs[0], (n_samples, lr)
            for a, b in zip(ours[1:], theirs[1:], strict=True):
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (n_samples, lr)


def test_a_fit_through_aot_equals_the_jit_fit(aot_dir, monkeypatch):
    """The estimator: seed 000's fit (float32, 5 features) and a float64 one, with and without LINREG_AOT=0."""
    calls = []
    real = aot.Kernel.gd
    monkeypatch.setattr(aot.Kernel, "gd", lambda self, *args: calls.append(1) or real(self, *args))
    for X, y in (linreg.datasets.seed_linear(random_state=0), _problem(777, 8, np.float64)):
        ours = linreg.LinearRegressor(**linreg.datasets.SEED_000_SETTINGS).fit(X, y)
        assert calls, "the fit did not use the AOT kernel"
        calls.clear()
        monkeypatch.setenv("LINREG_AOT", "0")
        theirs = linreg.LinearRegressor(**linreg.datasets.SEED_000_SETTINGS).fit(X, y)
        monkeypatch.delenv("LINREG_AOT")
        assert not calls, "LINREG_AOT=0 still used the AOT kernel"
        for name in ("coef_", "intercept_", "loss_history_"):
            assert getattr(ours, name).tobytes() == getattr(theirs, name).tobytes(), name


FRESH_FIT = """
import sys
import numpy as np
import linreg
X, y = linreg.datasets.seed_linear(random_state=0)
model = linreg.LinearRegressor(**linreg.datasets.SEED_000_SETTINGS).fit(X, y)
print("numba" in sys.modules, model.compile_seconds_ < 1, model.loss_history_.tobytes().hex()[-64:])
other = linreg.LinearRegressor(epochs=5, lr=1e-5).fit(X[:, :2], y)  # 2 features: no library, the JIT kernels
print("numba" in sys.modules, other.n_iter_)
"""


def _fresh(code, **env):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env=environment)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_a_new_process_fits_seed_000_without_importing_numba(aot_dir):
    expected = linreg.LinearRegressor(**linreg.datasets.SEED_000_SETTINGS).fit(
        *linreg.datasets.seed_linear(random_state=0)).loss_history_.tobytes().hex()[-64:]
    numba_after_fit, quick, history, numba_after_engine, n_iter = _fresh(FRESH_FIT)
    assert numba_after_fit == "False", "the plain fit imported numba although its AOT library exists"
    assert quick == "True" and history == expected
    assert numba_after_engine == "True" and n_iter == "5"  # every other fit still works, through the JIT


def test_a_library_of_another_key_is_not_loaded(aot_dir, monkeypatch):
    """The key covers the CPU and the kernels' source: a change names another file, which is absent."""
    X, Y = _problem(100, 5, np.float32)
    W, b = np.ones((1, 5), np.float32), np.ones(1, np.float32)
    assert aot.gd_kernel(X, Y, W, b, schedule=False) is not None
    original = aot.key()
    monkeypatch.setattr(aot, "_cpu_identity", lambda: "another CPU")
    monkeypatch.setattr(aot, "_key_cache", {})
    assert aot.key() != original
    _forget_loaded()
    assert aot.library_path("float32", 5) is None and aot.libraries() == {}
    assert aot.gd_kernel(X, Y, W, b, schedule=False) is None
    monkeypatch.setattr(aot, "_cpu_identity", lambda: "x")
    monkeypatch.setattr(aot, "_KERNEL_SOURCES", aot._KERNEL_SOURCES[:-1])  # "another source"
    monkeypatch.setattr(aot, "_key_cache", {})
    assert aot.key() != original


def test_off_unserved_damaged_missing_all_take_the_jit_path(aot_dir, tmp_path, monkeypatch, caplog):
    X, Y = _problem(100, 5, np.float32)
    W, b = np.ones((1, 5), np.float32), np.ones(1, np.float32)
    monkeypatch.setenv("LINREG_AOT", "0")
    assert aot.gd_kernel(X, Y, W, b) is None
    model = linreg.LinearRegressor(epochs=3, lr=1e-5)
    assert not compilation.prepare_fit(model, X, Y[:, 0]).aot
    monkeypatch.delenv("LINREG_AOT")
    assert compilation.prepare_fit(model, X, Y[:, 0]).aot
    # Problems the AOT loop does not serve: F-ordered X, two outputs, 9 features, float64 W for float32 X.
    assert aot.gd_kernel(np.asfortranarray(X), Y, W, b) is None
    assert aot.gd_kernel(X, np.hstack([Y, Y]), np.ones((2, 5), np.float32), np.ones(2, np.float32)) is None
    assert aot.gd_kernel(*_problem(100, 9, np.float32), np.ones((1, 9), np.float32), b) is None
    assert aot.gd_kernel(X, Y, W.astype(np.float64), b) is None
    # A damaged file where the library should be, and a missing one: not loaded, logged at debug level.
    damaged = tmp_path / "damaged"
    shutil.copytree(aot_dir, damaged)
    monkeypatch.setenv("LINREG_AOT_DIR", str(damaged))
    _forget_loaded()
    library = aot.library_path("float32", 5)
    library.write_bytes(b"not an ELF file")  # it holds float64, 8 features too
    missing = _problem(100, 4, np.float64)  # a variant not built
    with caplog.at_level(logging.DEBUG, logger="linreg"):
        assert aot.gd_kernel(X, Y, W, b, schedule=False) is None
        assert aot.gd_kernel(*_problem(100, 8, np.float64), np.ones((1, 8)), np.ones(1), schedule=False) is None
        assert aot.gd_kernel(*missing, np.ones((1, 4)), np.ones(1), schedule=False) is None
    assert "not loaded" in caplog.text and "no AOT library" in caplog.text
    fitted = linreg.LinearRegressor(epochs=3, lr=1e-5).fit(X, Y[:, 0])  # the JIT kernels
    assert fitted.n_iter_ == 3 and np.isfinite(fitted.coef_).all()


def test_no_compiler_fails_the_build_once_and_fits_use_the_jit(tmp_path, monkeypatch):
    folder = tmp_path / "aot"
    result = _run_module("linreg.aot", "--variants", "float32:2", LINREG_AOT_DIR=str(folder), CC="/nonexistent/cc")
    assert result.returncode == 1 and "float32 2 features: failed" in result.stdout, result.stdout + result.stderr
    assert "no working C compiler" in result.stdout
    monkeypatch.setenv("LINREG_AOT_DIR", str(folder))
    monkeypatch.setenv("LINREG_AOT_BACKGROUND", "1")
    _forget_loaded()
    assert aot._failed_path("float32", 2).exists() and aot.library_path("float32", 2) is None
    assert aot.schedule_build([("float32", 2)]) is None, "a failed build is retried by every fit"
    X, Y = _problem(50, 2, np.float32)
    assert linreg.LinearRegressor(epochs=2, lr=1e-5).fit(X, Y[:, 0]).n_iter_ == 2
    assert not list(folder.glob("*.lock"))


def test_a_first_fit_builds_its_library_in_the_background_after_it_exits(tmp_path):
    """A fresh process without the library fits through the JIT, starts the build and exits; the build then
    runs (the process had exited) and the next process fits without numba."""
    folder = tmp_path / "aot"
    env = {"LINREG_AOT_DIR": str(folder), "LINREG_AOT_BACKGROUND": "1"}
    numba_after_fit, *_ = _fresh(FRESH_FIT, **env)
    assert numba_after_fit == "True"  # no library yet: the JIT kernels
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LINREG_AOT_DIR", str(folder))
        assert aot.wait_for_builds(timeout=240), "the background build did not finish"
        assert aot.library_path("float32", 5) is not None, sorted(p.name for p in folder.iterdir())
    numba_after_fit, *_ = _fresh(FRESH_FIT, **env)
    assert numba_after_fit == "False"
