"""Data-parallel training on torch.distributed (gloo on CPU, NCCL on GPUs), launched with torchrun.

Each rank streams only its shard of the rows (a contiguous row range of shared
``.npy`` files, read in chunks as ``linreg.outofcore`` does) through our
kernels, and gets the flat float64 gradient *sums* of its shard:
``[sum s r^2, sum s, sum s r x (n_outputs * n_features), sum s r (n_outputs)]``.
One ``all_reduce`` per optimiser step adds them over the ranks, so it moves
``n_outputs * (n_features + 1) + 2`` numbers, whatever the number of rows; then
every rank applies the same ``Stepper`` step to the same sums, so the parameters
stay identical on every rank (checked bit for bit at the end of each fit).

* Full-batch GD: one all-reduce per epoch. Same result as one process up to the
  order in which the shards' sums are added (~1e-16 relative per step).
* ``solver="normal"`` / ``"gram"``, ``lr="auto"``: the Gram statistics
  ``[X 1]^T S [X 1]``, ``[X 1]^T S Y``, ``diag(Y^T S Y)`` are all-reduced once;
  ``standardize``: the column sums, then the centred sums of squares.
* Mini-batch SGD: ``batch_size`` is the *global* batch: rank r takes
  ``batch_size // world + (r < batch_size % world)`` rows of its shard per step,
  in its own out-of-core shuffle order (seeded by ``(random_state, rank, chunk)``
  and the epoch; see ``linreg.outofcore``); a global batch is the union of the
  ranks' local batches of that step. Every rank takes as many steps per epoch as
  the rank with the most local batches; a rank whose shard is used up adds
  nothing (so with uneven shards the last global batches are smaller). Every
  row is visited once per epoch.
* ``tol`` and schedules act on the global loss, so all ranks stop together.

Failures do not hang: ``init`` sets the process group's timeout (default
``DEFAULT_TIMEOUT_S``), which bounds both the rendezvous (a rank that never
starts) and every collective (a rank that hangs); a rank that dies closes its
connections and the others fail at once. Either way each surviving rank raises
``DistributedError`` saying which collective failed, after destroying the
(now broken) process group so that the process can exit cleanly. The timeout must exceed
the longest time one rank can wait for another: with full-batch GD, one pass
over the largest shard.

From Python (every rank runs the same code)::

    from linreg import LinearRegressor, distributed
    distributed.init()                       # under torchrun: reads RANK, WORLD_SIZE, MASTER_ADDR/PORT
    model = distributed.fit(LinearRegressor(lr="auto", epochs=50), "X.npy", "y.npy")
    if distributed.rank() == 0:
        model.save("model.npz")

torch is imported only inside these functions: ``import linreg`` stays torch-free.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from linreg import outofcore

#: Default timeout of the rendezvous and of every collective, in seconds.
DEFAULT_TIMEOUT_S = 600.0
BACKENDS = ("gloo", "nccl")

_timeout_s: float | None = None  # the timeout ``init`` gave the process group (None: the user's own group)


class DistributedError(RuntimeError):
    """The process group could not form, or a collective failed (a rank died, hung or timed out)."""


def configure_threads() -> int:
    """Numba threads per rank: this process's CPUs divided by the ranks on this machine; torch gets one.

    torchrun sets ``LOCAL_WORLD_SIZE``; an explicit ``NUMBA_NUM_THREADS`` wins. Both
    libraries bring an OpenMP pool: without this, N ranks of N threads each would
    oversubscribe the cores. Results do not depend on the thread count.
    """
    import numba
    import torch

    if "NUMBA_NUM_THREADS" not in os.environ:
        local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, cpus // local_ranks)))
    torch.set_num_threads(1)  # torch only carries the small sums vectors
    return numba.get_num_threads()


def init(backend: str = "gloo", timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

    ``timeout`` (seconds) bounds the rendezvous and every later collective. Does
    nothing if a process group already exists (then its own timeout applies). The
    group made here is destroyed when the interpreter exits.
    """
    import torch.distributed as dist

    global _timeout_s
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if dist.is_initialized():
        return
    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise DistributedError(f"no process group to join: {', '.join(missing)} not set. Launch with torchrun "
                               "(e.g. torchrun --nproc-per-node 2 -m linreg train ... --distributed), or set them")
    configure_threads()
    if backend == "nccl":  # one GPU per rank (LOCAL_RANK % n_devices); backend="cuda" fits use the same one
        import torch

        from linreg.cuda_stream import device_for_rank

        torch.cuda.set_device(device_for_rank(torch.cuda.device_count()))
    started = time.perf_counter()
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as error:  # DistStoreError (a RuntimeError) when ranks are missing
        raise DistributedError(
            f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}: the process group did not form within "
            f"{time.perf_counter() - started:.1f} s (timeout {timeout:g} s) at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: did every rank start, with the same "
            f"WORLD_SIZE and address? ({error})") from None
    _timeout_s = float(timeout)
    # A process that exits with a live gloo group can abort in gloo's teardown ("terminate called without an
    # active exception", seen here in about half the runs): destroy the group we made before the interpreter ends.
    atexit.register(_destroy_group)


def _destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank in the default group (0 without one)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


