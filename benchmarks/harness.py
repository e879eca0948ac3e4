"""Performance report: ``linreg report [--quick] [--out DIR]``.

Runs the benchmark workloads of issue 5 on every provider available here and
writes ``report.md``, ``results.json`` and PNG plots into DIR:

* W1  seed 000's whole fit (5000x5, 500 epochs, full batch);
* W2  one full-batch epoch over a size sweep (n_samples x n_features x n_outputs, float32/float64);
* W3  one mini-batch SGD epoch (batch 256) over 1,000,000x32;
* W4  one full-batch epoch, multi-output, 1,000,000x64 -> 8;
* W5  exact least squares over 2,000,000x32 (``solver="normal"`` vs scikit-learn and scikit-learn-intelex),
      float64 and float32;
* W6  a fit plus its inference (nonrobust and HC3 standard errors, p-values, intervals) over
  1,000,000x32, against statsmodels OLS (``linreg.inference``);
* W7  a whole fit of 500 full-batch epochs over 1,000,000x32: ``solver="gram"`` (one Gram pass, then
      epochs on the statistics) against streaming gradient descent, and the Gram pass alone;
* the machine's read bandwidth (the roofline of a streaming epoch), measured in the same run;
* cold start: import and first fit in a new process, with a warm and (full mode) an empty kernel cache.

Providers: ``linreg-cpu`` (our Numba kernels), ``linreg-cuda`` (our CUDA kernels; only
on a real GPU, never timed under the simulator), ``torch-seed`` (the seeds' torch
autograd loop), ``torch-sgd`` (``torch.nn.Linear`` + ``torch.optim.SGD``), ``numpy``
(closed-form gradients), ``sklearn`` (LinearRegression; SGDRegressor where comparable),
``sklearnex`` (scikit-learn-intelex's LinearRegression, oneDAL: W5 only, skipped when not installed),
``random-gather`` (W3: reading the epoch's rows in its shuffled order, no arithmetic: the
random-access roofline of a mini-batch epoch), ``linreg-stream`` and ``gram-pass`` (W7 only).

Every figure is a ratio against a peer timed in the same run: absolute times on a
shared 2-core machine move by 2x from one minute to the next. ``--quick`` runs the
same workloads on small sizes (well under a minute, for CI); the targets are only
judged on the full sizes.

The benchmark suites in ``benchmarks/`` (pytest-benchmark) use the same providers,
through :func:`prepare`. Nothing here is imported by ``import linreg``; torch,
scikit-learn and matplotlib are imported only when a provider or plot needs them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

PROVIDERS = ("linreg-cpu", "linreg-cuda", "torch-seed", "torch-sgd", "numpy", "sklearn", "sklearnex", "statsmodels",
             "random-gather", "linreg-stream", "gram-pass")
#: Epoch-unit workloads (W2, W4) report bytes moved and the fraction of the roofline.
STREAMING = ("W2", "W4")
#: The learning rate of the epoch workloads: small enough that repeated rounds never diverge.
EPOCH_LR = 1e-3
MINIBATCH = 256
#: W3 batch sizes timed besides MINIBATCH (linreg, torch-sgd and the roofline only).
OTHER_BATCHES = (32, 1024, 8192)
#: Epochs of the W7 whole fits.
GRAM_FIT_EPOCHS = 500
#: Engine epochs allocated per W3 run before it is restarted.
_EPOCH_POOL = 64


class Unavailable(Exception):
    """A provider cannot run a workload here; the message says why (shown as the skip reason)."""


@dataclass(frozen=True)
class Case:
    """One benchmark configuration: a workload on one problem shape and dtype."""

    workload: str
    n_samples: int
    n_features: int
    n_outputs: int
    dtype: str
    batch: int = MINIBATCH  # W3 only

    @property
    def label(self) -> str:
        batch = f" batch {self.batch}" if self.workload == "W3" and self.batch != MINIBATCH else ""
        return f"{self.workload} {self.n_samples}x{self.n_features}->{self.n_outputs} {self.dtype}{batch}"

    @property
    def nbytes(self) -> int:
        """Bytes of X and Y: what one streaming pass reads."""
        return self.n_samples * (self.n_features + self.n_outputs) * np.dtype(self.dtype).itemsize

    @property
    def unit(self) -> str:
        return {"W1": "fit (500 epochs)", "W2": "epoch", "W3": f"epoch (batch {self.batch})", "W4": "epoch",
                "W5": "solve", "W6": "fit + inference", "W7": f"fit ({GRAM_FIT_EPOCHS} epochs)"}[self.workload]


W1_CASE = Case("W1", 5000, 5, 1, "float32")
W2_TARGET = Case("W2", 2_000_000, 32, 1, "float32")
W3_CASE = Case("W3", 1_000_000, 32, 1, "float32")
W4_CASE = Case("W4", 1_000_000, 64, 8, "float32")
W5_CASE = Case("W5", 2_000_000, 32, 1, "float64")
W5_FLOAT32 = Case("W5", 2_000_000, 32, 1, "float32")
W6_CASE = Case("W6", 1_000_000, 32, 1, "float64")
W7_CASE = Case("W7", 1_000_000, 32, 1, "float32")


TARGET_CASES = [W1_CASE, W2_TARGET, W3_CASE, W4_CASE, W5_CASE, W5_FLOAT32, W7_CASE]


def gram_fit_cases(quick: bool = False) -> list[Case]:
    """W7 (solver="gram" whole fits): run by the report besides ``cases()``."""
    return [Case("W7", 20_000, 32, 1, "float32")] if quick else [W7_CASE]


def cases(quick: bool = False) -> list[Case]:
    """The report's sweep. Full: the issue's sizes; quick: the same workloads on small sizes."""
    if quick:
        sweep = [Case("W2", n, 32, 1, "float32") for n in (1_000, 10_000, 100_000)]
        sweep += [Case("W2", 100_000, 5, 1, "float32"), Case("W2", 100_000, 32, 8, "float32"),
                  Case("W2", 100_000, 32, 1, "float64"), Case("W2", 10_000, 128, 1, "float32"),
                  Case("W2", 20_000, 256, 16, "float32"), Case("W2", 20_000, 256, 1, "float64")]
        return [W1_CASE, *sweep, Case("W3", 100_000, 32, 1, "float32"), Case("W4", 100_000, 64, 8, "float32"),
                Case("W5", 100_000, 32, 1, "float64"), Case("W6", 100_000, 32, 1, "float64")]
    sweep = [Case("W2", n, f, 1, "float32") for f in (5, 32, 128) for n in (1_000, 10_000, 100_000, 1_000_000)]
    sweep += [Case("W2", 4_000_000, f, 1, "float32") for f in (5, 32)]
    sweep += [W2_TARGET]
    sweep += [Case("W2", 1_000_000, f, o, d) for f in (5, 32, 128) for o in (1, 8) for d in ("float32", "float64")
              if (o, d) != (1, "float32")]
    # Issue 15's widths: 256 features (half a million rows: 512 MiB of float32), 16 outputs, both dtypes.
    sweep += [Case("W2", 500_000, 256, o, d) for o in (1, 16) for d in ("float32", "float64")]
    sweep += [Case("W2", 1_000_000, 32, 16, d) for d in ("float32", "float64")]
    batches = [Case("W3", W3_CASE.n_samples, 32, 1, "float32", batch) for batch in OTHER_BATCHES]
    return [W1_CASE, *sweep, W3_CASE, *batches, W4_CASE, W5_CASE, W5_FLOAT32, W6_CASE]


# --------------------------------------------------------------------------- data


def make_problem(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal X and Y = X W^T + b + noise, C-contiguous, in the case's dtype (Y is 2-D)."""
    if case.workload == "W1":
        from linreg import datasets

        X, y = datasets.seed_linear(random_state=0)
        return X, y.reshape(-1, 1)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((case.n_samples, case.n_features), dtype=np.float32)
    W = rng.standard_normal((case.n_outputs, case.n_features), dtype=np.float32)
    Y = X @ W.T + np.float32(0.5) + np.float32(0.1) * rng.standard_normal((case.n_samples, case.n_outputs),
                                                                         dtype=np.float32)
    dtype = np.dtype(case.dtype)
    return np.ascontiguousarray(X, dtype=dtype), np.ascontiguousarray(Y, dtype=dtype)


