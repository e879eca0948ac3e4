"""The NCCL step of scripts/gpu-check.sh: backend="cuda" data-parallel fits over NCCL, one GPU per rank.

``python scripts/nccl_check.py --ranks N --out result.json`` writes small ``.npy`` files, starts N ranks with
torchrun (``torch.distributed.run --standalone``); every rank joins an NCCL process group
(``linreg.distributed.init("nccl")``: rank r on GPU ``LOCAL_RANK % n_devices``) and runs each fit twice over
the same collective: on backend="cuda" (the gradient sums all-reduced on the device through a torch view of
the numba buffer, ``linreg.cuda_stream.DeviceTeam``) and on backend="cpu" (host sums, all-reduced through a
CUDA tensor copy). Rank 0 writes both results; this script compares them (same stop reason and epoch count,
parameters and histories within 1e-6 relative, as the simulator suite).

Exit status: 0 equal, 1 different or a rank failed, 77 skipped (torch without CUDA or NCCL, or fewer GPUs
than ranks: the reason is printed). ``--dist-backend gloo --rows 300 --epochs 2`` runs the same plumbing without a GPU
(under the CUDA simulator: tests/cuda/test_stream.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

SKIPPED = 77
RTOL = 1e-6
#: (name, options): full batch, mini-batches (local batches per rank), the statistics pass.
FITS = [
    ("gd-momentum", dict(lr=0.05, epochs=20, momentum=0.9)),
    ("sgd-adam", dict(lr=0.01, epochs=3, batch_size=256, optimizer="adam", random_state=3)),
    ("auto-standardize", dict(lr="auto", epochs=20, standardize=True)),
]
CHUNK_BYTES = 1 << 16  # ~1300 rows of 10 features and 2 outputs: several chunks per rank


def skip_reason(ranks: int) -> str | None:
    try:
        import torch
        import torch.distributed as dist
    except ImportError as error:
        return f"torch is not importable ({error})"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA (a CPU build, or no driver)"
    if not (dist.is_available() and dist.is_nccl_available()):
        return f"torch {torch.__version__} has no NCCL"
    if torch.cuda.device_count() < ranks:
        return f"{ranks} ranks need {ranks} GPUs, torch sees {torch.cuda.device_count()}"
    return None


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-300))


def worker(folder: Path, out: Path, dist_backend: str, epochs: int | None) -> int:
    from linreg import LinearRegressor, distributed

    distributed.init(dist_backend, timeout=120)
    results = {}
    for name, options in FITS:
        options = options | ({"epochs": epochs} if epochs else {})
        for backend in ("cuda", "cpu"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = distributed.fit(LinearRegressor(backend=backend, **options), folder / "X.npy",
                                        folder / "Y.npy", chunk_bytes=CHUNK_BYTES)
            results[f"{name}/{backend}"] = {"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist(),
                                            "history": model.loss_history_.tolist(), "stop": model.stop_reason_}
    if distributed.rank() == 0:
        import torch

        results["device"] = torch.cuda.get_device_name() if dist_backend == "nccl" else "the CUDA simulator"
        out.write_text(json.dumps(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dist-backend", choices=("nccl", "gloo"), default="nccl")
    parser.add_argument("--rows", type=int, default=20_011)
    parser.add_argument("--epochs", type=int, help="every fit's epochs (default: each fit's own)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # the data folder, for the ranks
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker, args.out, args.dist_backend, args.epochs)
    reason = skip_reason(args.ranks) if args.dist_backend == "nccl" else None
    if reason is not None:
        print(f"nccl check: skipped: {reason}")
        return SKIPPED
    from linreg import outofcore

    with tempfile.TemporaryDirectory() as folder:
        outofcore.write_synthetic(Path(folder) / "X.npy", Path(folder) / "Y.npy", args.rows, 10, n_outputs=2)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.ranks}",
                   str(Path(__file__).resolve()), "--worker", folder, "--out", str(args.out),
                   "--dist-backend", args.dist_backend] + (["--epochs", str(args.epochs)] if args.epochs else [])
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
        if args.dist_backend == "nccl":
            environment.pop("NUMBA_ENABLE_CUDASIM", None)  # the real GPU (simulator and GPU cannot mix)
        launched = subprocess.run(command, env=environment, timeout=600)
    if launched.returncode != 0 or not args.out.exists():
        print(f"nccl check: FAILED: torchrun with {args.ranks} ranks exited with {launched.returncode}")
        return 1
    results = json.loads(args.out.read_text())
    failures = 0
    for name, _ in FITS:
        gpu, cpu = results[f"{name}/cuda"], results[f"{name}/cpu"]
        errors = {key: relative_error(gpu[key], cpu[key]) for key in ("history", "coef", "intercept")}
        same = gpu["stop"] == cpu["stop"] and len(gpu["history"]) == len(cpu["history"])
        ok = same and max(errors.values()) <= RTOL
        failures += not ok
        print(f"nccl check: {args.ranks} rank(s) on {results['device']}: {name}: {'ok' if ok else 'DIFFERENT'} "
              f"(stop {gpu['stop']}/{cpu['stop']}, epochs {len(gpu['history'])}/{len(cpu['history'])}, relative "
              + ", ".join(f"{key} {value:.2g}" for key, value in errors.items()) + f"; limit {RTOL:g})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
