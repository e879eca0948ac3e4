"""W9 one epoch on a sparse X: 1,000,000 x 100,000 float32 CSR with 10 non-zeros a row (--quick: 20,000 x 5,000).

Providers, each timed in the same session (pytest-benchmark's relative column is the ratio):

* ``linreg-sparse``: one full-batch epoch of ``LinearRegressor(lr=...)``'s compiled engine on the sparse source
  (residuals by CSR rows, the gradient by columns of the CSC copy, the update), validation excluded;
* ``linreg-sparse-sgd1`` / ``-sgd32`` / ``-sgd256``: one epoch of shuffled mini-batches of 1, 32 or 256 rows, plain
  SGD on raw features, so each step costs O(the batch's non-zeros): it updates only the weights of the batch's
  features (``cpu_train._apply_step_at``, the lazy step), bit-identical to the dense rule;
* ``linreg-sparse-sgd256-dense-rule``: the batch-256 epoch with the dense step rule (every step updates all
  100,000 weights: what momentum, Adam, penalties and standardize take), the reference of the lazy steps;
* ``linreg-sparse-sgd1-in-order``: the batch-1 epoch without the shuffle (rows in order, as ``sklearn-sgd``);
* ``sklearn-sgd``: ``SGDRegressor(penalty=None, shuffle=False).partial_fit``, one epoch of per-sample SGD with
  sparse weight updates, rows in order, on a float64 copy of X (its own dtype: it would convert float32 X on
  every call); ``sklearn-sgd-shuffled``: the same with ``shuffle=True`` (rows in a new random order each epoch,
  as linreg's mini-batch epochs);
* ``torch-sparse``: one full-batch gradient step with ``torch.sparse_csr`` matmuls, ``R = X @ w + b - y`` and
  ``X^T @ R`` from a precomputed CSR of X^T (the same extra copy linreg keeps), closed form, no autograd.

    pytest benchmarks/test_w9_sparse.py [--quick]
    python benchmarks/test_w9_sparse.py [--quick] [--rounds N]   # the providers in turns (interleaved), ratios

"""

from __future__ import annotations

import time

import numpy as np
import pytest
from bench import quick_mode

PROVIDERS = ["linreg-sparse", "linreg-sparse-sgd1", "linreg-sparse-sgd32", "linreg-sparse-sgd256",
             "linreg-sparse-sgd256-dense-rule", "linreg-sparse-sgd1-in-order", "linreg-sparse-sgd256-in-order",
             "sklearn-sgd", "sklearn-sgd-shuffled",
             "torch-sparse"]
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


def _linreg_epoch(X, y, dense_rule=False, **options):
    from linreg import options as linreg_options
    from linreg import sparse
    from linreg._engine import EngineState
    from linreg.kernels import cpu_sparse

    source = sparse.SparseSource(X, y[:, None].copy(), None)
    spec = linreg_options.make_spec({**linreg_options.DEFAULTS, "lr": 1e-3, "standardize": False,
                                     "epochs": 100_000, "random_state": 0, **options})
    n_features = X.shape[1]
    run = source.start_gd(spec, EngineState.raw(np.zeros((1, n_features)), np.zeros(1)), 1e-3, None, None, 0)
    if dense_rule:  # the lazy steps' reference: the same run with every step updating every weight
        run.work = cpu_sparse.engine_work(source.X, 1, run.work[1].shape[0], lazy=False)
    elif spec.batch_size is not None:
        assert run.lazy_steps
    return lambda: run.advance(1)


def _sklearn_epoch(X, y, shuffle=False):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import SGDRegressor

    X64 = X.astype(np.float64)
    y64 = y.astype(np.float64)
    model = SGDRegressor(learning_rate="constant", eta0=1e-4, penalty=None, shuffle=shuffle, tol=None,
                         random_state=0)
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


def provider_epoch(provider: str, X, y):
    """The provider's epoch, compiled and warmed up (one call, not timed)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "sparse CSR is beta" notice
        if provider == "linreg-sparse":
            fn = _linreg_epoch(X, y)
        elif provider.startswith("linreg-sparse-sgd"):
            batch = int(provider.removeprefix("linreg-sparse-sgd").removesuffix("-dense-rule").removesuffix(
                "-in-order"))
            fn = _linreg_epoch(X, y, dense_rule=provider.endswith("-dense-rule"), batch_size=batch,
                               shuffle=not provider.endswith("-in-order"))
        elif provider.startswith("sklearn-sgd"):
            fn = _sklearn_epoch(X, y, shuffle=provider.endswith("-shuffled"))
        else:
            fn = _torch_epoch(X, y)
        fn()
    return fn


def _shape(quick: bool) -> tuple[int, int]:
    return (20_000, 5_000) if quick else (1_000_000, 100_000)


@pytest.mark.parametrize("sparse_provider", PROVIDERS)
def test_w9_sparse_epoch(benchmark, request, sparse_provider):
    provider = sparse_provider  # ("provider" is the harness providers, parametrised by conftest)
    quick = quick_mode(request.config)
    n_samples, n_features = _shape(quick)
    X, y = sparse_problem(n_samples, n_features)
    fn = provider_epoch(provider, X, y)
    benchmark.group = f"W9 sparse epoch {n_samples}x{n_features} nnz={X.nnz} float32"
    benchmark.extra_info.update({"provider": provider, "nnz": int(X.nnz),
                                 "matrix MB": round((X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 1e6, 1)})
    # OpenMP and OpenBLAS workers spin briefly after a call: a pause before each round keeps the providers fair.
    slow = provider in ("linreg-sparse-sgd1", "linreg-sparse-sgd1-in-order", "linreg-sparse-sgd256-dense-rule")
    rounds = 5 if quick else (3 if slow else 7)
    benchmark.pedantic(fn, setup=lambda: time.sleep(0.2), rounds=rounds, iterations=1, warmup_rounds=0)


def interleaved(quick: bool, rounds: int, providers: list[str]) -> dict[str, list[float]]:
    """Seconds of each provider's epoch, the providers in turns (A, B, C, A, B, C, ...) so that the load of the
    machine falls on all of them alike; a 0.2 s pause before each call."""
    X, y = sparse_problem(*_shape(quick))
    epochs = {}
    for provider in providers:
        try:
            epochs[provider] = provider_epoch(provider, X, y)
        except pytest.skip.Exception as reason:
            print(f"{provider}: skipped ({reason})")
    times: dict[str, list[float]] = {provider: [] for provider in epochs}
    for _ in range(rounds):
        for provider, fn in epochs.items():
            time.sleep(0.2)
            start = time.perf_counter()
            fn()
            times[provider].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> None:
    import argparse
    import os

    parser = argparse.ArgumentParser(description="W9's providers timed in turns; min and median, ratios to "
                                                 "sklearn-sgd")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    args = parser.parse_args(argv)
    times = interleaved(args.quick, args.rounds, args.providers.split(","))
    reference = float(np.min(times["sklearn-sgd"])) if "sklearn-sgd" in times else None
    print(f"W9 {_shape(args.quick)}, {args.rounds} rounds in turns, load average {os.getloadavg()[0]:.1f}")
    for provider, seconds in times.items():
        ratio = f"  {np.min(seconds) / reference:6.2f}x sklearn-sgd (min)" if reference else ""
        print(f"{provider:34} min {1e3 * np.min(seconds):9.1f} ms  median {1e3 * np.median(seconds):9.1f} ms{ratio}")


if __name__ == "__main__":  # (the script's folder is on sys.path: bench and harness import)
    main()