# --------------------------------------------------------------------------- providers


def _torch():
    try:
        import torch
    except ImportError:
        raise Unavailable("torch is not installed") from None
    import numba

    torch.set_num_threads(numba.get_num_threads())  # one thread per core for both OpenMP pools
    return torch


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise Unavailable("scikit-learn is not installed") from None


def _require_gpu() -> None:
    """Raise Unavailable unless a real CUDA GPU and our CUDA backend are here."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        raise Unavailable("CUDA simulator active: simulated kernels are never timed")
    from linreg.backends import BACKENDS

    if "cuda" not in BACKENDS:
        raise Unavailable("no 'cuda' backend in this build of linreg")
    try:
        from numba import cuda

        available = cuda.is_available()
    except Exception as error:  # numba-cuda missing or broken
        raise Unavailable(f"no CUDA GPU ({type(error).__name__}: {error})") from None
    if not available:
        raise Unavailable("no CUDA GPU on this machine")


def _sync_gpu() -> None:
    from numba import cuda

    cuda.synchronize()


def _has_param(name: str) -> bool:
    from linreg import LinearRegressor

    return name in LinearRegressor().get_params()


def prepare(provider: str, case: Case, data: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[Callable, str]:
    """Set up ``provider`` on ``case`` and return ``(run_once, note)``; raises Unavailable with a reason.

    Setup (data conversion, tensors, workspaces, compilation) happens here, once;
    ``run_once()`` does one unit of the workload (a whole fit for W1, one epoch
    for W2-W4, one solve for W5) and is what gets timed. It has been called once
    already, so kernel compilation or cache loading is not in the timings.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    if provider == "statsmodels" and case.workload != "W6":
        raise Unavailable("statsmodels is timed on W6 (inference) only")
    X, Y = data if data is not None else make_problem(case)
    if provider in ("sklearnex", "random-gather", "linreg-stream", "gram-pass") or case.workload == "W7":
        fn, note = _anchor(provider, case, X, Y)
    elif case.workload == "W3":
        fn, note = _minibatch(provider, X, Y, case.batch)
    else:
        build = {"W1": _w1, "W2": _epoch, "W4": _epoch, "W5": _solve, "W6": _inference}[case.workload]
        fn, note = build(provider, X, Y)
    fn()  # warm-up: compile or load kernels, first-touch memory
    return fn, note


def _w1(provider: str, X: np.ndarray, Y: np.ndarray) -> tuple[Callable, str]:
    """Seed 000's whole fit: 500 epochs of full-batch GD at lr 1e-5 from weights of ones."""
    y = Y[:, 0]
    n_features = X.shape[1]
    if provider in ("linreg-cpu", "linreg-cuda"):
        from linreg import LinearRegressor
        from linreg.datasets import SEED_000_SETTINGS

        if provider == "linreg-cuda":
            _require_gpu()
            model = LinearRegressor(backend="cuda", **SEED_000_SETTINGS)
            return (lambda: (model.fit(X, y), _sync_gpu())), "LinearRegressor(backend='cuda', seed 000's settings).fit"
        model = LinearRegressor(**SEED_000_SETTINGS)
        return (lambda: model.fit(X, y)), "LinearRegressor(**SEED_000_SETTINGS).fit, input validation included"
    if provider == "torch-seed":
        _torch()
        from linreg import oracle

        W0, b0 = np.ones(n_features, np.float32), np.ones(1, np.float32)
        return (lambda: oracle.seed_loop(X, y, W0, b0, 1e-5, 500)), "linreg.oracle.seed_loop (the notebooks' loop)"
    if provider == "torch-sgd":
        torch = _torch()
        x, t = torch.from_numpy(X), torch.from_numpy(Y)

        def fit():
            linear = torch.nn.Linear(n_features, 1)
            with torch.no_grad():
                linear.weight.fill_(1.0)
                linear.bias.fill_(1.0)
            opt = torch.optim.SGD(linear.parameters(), lr=1e-5)
            loss_fn = torch.nn.MSELoss()
            for _ in range(500):
                opt.zero_grad()
                loss = loss_fn(linear(x), t)
                loss.backward()
                opt.step()
            return linear

        return fit, "nn.Linear + optim.SGD + nn.MSELoss, 500 steps"
    if provider == "numpy":
        def fit():
            W, b = np.ones((1, n_features), X.dtype), np.ones(1, X.dtype)
            for _ in range(500):
                W, b, _loss = _numpy_step(X, Y, W, b, 1e-5)
            return W, b

        return fit, "closed-form gradients in NumPy, 500 steps"
    raise Unavailable("scikit-learn has no full-batch gradient descent (SGDRegressor is per-sample SGD; "
                      "LinearRegression is the exact solve of W5)")


def _numpy_step(X, Y, W, b, lr):
    """One full-batch step with the closed-form gradients, in X's dtype (the obvious NumPy code)."""
    R = X @ W.T + b - Y
    n = R.size
    loss = float(np.vdot(R, R)) / n
    dW = (2.0 / n) * (R.T @ X)
    db = (2.0 / n) * R.sum(axis=0)
    return (W - lr * dW).astype(X.dtype, copy=False), (b - lr * db).astype(X.dtype, copy=False), loss


def _epoch(provider: str, X: np.ndarray, Y: np.ndarray) -> tuple[Callable, str]:
    """One full-batch epoch (loss, gradients, update) from zeros."""
    n_samples, n_features = X.shape
    n_outputs = Y.shape[1]
    W0, b0 = np.zeros((n_outputs, n_features), X.dtype), np.zeros(n_outputs, X.dtype)
    if provider == "linreg-cpu":
        from linreg.kernels import cpu

        W, b, history = W0.copy(), b0.copy(), np.zeros(1)
        work = cpu.Workspace(n_samples, n_features, n_outputs, X.dtype)
        return (lambda: cpu.gd(X, Y, W, b, EPOCH_LR, history, 0, 1, work)), "kernels.cpu.gd, one epoch"
    if provider == "linreg-cuda":
        _require_gpu()
        from linreg.backends import get_backend

        backend = get_backend("cuda")
        state = {"run": backend.start_gd(X, Y, W0, b0, EPOCH_LR, _EPOCH_POOL)}

        def epoch():
            if state["run"].n_done >= _EPOCH_POOL:
                state["run"] = backend.start_gd(state["run"].X, state["run"].Y, W0, b0, EPOCH_LR, _EPOCH_POOL)
            state["run"].advance(1)
            _sync_gpu()

        return epoch, "CudaBackend run.advance(1) on device-resident data"
    if provider == "torch-seed":
        _torch()
        from linreg.oracle import SeedLoop

        loop = SeedLoop(X, Y, W0, b0, EPOCH_LR)

        def epoch():
            loop.advance(1)
            loop.history.clear()

        return epoch, "linreg.oracle.SeedLoop.advance(1)"
    if provider == "torch-sgd":
        torch = _torch()
        x, t = torch.from_numpy(X), torch.from_numpy(Y)
        linear = torch.nn.Linear(n_features, n_outputs, dtype=x.dtype)
        opt = torch.optim.SGD(linear.parameters(), lr=EPOCH_LR)
        loss_fn = torch.nn.MSELoss()

        def epoch():
            opt.zero_grad()
            loss = loss_fn(linear(x), t)
            loss.backward()
            opt.step()

        return epoch, "nn.Linear + optim.SGD, one step"
    if provider == "numpy":
        state = [W0.copy(), b0.copy()]

        def epoch():
            state[0], state[1], _ = _numpy_step(X, Y, state[0], state[1], EPOCH_LR)

        return epoch, "closed-form gradients in NumPy, one step"
    raise Unavailable("scikit-learn has no full-batch gradient-descent epoch")