class TorchCollective:
    """``outofcore.Collective`` over a torch.distributed process group; counts its collectives."""

    def __init__(self, group: Any = None) -> None:
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise DistributedError("torch.distributed is not initialised: call linreg.distributed.init() (under "
                                   "torchrun) or torch.distributed.init_process_group() first")
        self._torch, self._dist, self.group = torch, dist, group
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.root = dist.get_global_rank(group, 0) if group is not None else 0
        self.device = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl"
                       else torch.device("cpu"))
        self.calls = 0
        self.seconds = 0.0
        self.last_size = 0

    def _run(self, operation: str, what: str, call) -> None:
        started = time.perf_counter()
        try:
            call()
        except RuntimeError as error:  # gloo/NCCL errors (DistBackendError) are RuntimeErrors
            timeout = f"{_timeout_s:g} s" if _timeout_s is not None else "the process group's timeout"
            # The group is broken now. Left alive, gloo's threads could abort the process at exit ("terminate
            # called without an active exception", seen in half the runs here): tear it down.
            self._dist.destroy_process_group(self.group)
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: {operation} of {what} failed after "
                f"{time.perf_counter() - started:.1f} s: another rank died, hung or timed out (timeout {timeout}); "
                f"see that rank's output. ({str(error).strip()})") from None
        self.calls += 1
        self.seconds += time.perf_counter() - started

    def _tensor(self, values: np.ndarray):
        return self._torch.from_numpy(np.array(values, copy=True)).to(self.device)

    def sum(self, values: np.ndarray, what: str) -> np.ndarray:
        tensor = self._tensor(np.asarray(values, np.float64))
        self._run("all_reduce (sum)", what, lambda: self._dist.all_reduce(tensor, group=self.group))
        self.last_size = tensor.numel()
        return tensor.cpu().numpy()

    def broadcast(self, values: np.ndarray, what: str) -> np.ndarray:
        tensor = self._tensor(values)
        self._run("broadcast", what, lambda: self._dist.broadcast(tensor, src=self.root, group=self.group))
        return tensor.cpu().numpy()

    def check_same(self, values: np.ndarray, what: str) -> None:
        largest, smallest = self._tensor(np.asarray(values, np.int64)), self._tensor(np.asarray(values, np.int64))
        ReduceOp = self._dist.ReduceOp
        self._run("all_reduce (max)", what, lambda: self._dist.all_reduce(largest, ReduceOp.MAX, group=self.group))
        self._run("all_reduce (min)", what, lambda: self._dist.all_reduce(smallest, ReduceOp.MIN, group=self.group))
        if not self._torch.equal(largest, smallest):
            raise DistributedError(f"the ranks disagree on {what}: rank {self.rank} has {np.asarray(values).tolist()}"
                                   f"; over the ranks they range from {smallest.cpu().tolist()} to "
                                   f"{largest.cpu().tolist()}")


def fit(estimator, X: Any, y: Any, sample_weight: Any = None, *, chunk_bytes: int | None = None,
        shards: Sequence[tuple[int, int]] | None = None, group: Any = None):
    """Train ``estimator`` data-parallel: call on every rank of an initialised process group; returns it.

    ``X``, ``y``, ``sample_weight``: ``.npy`` paths (or memmaps / arrays) that every
    rank can read; each rank reads only its rows. ``shards``: one ``(lo, hi)`` row
    range per rank, tiling the rows in rank order (default: as even as possible).
    Every rank ends with the same fitted attributes.
    """
    train(estimator, X, y, sample_weight, chunk_bytes=chunk_bytes, shards=shards, group=group)
    return estimator


def train(estimator, X: Any, y: Any, sample_weight: Any = None, *, chunk_bytes: int | None = None,
          shards: Sequence[tuple[int, int]] | None = None, group: Any = None) -> tuple[outofcore.Report, dict]:
    """``fit``, returning the streaming report and the collectives' statistics (for logs)."""
    team = TorchCollective(group)
    report = outofcore.train(estimator, X, y, sample_weight, chunk_bytes=chunk_bytes, team=team, shards=shards)
    return report, {"calls": team.calls, "seconds": team.seconds, "floats_per_step": team.last_size,
                    "backend": team._dist.get_backend(group), "timeout_s": _timeout_s}


def inference(estimator, X: Any, y: Any, sample_weight: Any = None, *, cov_type: str = "nonrobust",
              alpha: float = 0.05, chunk_bytes: int | None = None, shards: Sequence[tuple[int, int]] | None = None,
              group: Any = None):
    """``estimator.inference`` data-parallel: call on every rank; each streams its shard, the statistics are summed.

    Every rank gets the same ``linreg.inference.InferenceResult``. ``X``, ``y``,
    ``sample_weight`` as in ``fit`` (the data the model was fitted on).
    """
    from linreg import inference as inference_module

    return inference_module.compute(estimator, X, y, sample_weight, cov_type=cov_type, alpha=alpha,
                                    team=TorchCollective(group), shards=shards, chunk_bytes=chunk_bytes)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``python -m linreg.distributed``: the streaming flags of ``linreg train`` (the code is in ``linreg.cli``)."""
    from linreg.cli import streaming_main

    return streaming_main(argv)


if __name__ == "__main__":
    sys.exit(main())
