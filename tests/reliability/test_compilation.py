"""Compiling only what a fit needs, up front: ``linreg.compilation`` and the kernel variant dispatch.

Fresh processes (subprocesses) see which kernels a fit compiles: the test process
has compiled many variants already. Where a test must see compilation happen (not
a cache load), its subprocess gets an empty NUMBA_CACHE_DIR.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import linreg
from linreg import compilation
from linreg.estimator import LinearRegressor


def run_python(code, *, check=True, **env):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env={**os.environ, **env})
    if check:
        assert result.returncode == 0, result.stderr
    return result


SIGNATURES = """
import linreg
from numba.core.registry import CPUDispatcher
from linreg.kernels import cpu
X, y = linreg.datasets.seed_linear(n_samples={n_samples}, random_state=0)
linreg.LinearRegressor(epochs=3, lr=1e-5).fit(X, y)  # seed 000's plain loop
print({{name: len(f.signatures) for name, f in vars(cpu).items() if isinstance(f, CPUDispatcher)}})
"""


def test_seed_fit_compiles_only_its_own_variant(tmp_path):
    """Seed 000's plain fit (5000x5 float32) reaches one row kernel, not 8 + 8 + the blocked one.

    An empty cache: a kernel loaded from it brings its callees' code along, so only a compile shows them.
    """
    counts = eval(run_python(SIGNATURES.format(n_samples=5000), NUMBA_CACHE_DIR=str(tmp_path)).stdout)
    assert counts["_transposed_rows"] == 1 and counts["_gd_epochs_transposed"] == 1
    assert counts["_combine"] == 1, "float32 data compiled a second (float64) copy of a helper"
    for name in ("_fixed_rows", "_blocked_rows", "_loss_grad", "_gd_epochs"):
        assert counts[name] == 0, f"{name} was compiled for a fit that does not call it"


def test_a_large_plain_fit_streams_with_its_specialised_kernel_only(tmp_path):  # past the transposed limit
    counts = eval(run_python(SIGNATURES.format(n_samples=30000), NUMBA_CACHE_DIR=str(tmp_path)).stdout)
    assert counts["_fixed_rows"] == 1 and counts["_loss_grad"] == 1 and counts["_gd_epochs"] == 1
    for name in ("_transposed_rows", "_blocked_rows", "_gd_epochs_transposed"):
        assert counts[name] == 0, f"{name} was compiled for a fit that does not call it"


FIT_CASES = {
    "seed 000": ({"lr": 1e-5}, (5000, 5, 0), np.float32),
    "plain, streaming": ({"lr": 1e-5}, (30000, 5, 0), np.float32),
    "plain, float64": ({"lr": 1e-5}, (300, 3, 0), np.float64),
    "plain, 12 features (wide kernel)": ({"lr": 1e-5}, (300, 12, 0), np.float32),
    "plain, 3 outputs": ({"lr": 1e-5}, (300, 4, 3), np.float32),
    "defaults": ({}, (5000, 5, 0), np.float32),
    "standardize, lr=auto": ({"standardize": True, "lr": "auto"}, (5000, 5, 0), np.float32),
    "adam, mini-batch": ({"optimizer": "adam", "batch_size": 64, "lr": 0.01}, (1000, 5, 0), np.float32),
    "early stopping": ({"early_stopping": True, "tol": 1e-3, "lr": 0.01}, (1000, 5, 0), np.float64),
    "weights": ({"lr": 0.01, "weights": True}, (500, 2, 0), np.float32),
    "normal equations": ({"solver": "normal"}, (500, 5, 2), np.float32),
}


@pytest.mark.filterwarnings("ignore::linreg.ConvergenceWarning")  # 5 epochs: tol is not reached, as expected
@pytest.mark.parametrize("case", list(FIT_CASES))
def test_after_prepare_fit_the_fit_compiles_nothing(case):
    """What prepare_fit compiled (or loaded) is everything the real fit calls: its timing is training only."""
    params, (n_samples, n_features, n_outputs), dtype = FIT_CASES[case]
    params = dict(params)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_samples, n_features)).astype(dtype)
    y = rng.standard_normal((n_samples, n_outputs) if n_outputs else n_samples).astype(dtype)
    weights = rng.uniform(0.5, 1.5, n_samples) if params.pop("weights", False) else None
    model = LinearRegressor(epochs=5, **params)
    result = compilation.prepare_fit(model, X, y, weights)
    assert not hasattr(model, "coef_"), "prepare_fit must not fit the estimator it is given"
    assert result.what.startswith(np.dtype(dtype).name) and not result.skipped
    with compilation._CompileWatch(None) as watch:
        model.fit(X, y, weights)
    assert watch.compiled == 0, f"the fit compiled {watch.compiled} kernel(s) that prepare_fit did not"


def test_a_fit_that_prepares_itself_does_not_recurse(monkeypatch):
    """fit prepares on its validated arrays, then trains; the warm-up fit does not prepare again."""
    calls = []
    real = compilation.prepare_fit

    def recording(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(compilation, "prepare_fit", recording)
    monkeypatch.setattr(compilation, "_prepared", set())  # nothing prepared yet in this process
    X, y = linreg.datasets.seed_linear(n_samples=300, random_state=0)
    model = LinearRegressor(epochs=3, lr=1e-5, momentum=0.5).fit(X, y)
    # The warm-up fit's own call returns first (skipped), then the user's fit's (which ran the warm-up).
    assert [bool(call.skipped) for call in calls] == [True, False]
    assert calls[1].what == "float32, 5 features" and model.n_iter_ == 3
    assert model.compile_seconds_ == calls[1].seconds


def test_prepare_fit_raises_the_errors_fit_raises():
    with pytest.raises(ValueError, match="X contains nan"):
        compilation.prepare_fit(LinearRegressor(), np.full((10, 2), np.nan), np.zeros(10))


def test_other_backends_and_streamed_data_are_not_prepared(tmp_path):
    X, y = linreg.datasets.seed_linear(n_samples=50)
    assert compilation.prepare_fit(LinearRegressor(backend="torch"), X, y).skipped
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    assert compilation.prepare_fit(LinearRegressor(), tmp_path / "X.npy", tmp_path / "y.npy").skipped


PREPARE = """
import linreg
from linreg import compilation
X, y = linreg.datasets.seed_linear(random_state=0)
seen = []
result = compilation.prepare_fit(linreg.LinearRegressor(**{params}), X, y, on_compile=seen.append)
print(result.compiled, seen, result.cache, sep=chr(10))
"""


@pytest.mark.parametrize("params", ["{}", "dict(standardize=True, lr='auto')"])
def test_empty_cache_compiles_then_a_new_process_loads_from_cache(tmp_path, params):
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    compiled, seen, cache = run_python(PREPARE.format(params=params), **env).stdout.splitlines()
    assert int(compiled) > 0 and seen == "['float32, 5 features']"
    assert cache.startswith(str(tmp_path))
    compiled, seen, _ = run_python(PREPARE.format(params=params), **env).stdout.splitlines()
    assert int(compiled) == 0 and seen == "[]", "the second process compiled again instead of loading the cache"


HELPED = """
import linreg
from linreg.kernels import cpu_train
X, y = linreg.datasets.seed_linear(random_state=0)
model = linreg.LinearRegressor(standardize=True, lr="auto", epochs=20).fit(X, y)
stats = cpu_train._train_epochs.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()), model.coef_.tolist(), model.intercept_)
"""


def test_a_helper_process_compiles_the_engine_loop_while_the_fit_compiles_its_statistics(tmp_path):
    """Empty cache, the defaults' fit: its engine loop comes from the cache, compiled there by the helper process
    (``linreg._compile_helper``) while this process compiled the moments and the Gram pass; with the helper off
    (``LINREG_COMPILE_HELPER=0``) the fit compiles the loop itself. Both fits agree bit for bit."""
    from linreg import _compile_helper

    helped = run_python(HELPED, NUMBA_CACHE_DIR=str(tmp_path / "helped")).stdout.split(maxsplit=2)
    alone = run_python(HELPED, NUMBA_CACHE_DIR=str(tmp_path / "alone"),
                       LINREG_COMPILE_HELPER="0").stdout.split(maxsplit=2)
    assert alone[:2] == ["0", "1"]
    # One CPU for this process: no helper (it could only slow the fit down).
    expected = ["1", "0"] if _compile_helper.enabled() else ["0", "1"]
    assert helped[:2] == expected, "the loop was compiled in the fit's process, not loaded from the helper's"
    assert helped[2] == alone[2]


def test_the_helper_is_only_for_fits_it_can_speed_up():
    """A helper process only where the fit compiles a statistics pass before an engine loop the helper's synthetic
    run reaches: not for plain GD (no engine), sample weights, early stopping, solver="normal", a numeric lr
    without standardize, or data that is not a C-contiguous array."""
    from linreg import _compile_helper

    X, Y = np.zeros((64, 5), np.float32), np.zeros((64, 1), np.float32)

    def helper(weights=None, X=X, **params):
        return _compile_helper.EngineHelper.for_fit(LinearRegressor(**params).get_params(), X, Y, weights, 64)

    defaults = helper()
    if not _compile_helper.enabled():
        assert defaults is None
        return
    assert defaults is not None and defaults.command[-5:] == ["<f4", "<f4", "5", "1", "64"]
    assert helper(lr=0.01, standardize=True, momentum=0.9) is not None
    for params in (dict(lr=1e-5, standardize=False), dict(lr=0.01, momentum=0.9), dict(early_stopping=True, tol=1e-3),
                   dict(solver="normal")):
        assert helper(**params) is None, params
    assert helper(weights=np.ones(64)) is None
    assert helper(X=np.asfortranarray(X)) is None


def test_linreg_compile_fills_the_cache_for_later_processes(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    done = run_python("import sys; from linreg.cli import main; "
                      "sys.exit(main(['compile', '--dtype', 'float32', '--features', '5', '--kind', 'gd', "
                      "'--no-aot']))", **env)  # the Numba cache is what is checked here (the AOT library: tests/aot)
    assert f"kernel cache: {tmp_path}" in done.stdout and "compiled kernels for float32, 5 features" in done.stdout
    compiled, seen, _ = run_python(PREPARE.format(params="{}"), **env).stdout.splitlines()
    assert int(compiled) == 0 and seen == "[]"


# Ctrl-C lands while the first kernel compiles: a listener on Numba's compile events sends it as the second
# compilation (a kernel the first one calls) starts, after linreg's own listener has seen the first.
INTERRUPT_AT_FIRST_COMPILE = """
import os, signal
from numba.core import event