def _minibatch(provider: str, X: np.ndarray, Y: np.ndarray, batch: int = MINIBATCH) -> tuple[Callable, str]:
    """One epoch of mini-batch SGD, batch 256 (or ``batch``), reshuffled each epoch."""
    if batch != MINIBATCH and provider not in ("linreg-cpu", "torch-sgd"):
        raise Unavailable(f"batch sizes other than {MINIBATCH} are timed on linreg-cpu, torch-sgd and the "
                          "random-gather roofline only")
    n_samples, n_features = X.shape
    n_outputs = Y.shape[1]
    W0, b0 = np.zeros((n_outputs, n_features), X.dtype), np.zeros(n_outputs, X.dtype)
    if provider in ("linreg-cpu", "linreg-cuda"):
        if provider == "linreg-cuda":
            _require_gpu()
            return _linreg_cuda_minibatch(X, Y, batch)
        if not _has_param("batch_size"):
            raise Unavailable("LinearRegressor(batch_size=...) is not in this build (training issue)")
        return _linreg_minibatch(X, Y, batch)
    if provider in ("torch-seed", "torch-sgd"):
        torch = _torch()
        x, t = torch.from_numpy(X), torch.from_numpy(Y)
        generator = torch.Generator().manual_seed(0)
        if provider == "torch-seed":
            from linreg.oracle import mse

            w = torch.zeros((n_outputs, n_features), dtype=x.dtype, requires_grad=True)
            bias = torch.zeros(n_outputs, dtype=x.dtype, requires_grad=True)

            def epoch():
                order = torch.randperm(n_samples, generator=generator)
                for start in range(0, n_samples, MINIBATCH):
                    rows = order[start:start + MINIBATCH]
                    loss = mse(x[rows] @ w.t() + bias, t[rows])
                    loss.backward()
                    with torch.no_grad():
                        w.sub_(w.grad * EPOCH_LR)
                        bias.sub_(bias.grad * EPOCH_LR)
                        w.grad.zero_()
                        bias.grad.zero_()

            return epoch, "the seeds' autograd loop over shuffled batches of 256"
        linear = torch.nn.Linear(n_features, n_outputs, dtype=x.dtype)
        opt = torch.optim.SGD(linear.parameters(), lr=EPOCH_LR)
        loss_fn = torch.nn.MSELoss()

        def epoch():
            order = torch.randperm(n_samples, generator=generator)
            for start in range(0, n_samples, batch):
                rows = order[start:start + batch]
                opt.zero_grad()
                loss_fn(linear(x[rows]), t[rows]).backward()
                opt.step()

        return epoch, f"nn.Linear + optim.SGD over shuffled batches of {batch}"
    if provider == "numpy":
        rng = np.random.default_rng(0)
        state = [W0.copy(), b0.copy()]

        def epoch():
            order = rng.permutation(n_samples)
            for start in range(0, n_samples, MINIBATCH):
                rows = order[start:start + MINIBATCH]
                state[0], state[1], _ = _numpy_step(X[rows], Y[rows], state[0], state[1], EPOCH_LR)

        return epoch, "closed-form gradients in NumPy over shuffled batches of 256"
    _sklearn()
    if n_outputs != 1:
        raise Unavailable("SGDRegressor fits one output")
    from sklearn.linear_model import SGDRegressor

    model = SGDRegressor(penalty=None, learning_rate="constant", eta0=EPOCH_LR, random_state=0)
    y = Y[:, 0]
    return (lambda: model.partial_fit(X, y)), "SGDRegressor.partial_fit: per-sample SGD (batch 1), not batch 256"


def _linreg_minibatch(X: np.ndarray, Y: np.ndarray, batch: int = MINIBATCH) -> tuple[Callable, str]:
    from linreg import LinearRegressor

    n_outputs = Y.shape[1]
    model = LinearRegressor(batch_size=batch, epochs=_EPOCH_POOL, lr=EPOCH_LR, init="zeros", random_state=0)
    try:  # one epoch of the compiled engine, without fit's input validation
        from linreg import driver

        state = {"run": driver.engine_run(model.get_params(), X, Y)}

        def epoch():
            if state["run"].n_done >= _EPOCH_POOL:
                state["run"] = driver.engine_run(model.get_params(), X, Y)
            state["run"].advance(1)

        epoch()
        return epoch, f"one epoch of LinearRegressor(batch_size={batch})'s compiled engine, validation excluded"
    except (AttributeError, TypeError, ValueError):
        single = LinearRegressor(batch_size=batch, lr=EPOCH_LR, init="zeros", random_state=0)
        y = Y[:, 0] if n_outputs == 1 else Y
        return (lambda: single.partial_fit(X, y)), "LinearRegressor(batch_size=256).partial_fit: includes validation"


def _linreg_cuda_minibatch(X: np.ndarray, Y: np.ndarray, batch: int = MINIBATCH) -> tuple[Callable, str]:
    """One epoch of the engine on the GPU (linreg.cuda_engine), data resident there, without fit's validation."""
    from linreg import LinearRegressor, _engine, driver, options
    from linreg.cuda_engine import DeviceRows

    n_outputs, n_features = Y.shape[1], X.shape[1]
    params = LinearRegressor(backend="cuda", batch_size=batch, epochs=_EPOCH_POOL, lr=EPOCH_LR, init="zeros",
                             random_state=0).get_params()
    spec, data = options.make_spec(params), DeviceRows(driver.InMemory(X, Y, None))

    def new_run():
        state = _engine.EngineState.raw(np.zeros((n_outputs, n_features)), np.zeros(n_outputs))
        return data.start_gd(spec, state, EPOCH_LR, None, None, 0)

    runs = {"run": new_run()}

    def epoch():
        if runs["run"].n_done >= _EPOCH_POOL:
            runs["run"] = new_run()
        runs["run"].advance(1)  # ends with the state's copy back: synchronised

    return epoch, (f"one epoch of LinearRegressor(backend='cuda', batch_size={batch})'s engine on the device "
                   "(shuffle computed on the host and copied each epoch), validation excluded")


def _solve(provider: str, X: np.ndarray, Y: np.ndarray) -> tuple[Callable, str]:
    """Exact least squares with an intercept, including each library's input checks."""
    y = Y[:, 0] if Y.shape[1] == 1 else Y
    if provider in ("linreg-cpu", "linreg-cuda"):
        if not _has_param("solver"):
            raise Unavailable("LinearRegressor(solver='normal') is not in this build (training issue)")
        from linreg import LinearRegressor

        if provider == "linreg-cuda":
            _require_gpu()
            model = LinearRegressor(solver="normal", backend="cuda")
            return (lambda: model.fit(X, y)), ("LinearRegressor(solver='normal', backend='cuda').fit: validation, X "
                                               "and Y copied to the device, moments and Gram there, solve on the host")
        model = LinearRegressor(solver="normal")
        return (lambda: model.fit(X, y)), "LinearRegressor(solver='normal').fit, validation included"
    if provider == "sklearn":
        _sklearn()
        from sklearn.linear_model import LinearRegression

        model = LinearRegression()
        return (lambda: model.fit(X, y)), "LinearRegression().fit (scipy lstsq on centred data)"
    if provider == "numpy":
        def solve():
            A = np.empty((X.shape[0], X.shape[1] + 1), X.dtype)
            A[:, :-1] = X
            A[:, -1] = 1.0
            return np.linalg.lstsq(A, y, rcond=None)[0]

        return solve, "numpy.linalg.lstsq on [X 1]"
    raise Unavailable(f"{provider} is not an exact solver here (W5 compares solver='normal' with scikit-learn)")


