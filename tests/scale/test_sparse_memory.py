"""Peak memory of a fit on a 1,000,000 x 100,000 CSR matrix with 10 non-zeros per row, in a fresh process: the
fit holds the matrix, one CSC copy of its entries and O(n_samples + n_features) vectors, about twice the matrix
in all, never a dense (n_samples x n_features) array or (chunks x features) gradient partials."""

import json
import os
import subprocess
import sys

import pytest

MEMORY_PROBE = r"""
import json, sys, time
import numpy as np
import scipy.sparse as sp
from linreg import LinearRegressor

n_samples, n_features, per_row = (int(a) for a in sys.argv[1:4])


def status(key):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1]) * 1024


def matrix(n_samples, n_features, seed):
    rng = np.random.default_rng(seed)
    indptr = np.arange(0, n_samples * per_row + 1, per_row, dtype=np.int32)
    indices = rng.integers(0, n_features, n_samples * per_row, dtype=np.int32)
    data = rng.standard_normal(n_samples * per_row, dtype=np.float32)
    X = sp.csr_matrix((data, indices, indptr), shape=(n_samples, n_features))
    y = (X @ rng.standard_normal(n_features).astype(np.float32)).astype(np.float32)
    return X, y


options = dict(epochs=2)  # the defaults otherwise: standardize=True, lr="auto" (Lanczos at 100,000 features)
# Warm up on a small matrix of the same kinds (more features than the Gram limit): compiles or loads every kernel.
LinearRegressor(**options).fit(*matrix(20_000, 8_000, 1))
X, y = matrix(n_samples, n_features, 2)
matrix_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset VmHWM (the peak resident set) to the current resident set
before, before_anon = status("VmRSS"), status("RssAnon")
start = time.perf_counter()
model = LinearRegressor(**options).fit(X, y)
seconds = time.perf_counter() - start
growth = status("VmHWM") - before
print(json.dumps({"matrix_bytes": matrix_bytes, "y_bytes": y.nbytes, "growth": growth, "seconds": seconds,
                  "anon_after": status("RssAnon") - before_anon, "n_iter": model.n_iter_,
                  "finite": bool(np.isfinite(model.coef_).all()), "lr": model.lr_}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to reset VmHWM")
def test_peak_memory_of_a_sparse_fit_is_about_twice_the_matrix():
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, "1000000", "100000", "10"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    matrix_bytes = measured["matrix_bytes"]
    assert measured["finite"] and measured["n_iter"] == 2
    # Matrix (84 MB: float32 data, int32 indices) plus the fit's peak: the CSC copy (~1x), the residuals, the
    # statistics' row weights and a few (n_features,) vectors. A densified X would be 400 GB; per-chunk dense
    # gradient partials 256 x 100,000 x 8 B = 205 MB.
    peak_ratio = (matrix_bytes + measured["growth"]) / matrix_bytes
    assert peak_ratio <= 2.3, measured
    print(f"peak {peak_ratio:.2f}x the matrix ({matrix_bytes / 1e6:.0f} MB), fit {measured['seconds']:.1f} s")