class Interrupt(event.Listener):
    starts = 0

    def on_start(self, ev):
        self.starts += 1
        if self.starts == 2:
            event.unregister("numba:compile", self)
            os.kill(os.getpid(), signal.SIGINT)

    def on_end(self, ev):
        pass

event.register("numba:compile", Interrupt())
"""


def test_ctrl_c_while_compiling_leaves_the_estimator_unfitted(tmp_path):
    code = INTERRUPT_AT_FIRST_COMPILE + """
import linreg
from linreg import compilation
X, y = linreg.datasets.seed_linear(random_state=0)
model = linreg.LinearRegressor()
try:
    compilation.prepare_fit(model, X, y)
except KeyboardInterrupt as interrupt:
    print(hasattr(model, "coef_"), interrupt)
"""
    out = run_python(code, NUMBA_CACHE_DIR=str(tmp_path)).stdout
    assert out.startswith("False interrupted while compiling the kernels for float32, 5 features: nothing was "
                          "trained, the model was not fitted"), out


def test_cli_ctrl_c_while_compiling_says_so_and_exits_130(tmp_path):
    code = INTERRUPT_AT_FIRST_COMPILE + """
import sys
from linreg.cli import main
sys.exit(main(["train", "--no-progress", "--save", sys.argv[1]]))
"""
    saved = tmp_path / "model.npz"
    result = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 130, result.stderr
    assert "compiling kernels for float32, 5 features (first run only, cached in" in result.stdout
    assert "interrupted: interrupted while compiling the kernels" in result.stderr
    assert not saved.exists()


def test_cli_shows_the_compile_step_apart_from_the_training_time(tmp_path):
    result = run_python("import sys; from linreg.cli import main; sys.exit(main(['train', '--no-progress', "
                        "'--no-compare']))", NUMBA_CACHE_DIR=str(tmp_path))
    lines = result.stdout.splitlines()
    compile_line = next(line for line in lines if line.startswith("compiling kernels"))
    assert compile_line.startswith(f"compiling kernels for float32, 5 features (first run only, cached in {tmp_path}")
    assert compile_line.endswith(" s")
    compile_seconds = float(compile_line.split()[-2])
    wall = float(next(line for line in lines if line.startswith("wall time (s)")).split()[-1])
    assert wall < compile_seconds, "the table's wall time must count training only, not the compilation"