def _inference(provider: str, X: np.ndarray, Y: np.ndarray) -> tuple[Callable, str]:
    """An exact fit with an intercept, then nonrobust and HC3 standard errors, p-values and 95% intervals."""
    y = Y[:, 0]
    if provider == "linreg-cpu":
        from linreg import LinearRegressor

        model = LinearRegressor(solver="normal")

        def fit_and_infer():
            model.fit(X, y)
            classical = model.inference()  # from the fit's Gram statistics: no pass over the data
            robust = model.inference(X, y, cov_type="HC3")  # one fused pass: residuals, leverages, meat
            return classical.pvalues, classical.conf_int(), robust.pvalues, robust.conf_int()

        return fit_and_infer, "fit(solver='normal'), inference() and inference(X, y, cov_type='HC3')"
    if provider == "statsmodels":
        try:
            import statsmodels.api as sm
        except ImportError:
            raise Unavailable("statsmodels is not installed") from None

        def fit_and_infer():
            fitted = sm.OLS(y, sm.add_constant(X)).fit()
            robust = fitted.get_robustcov_results("HC3", use_t=True)
            return fitted.pvalues, fitted.conf_int(), robust.pvalues, robust.conf_int()

        return fit_and_infer, "OLS(y, add_constant(X)).fit() and get_robustcov_results('HC3') (pinv of the design)"
    raise Unavailable(f"{provider} has no inference (W6 compares linreg.inference with statsmodels)")


def _anchor(provider: str, case: Case, X: np.ndarray, Y: np.ndarray) -> tuple[Callable, str]:
    """The providers that anchor one workload each: sklearnex (W5), random-gather (W3), W7's fits."""
    if case.workload == "W7":
        return _gram_fit(provider, X, Y)
    if provider == "sklearnex":
        if case.workload != "W5":
            raise Unavailable("scikit-learn-intelex is timed on W5 (the exact solve) only")
        try:
            from sklearnex.linear_model import LinearRegression
        except ImportError as error:
            raise Unavailable(f"scikit-learn-intelex is not installed (pip install scikit-learn-intelex, or the "
                              f"bench extra): {error}") from None
        model = LinearRegression()
        y = Y[:, 0] if Y.shape[1] == 1 else Y
        return (lambda: model.fit(X, y)), ("sklearnex LinearRegression().fit (oneDAL normal equations), "
                                           "validation included")
    if provider == "random-gather":
        if case.workload != "W3":
            raise Unavailable("the random-gather roofline bounds W3 (shuffled mini-batches) only")
        from linreg.kernels import cpu_gather, cpu_train

        order = cpu_train.epoch_order(0, 1, X.shape[0])
        return ((lambda: cpu_gather.gather_sum(X, Y, order)),
                "read every row of X and Y once in an epoch's shuffled order, prefetched as the engine does, "
                "one thread, no arithmetic (kernels.cpu_gather.gather_sum)")
    raise Unavailable(f"{provider} is timed on W7 (solver='gram' against streaming) only")


def _gram_fit(provider: str, X: np.ndarray, Y: np.ndarray) -> tuple[Callable, str]:
    """W7: 500 full-batch epochs from the Gram statistics, against the same fit streaming X every epoch."""
    y = Y[:, 0] if Y.shape[1] == 1 else Y
    from linreg import LinearRegressor

    options = dict(epochs=GRAM_FIT_EPOCHS, lr=0.1, init="zeros")
    if provider == "linreg-cpu":
        model = LinearRegressor(solver="gram", **options)
        return (lambda: model.fit(X, y)), (f"LinearRegressor(solver='gram', epochs={GRAM_FIT_EPOCHS}).fit: "
                                           "validation, one Gram pass, the epochs on the statistics")
    if provider == "linreg-stream":
        model = LinearRegressor(solver="gd", **options)
        return (lambda: model.fit(X, y)), (f"LinearRegressor(solver='gd', epochs={GRAM_FIT_EPOCHS}).fit: "
                                           "streams X every epoch")
    if provider == "gram-pass":
        from linreg.kernels import cpu_train

        return (lambda: cpu_train.gram(X, Y)), "kernels.cpu_train.gram(X, Y): the one pass of the Gram fit"
    raise Unavailable("W7 compares linreg's own solvers (gram against streaming gd)")


# --------------------------------------------------------------------------- measurement


def time_it(fn: Callable, budget_s: float = 1.0, min_rounds: int = 3, max_rounds: int = 50) -> dict[str, Any]:
    """Time ``fn()`` repeatedly (at least min_rounds, until budget_s): min, median and all rounds, seconds."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_rounds and (len(times) < min_rounds or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"min": min(times), "median": float(np.median(times)), "rounds": len(times), "times": times}


_sum_kernel = None


def _parallel_sum():
    global _sum_kernel
    if _sum_kernel is None:
        from numba import njit, prange

        @njit(parallel=True, fastmath={"reassoc"}, cache=True)
        def parallel_sum(a, parts):
            n_chunks = parts.shape[0]
            step = (a.shape[0] + n_chunks - 1) // n_chunks
            for c in prange(n_chunks):
                chunk = a[min(c * step, a.shape[0]):min((c + 1) * step, a.shape[0])]
                total = 0.0
                for i in range(chunk.shape[0]):
                    total += chunk[i]
                parts[c] = total
            total = 0.0
            for c in range(n_chunks):
                total += parts[c]
            return total

        _sum_kernel = parallel_sum
    return _sum_kernel


def measure_read_bandwidth(nbytes: int = 512 << 20, budget_s: float = 1.0) -> dict[str, Any]:
    """Read bandwidth in GB/s: a vectorised Numba parallel sum over nbytes of float64, all threads, best round.

    This is the roofline of a streaming epoch (it must read X and Y once). A NumPy
    single-threaded sum over the same array is recorded for comparison.
    """
    array = np.ones(nbytes // 8)
    parts = np.zeros(256)
    kernel = _parallel_sum()
    kernel(array, parts)
    numba_t = time_it(lambda: kernel(array, parts), budget_s=budget_s, min_rounds=5)
    numpy_t = time_it(array.sum, budget_s=budget_s / 2, min_rounds=3)
    return {"bytes": array.nbytes, "GB/s": array.nbytes / numba_t["min"] / 1e9,
            "median GB/s": array.nbytes / numba_t["median"] / 1e9,
            "numpy 1-thread GB/s": array.nbytes / numpy_t["min"] / 1e9, "rounds": numba_t["rounds"]}


def device_info() -> dict[str, Any]:
    """CPU model, cores and threads, GPU (or "no GPU"), library versions, Numba threading layer."""
    import numba

    from linreg.kernels import cpu

    info: dict[str, Any] = {"cpu": _cpu_model(), "cores": os.cpu_count(), "numba threads": numba.get_num_threads(),
                            "threading layer": cpu.threading_layer(), "platform": platform.platform()}
    try:
        _require_gpu()
        from numba import cuda

        name = cuda.get_current_device().name
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
    except Unavailable as reason:
        info["gpu"] = f"no GPU ({reason})"
    versions = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}
    for name in ("llvmlite", "torch", "scikit-learn", "scipy", "matplotlib", "numba-cuda"):
        try:  # from the installed metadata: importing torch only for its version would cost ~1.5 s
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    from linreg import __version__

    versions["linreg"] = __version__
    info["versions"] = versions
    if "torch" in sys.modules:  # a torch provider ran: its thread count is part of the comparison
        info["torch threads"] = sys.modules["torch"].get_num_threads()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_COLD_START = """
import sys, time
if {hide_scipy}:  # as where scipy is not installed: numba's BLAS check then fails fast
    sys.modules["scipy"] = None
