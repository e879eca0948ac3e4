"""Properties only a fresh process shows: thread-count independence, no torch on import."""

import json
import os
import subprocess
import sys

import pytest

FIT = """
import json, numpy as np, linreg
from linreg.kernels import cpu
cpu.CHUNK_ROWS = 64  # many chunks, so both threads take several
X, y = linreg.datasets.seed_linear(n_samples=40000, random_state=1)
X = np.hstack([X, X[:, :3] * 0.5]) / 100  # 8 features: above the serial threshold
model = linreg.LinearRegressor(epochs=30, lr=0.01).fit(X, y)
import numba
print(json.dumps({"threads": numba.get_num_threads(), "layer": cpu.threading_layer(),
                  "parallel": cpu.Workspace(40000, 8, 1, np.float32).parallel,
                  "coef": model.coef_.tobytes().hex(), "intercept": model.intercept_.tobytes().hex(),
                  "history": model.loss_history_.tobytes().hex()}))
"""


def run_python(code, **env):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_fit_is_bit_identical_for_1_and_2_threads():
    one = json.loads(run_python(FIT, NUMBA_NUM_THREADS="1"))
    two = json.loads(run_python(FIT, NUMBA_NUM_THREADS="2"))
    assert (one["threads"], two["threads"]) == (1, 2)
    assert one["parallel"] and two["parallel"]
    for key in ("coef", "intercept", "history"):
        assert one[key] == two[key], f"{key} differs between 1 and 2 threads"


def test_import_and_cpu_fit_do_not_import_torch():
    code = ("import sys, linreg\n"
            "X, y = linreg.datasets.seed_linear(n_samples=100)\n"
            "linreg.LinearRegressor(epochs=3).fit(X, y).predict(X)\n"
            "print('torch' in sys.modules)")
    assert run_python(code).strip() == "False"


def test_module_entry_point_runs():
    out = run_python("import runpy, sys; sys.argv = ['linreg', 'train', '--epochs', '3', '--no-progress'];"
                     "runpy.run_module('linreg', run_name='__main__')")
    assert "w[4]" in out


@pytest.mark.parametrize("layer", ["workqueue"])
def test_other_threading_layer_gives_the_same_result(layer):
    """Whatever layer loads (omp here, workqueue where libgomp is missing), the bits are the same."""
    default = json.loads(run_python(FIT))
    other = json.loads(run_python(FIT, NUMBA_THREADING_LAYER=layer))
    assert other["layer"] == layer
    for key in ("coef", "intercept", "history"):
        assert default[key] == other[key]


def test_compiled_loops_as_first_call_compiling_then_from_cache(tmp_path):
    """A fresh process whose first kernel call is a compiled training loop, compiling and then from cache.

    A parallel kernel reached from other cached compiled code, before the thread
    pool was started, can segfault (numba issue #8578; seen here once with a
    shared cache). The wrappers start the pool first. This test exercises those
    paths; it did not reliably reproduce the crash without the workaround.
    """
    for options in ("", "momentum=0.5"):
        code = ("import numpy as np, linreg\n"
                "X = np.random.default_rng(0).standard_normal((120, 3))\n"
                f"print(linreg.LinearRegressor(epochs=3, lr=1e-3, {options}).fit(X, X.sum(1)).n_iter_)")
        for _ in ("compile", "from cache"):
            assert run_python(code, NUMBA_CACHE_DIR=str(tmp_path)).strip() == "3"
