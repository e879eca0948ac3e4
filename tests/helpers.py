"""Reference computations shared by the tests: NumPy in float64, written once; and multi-process launch helpers."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

LAUNCH_TIMEOUT = 120  # seconds for any launch to finish (imports included): a hang fails the test, never the CI


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_env(rank: int, world_size: int, port: int) -> dict:
    """The environment of one torch.distributed rank on localhost (one thread each: 2 cores)."""
    return {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def reference_loss_grad(X, Y, W, b):
    """Loss, dW, db of DESIGN.md section 1 in float64 NumPy."""
    X, Y, W, b = (np.asarray(a, dtype=np.float64) for a in (X, Y, W, b))
    R = X @ W.T + b - Y
    n_elements = R.size
    return (R * R).sum() / n_elements, 2.0 / n_elements * R.T @ X, 2.0 / n_elements * R.sum(axis=0)


def random_problem(n_samples, n_features, n_outputs, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)).astype(dtype)
    Y = rng.standard_normal((n_samples, n_outputs)).astype(dtype)
    W = rng.standard_normal((n_outputs, n_features)).astype(dtype)
    b = rng.standard_normal(n_outputs).astype(dtype)
    return X, Y, W, b


def torch_reference_fit(X, Y, W0, b0, *, epochs, make_optimizer, batches=None, weights=None,
                        penalty=None, make_scheduler=None):
    """Train with torch autograd and a torch.optim optimiser: the reference trajectories.

    ``batches(epoch)`` gives the list of row-index arrays of each epoch (default: one
    full batch). The loss of a batch is the weighted mean of squared residuals over
    its samples and outputs, plus ``penalty(w)``. Weight decay belongs to the weights'
    parameter group only (the bias is never penalised). Returns (W, b, epoch_losses):
    each epoch's loss is the weight-weighted mean of its batch losses.
    """
    import torch

    x = torch.tensor(np.asarray(X, np.float64))
    y = torch.tensor(np.asarray(Y, np.float64))
    s = torch.ones(len(x), dtype=torch.float64) if weights is None else torch.tensor(np.asarray(weights, np.float64))
    w = torch.tensor(np.asarray(W0, np.float64), requires_grad=True)
    b = torch.tensor(np.asarray(b0, np.float64), requires_grad=True)
    optimizer = make_optimizer(w, b)
    scheduler = make_scheduler(optimizer) if make_scheduler else None
    history = []
    for epoch in range(epochs):
        total = weight = 0.0
        for rows in (batches(epoch) if batches else [np.arange(len(x))]):
            rows = torch.as_tensor(np.asarray(rows, np.int64))
            diff = x[rows] @ w.t() + b - y[rows]
            batch_weight = s[rows].sum()
            loss = (s[rows][:, None] * diff * diff).sum() / (batch_weight * diff.shape[1])
            if penalty is not None:
                loss = loss + penalty(w)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * batch_weight.item()
            weight += batch_weight.item()
        history.append(total / weight)
        if scheduler is not None:
            scheduler.step()
    return w.detach().numpy(), b.detach().numpy(), np.array(history)


def minibatches(order_of_epoch, batch_size):
    """Batches of the given per-epoch order, the last one partial (torch DataLoader, drop_last=False)."""
    def batches(epoch):
        order = order_of_epoch(epoch)
        return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    return batches


def run_ranks(worker: str, config: str, world_size: int = 2) -> list:
    """Run ``python worker config`` as ``world_size`` torch.distributed ranks on localhost; each rank's last
    stdout line parsed as JSON (a failing rank fails the test with its stderr; a hang, after LAUNCH_TIMEOUT)."""
    port = free_port()
    processes = [subprocess.Popen([sys.executable, str(worker), str(config)], env=worker_env(rank, world_size, port),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for rank in range(world_size)]
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=LAUNCH_TIMEOUT)
            assert process.returncode == 0, stderr
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        kill_leftovers(processes)
    return outputs


def kill_leftovers(processes) -> None:
    """Kill and reap the launched ranks still running (a failed or timed-out test leaves no process behind)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def assert_same_fit(streamed, in_memory, rtol=1e-12):
    """A streamed fit lands where the in-memory fit on the same numbers lands."""
    assert streamed.n_iter_ == in_memory.n_iter_
    assert streamed.stop_reason_ == in_memory.stop_reason_
    np.testing.assert_allclose(streamed.loss_history_, in_memory.loss_history_, rtol=rtol)
    for name in ("coef_", "intercept_"):
        actual, expected = getattr(streamed, name), getattr(in_memory, name)
        assert np.shape(actual) == np.shape(expected) and np.asarray(actual).dtype == np.asarray(expected).dtype
        # Norm-wise: single entries may be near zero by cancellation.
        assert np.abs(actual - expected).max() <= rtol * np.abs(expected).max(), name


#: Full-batch option sets every streamed source is checked with against the in-memory fit.
GD_OPTIONS = [
    pytest.param({"epochs": 40, "lr": 0.01}, id="plain"),
    pytest.param({"epochs": 40, "lr": 0.01, "momentum": 0.9, "nesterov": True}, id="nesterov"),
    pytest.param({"epochs": 40, "lr": "auto", "standardize": True}, id="standardize-auto"),
    pytest.param({"epochs": 30, "lr": 0.05, "optimizer": "adamw", "penalty": "elasticnet", "alpha": 0.01},
                 id="adamw-elasticnet"),
    pytest.param({"epochs": 30, "lr": 0.01, "schedule": "cosine", "penalty": "l2", "alpha": 0.1}, id="cosine-l2"),
    pytest.param({"epochs": 300, "lr": 0.01, "tol": 1e-3}, id="tol"),
    pytest.param({"epochs": 300, "lr": 0.02, "tol": 1e-3, "schedule": "adaptive"}, id="adaptive"),
]