t0 = time.perf_counter()
import linreg
t1 = time.perf_counter()
X, y = linreg.datasets.seed_linear(random_state=0)
linreg.LinearRegressor(**{fit_kwargs}).fit(X, y)
t2 = time.perf_counter()
print(t1 - t0, t2 - t0, 'torch' in sys.modules, 'numba' in sys.modules)
"""


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose import+fit time is the median (issue 11 states its warm goal as a median of 5)."""
    return sorted(runs, key=lambda r: r["import+fit"])[len(runs) // 2]


def cold_start(compile_cost: bool = True, repeats: int = 5) -> dict[str, Any]:
    """Seed 000's fit as the first thing a new process does, import included.

    The first run fills the caches as a user's first run does: the Numba kernel cache, and (background AOT
    builds on, as by default) the ahead-of-time library of the fit's loop (``linreg.aot``), which is built
    by a detached process after the run exits: this waits for that build (``aot_build``: seconds waited).
    ``warm``: then the median of ``repeats`` runs, the user's path (the AOT library where it was built; each
    run says whether numba was imported); ``warm, JIT only``: ``LINREG_AOT=0``, the Numba cache only, timed
    in turns with ``warm``. ``warm, no scipy``: JIT only with scipy hidden (on its first compile or cache
    load Numba imports scipy.linalg to check for BLAS if scipy is installed; linreg itself needs no scipy).
    ``compile`` (compile_cost): an empty NUMBA_CACHE_DIR, so every kernel on the fit path compiles; its
    background AOT build is waited for too (``compile, aot_build``). Then, each with its own empty cache,
    issue 11's other two first-run targets: ``compile, defaults`` (a ``standardize=True, lr="auto"`` fit of
    the same data: the engine's loop and the Gram pass compile) and ``compile, linreg train`` (the CLI's
    demo, both runs, ``--no-progress``: whole process only).
    Each entry: in-process seconds (import linreg .. fit returned), whole-process wall seconds.
    """
    from linreg import aot

    def run(env: dict[str, str], hide_scipy: bool = False,
            fit_kwargs: str = "linreg.datasets.SEED_000_SETTINGS") -> dict[str, float]:
        t0 = time.perf_counter()
        code = _COLD_START.replace("{hide_scipy}", str(hide_scipy)).replace("{fit_kwargs}", fit_kwargs)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, **env}, timeout=600)
        wall = time.perf_counter() - t0
        import_s, fit_s, torch_loaded, numba_loaded = out.stdout.split()
        return {"import": float(import_s), "import+fit": float(fit_s), "process": wall,
                "torch imported": torch_loaded == "True", "numba imported": numba_loaded == "True"}

    def waited_for_build(folder: Path) -> float:
        t0 = time.perf_counter()
        aot.wait_for_builds(timeout=600, folder=folder)
        return time.perf_counter() - t0

    first_run = {"LINREG_AOT_BACKGROUND": "1"}  # a user's default, whatever this process has
    jit_only = {"LINREG_AOT": "0"}
    run(first_run)  # fill the caches
    result: dict[str, Any] = {"aot_build": waited_for_build(aot.cache_dir())}
    warm, jit = [], []
    for _ in range(repeats):  # in turns, so load changes hit both alike
        warm.append(run({}))
        jit.append(run(jit_only))
    result.update({"warm": _median_run(warm), "warm runs": warm, "warm, JIT only": _median_run(jit),
                   "warm, JIT only runs": jit})
    result["warm, no scipy"] = _median_run([run(jit_only, hide_scipy=True) for _ in range(repeats)])
    if compile_cost:
        with tempfile.TemporaryDirectory() as cache:
            result["compile"] = run({**first_run, "NUMBA_CACHE_DIR": cache})
            result["compile, aot_build"] = waited_for_build(Path(cache) / "linreg-aot")
        with tempfile.TemporaryDirectory() as cache:
            result["compile, defaults"] = run({"LINREG_AOT_BACKGROUND": "0", "NUMBA_CACHE_DIR": cache},
                                              fit_kwargs="dict(standardize=True, lr='auto')")
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "linreg", "train", "--no-progress"], capture_output=True,
                           check=True, env={**os.environ, "LINREG_AOT_BACKGROUND": "0", "NUMBA_CACHE_DIR": cache},
                           timeout=600)
            result["compile, linreg train"] = {"process": time.perf_counter() - t0}
    return result


# --------------------------------------------------------------------------- the report


@dataclass
class Result:
    case: Case
    provider: str
    status: str  # "ok" or "skipped"
    note: str = ""
    min_s: float = math.nan
    median_s: float = math.nan
    rounds: int = 0
    times: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["case"] = {**asdict(self.case), "label": self.case.label, "bytes": self.case.nbytes}
        if self.status == "ok":
            data["GB/s"] = self.case.nbytes / self.min_s / 1e9
        return data


