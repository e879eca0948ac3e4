"""W9 one epoch on a sparse X: 1,000,000 x 100,000 float32 CSR with 10 non-zeros a row (--quick: 20,000 x 5,000).

Providers, each timed in the same session (pytest-benchmark's relative column is the ratio):

* ``linreg-sparse``: one full-batch epoch of ``LinearRegressor(lr=...)``'s compiled engine on the sparse source
  (residuals by CSR rows, the gradient by columns of the CSC copy, the update), validation excluded;
* ``linreg-sparse-sgd256``: one epoch of shuffled mini-batches of 256 rows (each step updates all 100,000 weights,
  as every linreg optimiser step does);
* ``sklearn-sgd``: ``SGDRegressor.partial_fit``, one epoch of per-sample SGD with sparse (lazy) weight updates, on a
  float64 copy of X (its own dtype: it would convert float32 X on every call);
* ``torch-sparse``: one full-batch gradient step with ``torch.sparse_csr`` matmuls, ``R = X @ w + b - y`` and
  ``X^T @ R`` from a precomputed CSR of X^T (the same extra copy linreg keeps), closed form, no autograd.

    pytest benchmarks/test_w9_sparse.py [--quick]
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from bench import quick_mode

PROVIDERS = ["linreg-sparse", "linreg-sparse-sgd256", "sklearn-sgd", "torch-sparse"]
_DATA: dict = {}


def sparse_problem(n_samples: int, n_features: int, per_row: int = 10, seed: int = 0):
    import scipy.sparse as sp

    if (n_samples, n_features) not in _DATA:
        _DATA.clear()
        rng = np.random.default_rng(seed)
        indptr = np.arange(0, n_samples * per_row + 1, per_row, dtype=np.int32)
        indices = rng.integers(0, n_features, n_samples * per_row, dtype=np.int32)
        data = rng.standard_normal(n_samples * per_row, dtype=np.float32)
        X = sp.csr_matrix((data, indices, indptr), shape=(n_samples, n_features))
        y = (X @ rng.standard_normal(n_features).astype(np.float32) + 0.5).astype(np.float32)
        _DATA[(n_samples, n_features)] = X, y
    return _DATA[(n_samples, n_features)]


def _linreg_epoch(X, y, **options):
    from linreg import options as linreg_options
    from linreg import sparse
    from linreg._engine import EngineState

    source = sparse.SparseSource(X, y[:, None].copy(), None)
    spec = linreg_options.make_spec({**linreg_options.DEFAULTS, "lr": 1e-3, "standardize": False,
                                     "epochs": 100_000, "random_state": 0, **options})
    n_features = X.shape[1]
    run = source.start_gd(spec, EngineState.raw(np.zeros((1, n_features)), np.zeros(1)), 1e-3, None, None, 0)
    return lambda: run.advance(1)


def _sklearn_epoch(X, y):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import SGDRegressor

    X64 = X.astype(np.float64)
    y64 = y.astype(np.float64)
    model = SGDRegressor(learning_rate="constant", eta0=1e-4, shuffle=False, tol=None)
    return lambda: model.partial_fit(X64, y64)


def _torch_epoch(X, y):
    torch = pytest.importorskip("torch")
    import numba

    torch.set_num_threads(numba.get_num_threads())  # the same cores as linreg's kernels

    def csr(matrix):
        return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr.astype(np.int64)),
                                       torch.from_numpy(matrix.indices.astype(np.int64)),
                                       torch.from_numpy(matrix.data), matrix.shape)

    Xt, XTt = csr(X), csr(X.T.tocsr())
    yt = torch.from_numpy(y)[:, None]
    w = torch.zeros(X.shape[1], 1)
    b = torch.zeros(1)
    lr, n = 1e-3, X.shape[0]

    def step():
        with torch.no_grad():
            R = Xt @ w + b - yt
            w.sub_(lr * 2.0 / n * (XTt @ R))
            b.sub_(lr * 2.0 * R.mean())
    return step


@pytest.mark.parametrize("sparse_provider", PROVIDERS)
def test_w9_sparse_epoch(benchmark, request, sparse_provider):
    provider = sparse_provider  # ("provider" is the harness providers, parametrised by conftest)
    import warnings

    quick = quick_mode(request.config)
    n_samples, n_features = (20_000, 5_000) if quick else (1_000_000, 100_000)
    X, y = sparse_problem(n_samples, n_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "sparse CSR is beta" notice
        if provider == "linreg-sparse":
            fn = _linreg_epoch(X, y)
        elif provider == "linreg-sparse-sgd256":
            fn = _linreg_epoch(X, y, batch_size=256)
        elif provider == "sklearn-sgd":
            fn = _sklearn_epoch(X, y)
        else:
            fn = _torch_epoch(X, y)
        fn()  # compile / warm up, not timed
    benchmark.group = f"W9 sparse epoch {n_samples}x{n_features} nnz={X.nnz} float32"
    benchmark.extra_info.update({"provider": provider, "nnz": int(X.nnz),
                                 "matrix MB": round((X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 1e6, 1)})
    # OpenMP and OpenBLAS workers spin briefly after a call: a pause before each round keeps the providers fair.
    rounds = 5 if quick else (3 if provider == "linreg-sparse-sgd256" else 7)
    benchmark.pedantic(fn, setup=lambda: time.sleep(0.2), rounds=rounds, iterations=1, warmup_rounds=0)