def time_interleaved(fns: dict[str, Callable], budget_s: float, min_rounds: int = 3, max_rounds: int = 30,
                     round_s: float = 2e-3, pause_s: float = 0.1) -> dict[str, dict[str, Any]]:
    """Time several callables in turns (A, B, C, A, B, C, ...), so load changes hit all of them alike.

    Each turn is a short block: a pause, one untimed call, then a few timed rounds.
    The pause and the untimed call keep one provider's thread pool out of the next
    one's timings: OpenBLAS (NumPy) and OpenMP (torch) workers spin for a while after
    a call and took a core from the next provider. A callable faster than
    ``round_s`` is called several times per round (their mean is one round). Stops
    once every callable has min_rounds and the budget (per callable) is spent, or
    max_rounds are done.
    """
    repeat, slow = {}, {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
        repeat[name] = max(1, min(10_000, int(round_s / max(elapsed, 1e-7))))
        slow[name] = elapsed > 0.1
    per_turn = {name: 1 if slow[name] else 5 for name in fns}
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    while True:
        for name, fn in fns.items():
            if len(times[name]) >= max_rounds:
                continue
            time.sleep(pause_s)
            if not slow[name]:
                fn()  # untimed: whatever another pool left running settles here
            for _ in range(per_turn[name]):
                t0 = time.perf_counter()
                for _ in range(repeat[name]):
                    fn()
                times[name].append((time.perf_counter() - t0) / repeat[name])
        counts = [len(v) for v in times.values()]
        if min(counts) >= max_rounds or (min(counts) >= min_rounds
                                         and time.perf_counter() - start >= budget_s * len(fns)):
            break
    return {name: {"min": min(v), "median": float(np.median(v)), "rounds": len(v), "times": v}
            for name, v in times.items()}


def run_sweep(quick: bool = False, providers: tuple[str, ...] = PROVIDERS, budget_s: float | None = None,
              log: Callable[[str], None] = print, case_list: list[Case] | None = None) -> list[Result]:
    """Time every provider on every case, in turns; unavailable providers are recorded with their reason."""
    budget = budget_s if budget_s is not None else (0.15 if quick else 1.5)
    results = []
    for case in case_list if case_list is not None else cases(quick):
        data = make_problem(case)
        ready, notes = {}, {}
        for provider in providers:
            try:
                ready[provider], notes[provider] = prepare(provider, case, data)
            except Unavailable as reason:
                results.append(Result(case, provider, "skipped", str(reason)))
        timed = time_interleaved(ready, budget, min_rounds=2 if quick else 3,
                                 pause_s=0.01 if quick else 0.1) if ready else {}
        for provider, t in timed.items():
            results.append(Result(case, provider, "ok", notes[provider], t["min"], t["median"], t["rounds"],
                                  t["times"]))
            log(f"{case.label:32s} {provider:12s} {t['min'] * 1e3:10.3f} ms  ({t['rounds']} rounds)")
        ready.clear()
    return results


def _find(results: list[Result], case: Case, provider: str) -> Result | None:
    for r in results:
        if r.case == case and r.provider == provider and r.status == "ok":
            return r
    return None


def _ratio(results, case, slow, fast="linreg-cpu") -> float | None:
    a, b = _find(results, case, slow), _find(results, case, fast)
    return a.min_s / b.min_s if a and b else None


#: Issue 11's goals for seed 000's fit in a new process (import included): warm and empty kernel cache.
WARM_START_GOAL_S = 0.3
COMPILE_START_GOAL_S = 5.0
#: Issue 11's empty-cache goals for the defaults' fit (standardize=True, lr="auto") and ``linreg train``.
COMPILE_DEFAULTS_GOAL_S = 10.0
COMPILE_TRAIN_GOAL_S = 15.0


#: Issue 15's bandwidth targets besides W2_TARGET: (case, fraction of the read bandwidth).
WIDE_TARGETS = [(Case("W2", 1_000_000, 128, 1, "float32"), 0.8), (Case("W2", 1_000_000, 32, 1, "float64"), 0.8)]
#: Issue 15's cache-resident cases: no slower than the best of torch and NumPy.
SMALL_TARGETS = [Case("W2", 10_000, 128, 1, "float32"), Case("W2", 100_000, 128, 1, "float32")]
#: The peers of the streaming workloads (W2, W4): what linreg-cpu must beat in every case.
EPOCH_PEERS = ("torch-seed", "torch-sgd", "numpy")


def _best_peer(results: list[Result], case: Case) -> Result | None:
    """The fastest of torch (both providers) and NumPy on ``case`` in this run."""
    peers = [r for r in (_find(results, case, p) for p in EPOCH_PEERS) if r is not None]
    return min(peers, key=lambda r: r.min_s) if peers else None


def _worst_vs_best_peer(results: list[Result]) -> tuple[float, str, str] | None:
    """(ratio, case, peer) of the streaming case where linreg-cpu is least ahead of its best peer."""
    worst = None
    for case in dict.fromkeys(r.case for r in results if r.case.workload in STREAMING):
        ours, peer = _find(results, case, "linreg-cpu"), _best_peer(results, case)
        if ours and peer and (worst is None or peer.min_s / ours.min_s < worst[0]):
            worst = (peer.min_s / ours.min_s, case.label, peer.provider)
    return worst


def targets(results: list[Result], roofline: float, cold: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 5's targets, each with the measured value and met / missed (None: not measured in this run)."""
    rows = []

    def add(name, value, goal, unit, higher=True, note=""):
        met = None if value is None else (value >= goal if higher else value < goal)
        rows.append({"target": name, "value": value, "goal": goal, "unit": unit, "met": met, "note": note})

    add("W1 fit vs torch seed loop", _ratio(results, W1_CASE, "torch-seed"), 30, "x")
    add("W1 fit vs NumPy loop", _ratio(results, W1_CASE, "numpy"), 5, "x")
    ours = _find(results, W2_TARGET, "linreg-cpu")
    add("W2 2e6x32 f32 epoch, fraction of read bandwidth",
        None if ours is None else W2_TARGET.nbytes / ours.min_s / 1e9 / roofline, 0.85, "of roofline")
    add("W2 2e6x32 f32 epoch vs torch seed loop", _ratio(results, W2_TARGET, "torch-seed"), 6, "x")
    for case, goal in WIDE_TARGETS:
        ours = _find(results, case, "linreg-cpu")
        add(f"W2 {case.n_samples:,}x{case.n_features}->{case.n_outputs} {case.dtype} epoch, fraction of read "
            "bandwidth", None if ours is None else case.nbytes / ours.min_s / 1e9 / roofline, goal, "of roofline")
    for case in SMALL_TARGETS:
        peer = _best_peer(results, case)
        add(f"W2 {case.n_samples:,}x{case.n_features} f32 epoch vs the best of torch and NumPy",
            None if peer is None else _ratio(results, case, peer.provider), 1, "x",
            note="" if peer is None else f"best peer: {peer.provider}")
    worst = _worst_vs_best_peer(results)
    add("W2/W4 sweep: slowest case vs the best of torch and NumPy", None if worst is None else worst[0], 1, "x",
        note="" if worst is None else f"{worst[1]} (vs {worst[2]})")
    add("W3 mini-batch epoch vs torch", _ratio(results, W3_CASE, "torch-seed"), 50, "x")
    add("W4 multi-output epoch vs torch", _ratio(results, W4_CASE, "torch-seed"), 4, "x")
    add("W5 exact solve vs scikit-learn", _ratio(results, W5_CASE, "sklearn"), 10, "x")
    add("W3 mini-batch epoch vs torch nn.Linear + optim.SGD", _ratio(results, W3_CASE, "torch-sgd"), 50, "x")
    gather, ours = _find(results, W3_CASE, "random-gather"), _find(results, W3_CASE, "linreg-cpu")
    add("W3 mini-batch epoch, fraction of the random-gather roofline",
        gather.min_s / ours.min_s if gather and ours else None, 0.7, "of roofline")
    add("W5 float32 exact solve vs scikit-learn", _ratio(results, W5_FLOAT32, "sklearn"), 10, "x")
    for case in (W5_CASE, W5_FLOAT32):
        add(f"W5 {case.dtype} exact solve vs scikit-learn-intelex", _ratio(results, case, "sklearnex"), 1, "x")
    gram, one_pass = _find(results, W7_CASE, "linreg-cpu"), _find(results, W7_CASE, "gram-pass")
    beyond = (gram.min_s - one_pass.min_s) * 1e3 if gram and one_pass else None
    add(f"W7 solver='gram' fit ({GRAM_FIT_EPOCHS} epochs), in Gram passes",
        gram.min_s / one_pass.min_s if gram and one_pass else None, 1.5, "passes", higher=False,
        note="" if beyond is None else f"fit minus one Gram pass: {beyond:+.1f} ms for the {GRAM_FIT_EPOCHS} epochs "
                                       "and validation (best rounds; within the pass's timing noise when small)")
    add(f"W7 solver='gram' fit vs streaming GD ({GRAM_FIT_EPOCHS} epochs)", _ratio(results, W7_CASE, "linreg-stream"),
        10, "x")
    if cold:
        no_scipy = cold["warm, no scipy"]
        jit = cold.get("warm, JIT only")
        jit_note = (f"JIT only (LINREG_AOT=0) {jit['import+fit']:.3f} s, without scipy {no_scipy['import+fit']:.3f} s"
                    if jit else f"without scipy installed {no_scipy['import+fit']:.3f} s")
        add("cold start: import + first fit, warm cache", cold["warm"]["import+fit"], WARM_START_GOAL_S, "s",
            higher=False,
            note=f"whole process {cold['warm']['process']:.2f} s; numba imported: "
                 f"{cold['warm'].get('numba imported')} (AOT library of the fit's loop); {jit_note}; "
                 f"torch imported: {cold['warm']['torch imported']}")
        if "compile" in cold:
            add("cold start: import + first fit, empty kernel cache", cold["compile"]["import+fit"],
                COMPILE_START_GOAL_S, "s", higher=False,
                note=f"whole process {cold['compile']['process']:.2f} s; the fit's kernels compile")
        if "compile, defaults" in cold:
            c = cold["compile, defaults"]
            add("cold start: standardize=True, lr='auto' fit, empty kernel cache, whole process", c["process"],
                COMPILE_DEFAULTS_GOAL_S, "s", higher=False,
                note=f"import + fit {c['import+fit']:.2f} s; the engine's loop and the Gram pass compile")
        if "compile, linreg train" in cold:
            add("cold start: `linreg train` (both demo runs), empty kernel cache, whole process",
                cold["compile, linreg train"]["process"], COMPILE_TRAIN_GOAL_S, "s", higher=False)
    else:
        add("cold start: import + first fit, warm cache", None, WARM_START_GOAL_S, "s", higher=False)
    return rows


def write_report(out: Path, results: list[Result], bandwidth: dict[str, Any], info: dict[str, Any],
                 cold: dict[str, Any] | None, quick: bool) -> dict[str, Path]:
    """Write results.json, the PNG plots and report.md into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    roofline = bandwidth["GB/s"]
    goals = targets(results, roofline, cold)
    paths = {"json": out / "results.json", "md": out / "report.md"}
    payload = {"quick": quick, "device": info, "read bandwidth": bandwidth, "cold start": cold,
               "targets": goals, "results": [r.to_json() for r in results]}
    paths["json"].write_text(json.dumps(payload, indent=1, default=_json_default))
    paths.update(_plots(out, results, roofline))
    paths["md"].write_text(_markdown(results, bandwidth, info, cold, goals, quick, paths))
    return paths


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _plots(out: Path, results: list[Result], roofline: float) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    sweep = [r for r in results if r.case.workload == "W2" and r.status == "ok" and r.case.n_outputs == 1
             and r.case.dtype == "float32"]
    features = sorted({r.case.n_features for r in sweep})
    providers = [p for p in PROVIDERS if any(r.provider == p for r in sweep)]
    if features:
        for name, ylabel, value in (("time_per_epoch", "time per epoch (s)", lambda r: r.min_s),
                                    ("bandwidth", "achieved GB/s (bytes of X and Y / time)",
                                     lambda r: r.case.nbytes / r.min_s / 1e9)):
            figure, axes = plt.subplots(1, len(features), figsize=(4.2 * len(features), 3.8), squeeze=False)
            for ax, n_features in zip(axes[0], features, strict=True):
                for provider in providers:
                    rows = sorted((r for r in sweep if r.provider == provider and r.case.n_features == n_features),
                                  key=lambda r: r.case.n_samples)
                    if rows:
                        ax.plot([r.case.n_samples for r in rows], [value(r) for r in rows], "o-", label=provider)
                if name == "bandwidth":
                    ax.axhline(roofline, color="black", linestyle="--", label=f"read bandwidth {roofline:.1f} GB/s")
                ax.set(xscale="log", yscale="log", xlabel="n_samples", title=f"W2 epoch, {n_features} features, f32")
                ax.grid(True, which="both", alpha=0.3)
            axes[0][0].set_ylabel(ylabel)
            axes[0][-1].legend(fontsize=7)
            figure.tight_layout()
            paths[name] = out / f"{name}.png"
            figure.savefig(paths[name], dpi=110)
            plt.close(figure)
    paths.update(_width_plot(out, results, roofline, plt))
    # Speedup over the seeds' torch loop (W5: over scikit-learn), on the target cases when they ran.
    labels, series = [], {p: [] for p in PROVIDERS if p != "torch-seed"}
    shown = list(dict.fromkeys(r.case for r in results))
    if any(case in TARGET_CASES for case in shown):
        shown = [case for case in shown if case in TARGET_CASES]
    for case in shown:
        base = _find(results, case, "torch-seed")
        if case.workload == "W5":
            base = _find(results, case, "sklearn")
        if base is None:
            continue
        labels.append(case.label + (" (vs sklearn)" if base.provider == "sklearn" else ""))
        for provider in series:
            r = _find(results, case, provider)
            series[provider].append(base.min_s / r.min_s if r else math.nan)
    series = {p: v for p, v in series.items() if any(math.isfinite(x) for x in v)}
    if labels:
        figure, ax = plt.subplots(figsize=(8, 0.22 * len(labels) * max(1, len(series)) + 1.5))
        height = 0.8 / max(1, len(series))
        for k, (provider, values) in enumerate(series.items()):
            ax.barh([i + k * height for i in range(len(labels))], values, height=height, label=provider)
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))], labels, fontsize=7)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set(xscale="log", xlabel="speedup over the seeds' torch loop (W5: over scikit-learn)")
        ax.invert_yaxis()
        ax.legend(fontsize=7)
        ax.grid(True, axis="x", which="both", alpha=0.3)
        figure.tight_layout()
        paths["speedup"] = out / "speedup.png"
        figure.savefig(paths["speedup"], dpi=110)
        plt.close(figure)
    return paths


def _width_plot(out: Path, results: list[Result], roofline: float, plt) -> dict[str, Path]:
    """Fraction of the roofline against n_features, one panel per (dtype, n_outputs), one line per provider:
    at each width the case with the most rows (the one that streams from memory)."""
    streaming = [r for r in results if r.case.workload in STREAMING and r.status == "ok"]
    groups = sorted({(r.case.dtype, r.case.n_outputs) for r in streaming})
    if not groups:
        return {}
    figure, axes = plt.subplots(1, len(groups), figsize=(3.8 * len(groups), 3.6), squeeze=False)
    for ax, (dtype, n_outputs) in zip(axes[0], groups, strict=True):
        group = [r for r in streaming if (r.case.dtype, r.case.n_outputs) == (dtype, n_outputs)]
        largest = {}
        for r in group:
            n = largest.get(r.case.n_features, 0)
            largest[r.case.n_features] = max(n, r.case.n_samples)
        for provider in [p for p in PROVIDERS if any(r.provider == p for r in group)]:
            points = sorted((r.case.n_features, r.case.nbytes / r.min_s / 1e9 / roofline) for r in group
                            if r.provider == provider and r.case.n_samples == largest[r.case.n_features])
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=provider)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        ax.set(xscale="log", xlabel="n_features", title=f"{dtype}, {n_outputs} output{'s' if n_outputs > 1 else ''}")
        widths = sorted(largest)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(f"fraction of the read bandwidth ({roofline:.1f} GB/s)")
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    path = out / "roofline_by_width.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return {"roofline_by_width": path}


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def _fmt_target(row: dict[str, Any]) -> str:
    value = row["value"]
    if value is None:
        shown = "not measured"
    elif row["unit"] == "of roofline":
        shown = f"{value:.0%}"
    elif row["unit"] == "s":
        shown = f"{value:.3f} s"
    elif row["unit"] == "passes":
        shown = f"{value:.2f} passes"
    else:
        shown = f"{value:.1f}x"
    goal = f"{row['goal']:.0%}" if row["unit"] == "of roofline" else (
        f"< {row['goal']} s" if row["unit"] == "s" else
        f"< {row['goal']} passes" if row["unit"] == "passes" else f">= {row['goal']}x")
    verdict = {True: "met", False: "**missed**", None: "n/a"}[row["met"]]
    return f"| {row['target']} | {goal} | {shown} | {verdict} | {row['note']} |"


def _streaming_summary(results: list[Result], roofline: float) -> list[str]:
    """W2/W4, one row per case: linreg-cpu's time, GB/s, fraction of the roofline and its ratio to each peer
    (the peer's time over ours: above 1, linreg is faster), and to the best of them."""
    cases_run = list(dict.fromkeys(r.case for r in results if r.case.workload in STREAMING))
    rows = []
    for case in cases_run:
        ours = _find(results, case, "linreg-cpu")
        if ours is None:
            continue
        gbs = case.nbytes / ours.min_s / 1e9
        ratios = []
        for peer in EPOCH_PEERS:
            r = _find(results, case, peer)
            ratios.append(f"{r.min_s / ours.min_s:.2f}x" if r else "")
        best = _best_peer(results, case)
        ratio = best.min_s / ours.min_s if best else None
        shown = "" if ratio is None else (f"{ratio:.2f}x" if ratio >= 1 else f"**{ratio:.2f}x**")
        rows.append(f"| {case.label} | {_fmt_time(ours.min_s)} | {gbs:.1f} | {gbs / roofline:.0%} | "
                    + " | ".join(ratios) + f" | {shown} |")
    if not rows:
        return []
    return ["## W2/W4: linreg-cpu per case against the roofline and each peer", "",
            f"Ratios are the peer's best time over linreg's (above 1: linreg is faster); the roofline is the read "
            f"bandwidth above ({roofline:.1f} GB/s). Cache-resident sizes can exceed it.", "",
            "| case | linreg time / epoch | GB/s | of roofline | " + " | ".join(f"vs {p}" for p in EPOCH_PEERS)
            + " | vs best peer |", "|---|---|---|---|" + "---|" * len(EPOCH_PEERS) + "---|", *rows, ""]


def _markdown(results, bandwidth, info, cold, goals, quick, paths) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        "# linreg performance report",
        "",
        f"- Mode: {'quick (small sizes, targets not judged)' if quick else 'full (the issue sizes)'}",
        f"- CPU: {info['cpu']}, {info['cores']} cores; Numba {info['numba threads']} threads, "
        f"threading layer {info['threading layer']}" + (f"; torch {info['torch threads']} threads"
                                                         if "torch threads" in info else ""),
        f"- GPU: {info['gpu']}",
        f"- Versions: {versions}",
        f"- Read bandwidth (the roofline): **{bandwidth['GB/s']:.1f} GB/s** (Numba parallel sum over "
        f"{bandwidth['bytes'] / 2**20:.0f} MiB of float64, best of {bandwidth['rounds']}; median "
        f"{bandwidth['median GB/s']:.1f}; NumPy 1 thread {bandwidth['numpy 1-thread GB/s']:.1f})",
        "",
        "Times are the best round; every ratio compares providers timed in this run.",
        "",
        "## Targets",
        "",
        "| target | goal | measured | | note |",
        "|---|---|---|---|---|",
        *[_fmt_target(row) for row in goals],
    ]
    if cold:
        warm = cold["warm"]
        lines += ["", f"Cold start (seed 000's fit in a new process): import linreg {warm['import']:.3f} s, "
                      f"import + fit {warm['import+fit']:.3f} s, whole process {warm['process']:.2f} s with a warm "
                      f"kernel cache (median of {len(cold['warm runs'])} runs; numba imported: "
                      f"{warm.get('numba imported')})."]
        if "warm, JIT only" in cold:
            jit = cold["warm, JIT only"]
            lines[-1] += (f" JIT kernels only (LINREG_AOT=0, in turns with those runs): import + fit "
                          f"{jit['import+fit']:.3f} s, whole process {jit['process']:.2f} s.")
        if "compile" in cold:
            c = cold["compile"]
            lines[-1] += (f" With an empty cache (the fit's kernels compile): import + fit "
                          f"{c['import+fit']:.2f} s, whole process {c['process']:.2f} s.")
        if "compile, defaults" in cold:
            lines[-1] += (f" Each with its own empty cache, whole processes: a standardize=True, lr='auto' fit "
                          f"{cold['compile, defaults']['process']:.2f} s, `linreg train` "
                          f"{cold['compile, linreg train']['process']:.2f} s.")
    lines += ["", "## Results", ""]
    for workload in ("W1", "W2", "W3", "W4", "W5", "W6", "W7"):
        rows = [r for r in results if r.case.workload == workload]
        if not rows:
            continue
        lines += [f"### {workload}", "",
                  "| case | provider | time / unit | GB/s | of roofline | vs torch-seed | note |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            if r.status != "ok":
                lines.append(f"| {r.case.label} | {r.provider} | skipped | | | | {r.note} |")
                continue
            gbs = r.case.nbytes / r.min_s / 1e9
            streaming = workload in STREAMING
            base = _find(results, r.case, "torch-seed")
            speed = f"{base.min_s / r.min_s:.1f}x" if base else ""
            lines.append(f"| {r.case.label} | {r.provider} | {_fmt_time(r.min_s)} ({r.case.unit}) | "
                         f"{gbs:.1f} | {gbs / bandwidth['GB/s']:.0%} | {speed} | {r.note} |" if streaming else
                         f"| {r.case.label} | {r.provider} | {_fmt_time(r.min_s)} ({r.case.unit}) | | | {speed} | "
                         f"{r.note} |")
        lines.append("")
    lines += _streaming_summary(results, bandwidth["GB/s"])
    lines += ["## Plots", ""]
    for key, title in (("time_per_epoch", "Time per epoch vs n_samples"),
                       ("bandwidth", "Achieved GB/s against the read-bandwidth roofline"),
                       ("roofline_by_width", "Fraction of the roofline against the number of features"),
                       ("speedup", "Speedup over the seeds' torch loop")):
        if key in paths:
            lines += [f"![{title}]({paths[key].name})", ""]
    return "\n".join(lines) + "\n"


def run_report(out: Path | str, quick: bool = False, providers: tuple[str, ...] = PROVIDERS,
               cold: bool = True, budget_s: float | None = None, log: Callable[[str], None] = print,
               case_list: list[Case] | None = None) -> dict[str, Path]:
    """The whole report: device, roofline, sweep, cold start; writes into ``out`` and returns the file paths.

    ``case_list`` replaces the sweep of ``cases(quick)`` (tests use a few tiny cases).
    """
    out = Path(out)
    info = device_info()
    log(f"device: {info['cpu']}, {info['numba threads']} threads ({info['threading layer']}); GPU: {info['gpu']}")
    bandwidth = measure_read_bandwidth(64 << 20 if quick else 512 << 20, budget_s=0.25 if quick else 2.0)
    log(f"read bandwidth: {bandwidth['GB/s']:.1f} GB/s")
    if case_list is None:
        case_list = cases(quick) + gram_fit_cases(quick)
    # This process's own fits (W1's) start no background AOT build: it would wait for this process to exit
    # while holding the build lock that cold_start's first run (a new process, builds on) needs.
    background = os.environ.get("LINREG_AOT_BACKGROUND")
    os.environ["LINREG_AOT_BACKGROUND"] = "0"
    try:
        results = run_sweep(quick, providers, budget_s, log, case_list)
        cold_result = cold_start(compile_cost=not quick, repeats=1 if quick else 5) if cold else None
    finally:
        if background is None:
            os.environ.pop("LINREG_AOT_BACKGROUND", None)
        else:
            os.environ["LINREG_AOT_BACKGROUND"] = background
    info = device_info()  # torch's thread count is known once a torch provider ran
    paths = write_report(out, results, bandwidth, info, cold_result, quick)
    log(f"wrote {', '.join(str(p) for p in paths.values())}")
    return paths


# --------------------------------------------------------------------------- command line


def _handle(args: argparse.Namespace) -> int:
    if args.gpu:  # the GPU section (benchmarks/gpu.py): our CUDA kernels against torch CUDA on this device
        import gpu

        return gpu.main(args.out, args.quick)
    providers = tuple(args.providers.split(",")) if args.providers else PROVIDERS
    unknown = [p for p in providers if p not in PROVIDERS]
    if unknown:
        raise SystemExit(f"linreg report: unknown provider(s) {', '.join(unknown)}; choose from {', '.join(PROVIDERS)}")
    run_report(args.out, quick=args.quick, providers=providers, cold=not args.no_cold_start,
               case_list=TARGET_CASES if args.targets else None)
    return 0


def add_report_parser(commands) -> argparse.ArgumentParser:
    """Add ``linreg report`` to the CLI's sub-parsers (``commands`` from ``parser.add_subparsers``)."""
    report = commands.add_parser(
        "report", help="benchmark every provider here and write a performance report",
        description="Time linreg's kernels against torch, NumPy and scikit-learn on workloads W1-W5 (issue 5), "
                    "measure the read bandwidth and the cold start, and write report.md, results.json and PNG "
                    "plots into --out. Every figure is a ratio within this run.")
    report.add_argument("--quick", action="store_true", help="small sizes, well under a minute (CI)")
    report.add_argument("--out", default="linreg-report", help="output directory (default: linreg-report)")
    report.add_argument("--providers", help=f"comma-separated subset of {','.join(PROVIDERS)}")
    report.add_argument("--targets", action="store_true",
                        help="only the cases the issue's targets are judged on (W1, W2 2e6x32, W3, W4, W5)")
    report.add_argument("--no-cold-start", action="store_true", help="skip the new-process start-up measurements")
    report.add_argument("--gpu", action="store_true",
                        help="the GPU section only: every workload with a cuda provider against torch CUDA, and the "
                             "device's copy bandwidth (needs a GPU; writes gpu-report.md, gpu-results.json)")
    report.set_defaults(handler=_handle)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="linreg")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
