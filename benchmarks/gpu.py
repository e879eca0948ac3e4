"""The GPU section of the performance report: ``linreg report --gpu [--quick] [--out DIR]``.

On one GPU, for every workload that has a ``linreg-cuda`` provider (W1 the seed
fit, W2 full-batch epochs over a size sweep, W3 a mini-batch epoch, W4 a
multi-output epoch, W5 the exact solve), times in turns
(``harness.time_interleaved``, one process, same device):

* ``linreg-cuda``: our CUDA kernels (``harness.prepare``, data resident on the device);
* ``torch-cuda-seed``: the seeds' autograd loop on CUDA tensors;
* ``torch-cuda-sgd``: ``torch.nn.Linear`` + ``torch.optim.SGD`` on CUDA tensors (W5: ``torch.linalg.lstsq``);

and measures the device's copy bandwidth in the same run (``kernels.cuda_bandwidth``),
so each epoch's achieved GB/s (bytes of X and Y over the epoch time) is a
fraction of a roofline measured on this device, never a datasheet figure.
torch peers are skipped with the reason when torch has no CUDA here.

Writes ``gpu-report.md`` and ``gpu-results.json``; every figure names the
device that produced it. Refuses to run under the simulator or without a GPU
(``GpuUnavailable``): simulated times are never reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import numpy as np
from harness import Case, Unavailable

GPU_PROVIDERS = ("linreg-cuda", "torch-cuda-seed", "torch-cuda-sgd")
#: The peer each ratio is taken against (its time over ours: > 1 means we are faster).
PEERS = ("torch-cuda-seed", "torch-cuda-sgd")


class GpuUnavailable(RuntimeError):
    """No real GPU here (or the simulator is on); the message says which."""


def gpu_cases(quick: bool = False) -> list[Case]:
    """The workloads with a cuda provider. Quick: small sizes, for a first look in seconds."""
    if quick:
        return [harness.W1_CASE, Case("W2", 100_000, 32, 1, "float32"), Case("W2", 1_000_000, 32, 1, "float32"),
                Case("W2", 1_000_000, 32, 1, "float64"), Case("W3", 20_000, 32, 1, "float32"),
                Case("W4", 100_000, 64, 8, "float32"), Case("W5", 100_000, 32, 1, "float64")]
    # The target cases first (the report is written after every case: a timeout keeps what ran), then the sweep.
    # W3 on 200,000 rows (781 steps an epoch): the full size's 3,906 steps would take most of the time budget.
    first = [harness.W1_CASE, harness.W2_TARGET, Case("W3", 200_000, 32, 1, "float32"), harness.W4_CASE,
             harness.W5_CASE]
    sweep = [Case("W2", n, f, 1, "float32") for f in (5, 32, 128) for n in (100_000, 1_000_000, 4_000_000)]
    sweep += [Case("W2", 16_000_000, 32, 1, "float32")]
    sweep += [Case("W2", 1_000_000, 32, o, "float64") for o in (1, 8)]
    return first + sweep


def require_gpu() -> None:
    """GpuUnavailable unless numba sees a real GPU and the simulator is off."""
    try:
        harness._require_gpu()
    except Unavailable as reason:
        raise GpuUnavailable(f"the GPU report needs a CUDA GPU: {reason}") from None


def _version(pair: tuple) -> str:
    return ".".join(str(part) for part in pair)


def device_info() -> dict[str, Any]:
    """The GPU as numba sees it (name, compute capability, SMs, memory, driver and runtime CUDA versions),
    plus the host's ``harness.device_info``."""
    from numba import cuda

    info = harness.device_info()
    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
    gpu: dict[str, Any] = {"name": name, "compute capability": _version(device.compute_capability),
                           "multiprocessors": device.MULTIPROCESSOR_COUNT}
    probes: dict[str, Callable[[], Any]] = {
        "memory bytes": lambda: cuda.current_context().get_memory_info()[1],
        "driver CUDA version": lambda: _version(cuda.cudadrv.driver.driver.get_version()),
        "runtime CUDA version": lambda: _version(cuda.runtime.get_version()),
        "NVVM version": lambda: _version(cuda.cudadrv.nvvm.NVVM().get_version()),
    }
    for key, probe in probes.items():
        try:
            gpu[key] = probe()
        except Exception as error:  # a version the bindings cannot tell is recorded, not fatal
            gpu[key] = f"unknown ({type(error).__name__}: {error})"
    info["gpu"] = name
    info["gpu details"] = gpu
    return info


# --------------------------------------------------------------------------- torch on the device


def _torch_cuda():
    try:
        import torch
    except ImportError:
        raise Unavailable("torch is not installed") from None
    if not torch.cuda.is_available():
        raise Unavailable(f"torch {torch.__version__} has no CUDA here (a CPU build, or no driver it can use)")
    return torch


def _torch_provider(provider: str, case: Case, X: np.ndarray, Y: np.ndarray) -> tuple[Callable, str]:
    torch = _torch_cuda()
    device = torch.device("cuda")
    x, t = torch.from_numpy(X).to(device), torch.from_numpy(Y).to(device)
    n_outputs, n_features = Y.shape[1], X.shape[1]
    if case.workload == "W5":
        if provider != "torch-cuda-sgd":
            raise Unavailable("W5 (exact least squares) is compared with torch.linalg.lstsq on the device only")

        def solve():
            A = torch.cat([x, torch.ones((x.shape[0], 1), dtype=x.dtype, device=device)], dim=1)
            solution = torch.linalg.lstsq(A, t).solution
            torch.cuda.synchronize()
            return solution

        return solve, "torch.linalg.lstsq on [X 1] on CUDA tensors (data already on the device)"
    if case.workload == "W3":
        generator = torch.Generator(device=device).manual_seed(0)
        batch = case.batch
        if provider == "torch-cuda-seed":
            raise Unavailable("W3 on the device is compared with torch nn.Linear + optim.SGD (torch-cuda-sgd)")
        linear = torch.nn.Linear(n_features, n_outputs, dtype=x.dtype, device=device)
        opt = torch.optim.SGD(linear.parameters(), lr=harness.EPOCH_LR)
        loss_fn = torch.nn.MSELoss()

        def minibatch_epoch():
            order = torch.randperm(x.shape[0], generator=generator, device=device)
            for start in range(0, x.shape[0], batch):
                rows = order[start:start + batch]
                opt.zero_grad()
                loss_fn(linear(x[rows]), t[rows]).backward()
                opt.step()
            torch.cuda.synchronize()

        return minibatch_epoch, f"nn.Linear + optim.SGD over shuffled batches of {batch} on CUDA tensors"
    if case.workload == "W1":
        from linreg.datasets import SEED_000_SETTINGS

        epochs, lr = SEED_000_SETTINGS["epochs"], SEED_000_SETTINGS["lr"]
        init = torch.ones
    else:
        epochs, lr = 1, harness.EPOCH_LR
        init = torch.zeros
    if provider == "torch-cuda-seed":
        from linreg.oracle import mse

        def run():
            w = init((n_outputs, n_features), dtype=x.dtype, device=device, requires_grad=True)
            b = init(n_outputs, dtype=x.dtype, device=device, requires_grad=True)
            for _ in range(epochs):
                loss = mse(x @ w.t() + b, t)
                loss.item()  # the seeds print every epoch's loss: one sync per epoch
                loss.backward()
                with torch.no_grad():
                    w.sub_(w.grad * lr)
                    b.sub_(b.grad * lr)
                    w.grad.zero_()
                    b.grad.zero_()
            torch.cuda.synchronize()

        return run, f"the seeds' autograd loop on CUDA tensors, {epochs} epoch(s), loss.item() each epoch"
    linear = torch.nn.Linear(n_features, n_outputs, dtype=x.dtype, device=device)
    opt = torch.optim.SGD(linear.parameters(), lr=lr)
    loss_fn = torch.nn.MSELoss()

    def run():
        for _ in range(epochs):
            opt.zero_grad()
            loss_fn(linear(x), t).backward()
            opt.step()
        torch.cuda.synchronize()

    return run, f"nn.Linear + optim.SGD on CUDA tensors, {epochs} step(s), no per-step sync"


def prepare(provider: str, case: Case, data: tuple[np.ndarray, np.ndarray]) -> tuple[Callable, str]:
    """``(run_once, note)`` for a GPU provider, warmed up once; Unavailable with the reason otherwise."""
    X, Y = data
    if provider == "linreg-cuda":
        return harness.prepare(provider, case, data)
    fn, note = _torch_provider(provider, case, X, Y)
    fn()
    return fn, note


# --------------------------------------------------------------------------- the report


def run_gpu_report(out: Path | str, quick: bool = False, providers: tuple[str, ...] = GPU_PROVIDERS,
                   budget_s: float | None = None, log: Callable[[str], None] = print,
                   case_list: list[Case] | None = None) -> dict[str, Path]:
    """Time the GPU providers on ``gpu_cases(quick)``; write gpu-report.md and gpu-results.json into ``out``."""
    require_gpu()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = device_info()
    log(f"GPU: {info['gpu details']}")
    from linreg.kernels import cuda_bandwidth

    bandwidth = cuda_bandwidth.device_bandwidth(256 << 20 if quick else 1 << 30, rounds=10 if quick else 30)
    log(f"device copy bandwidth: {bandwidth['GB/s']:.0f} GB/s")
    budget = budget_s if budget_s is not None else (0.1 if quick else 0.5)
    results: list[harness.Result] = []
    for case in case_list if case_list is not None else gpu_cases(quick):
        data = harness.make_problem(case)
        ready, notes = {}, {}
        for provider in providers:
            try:
                ready[provider], notes[provider] = prepare(provider, case, data)
            except Unavailable as reason:
                results.append(harness.Result(case, provider, "skipped", str(reason)))
            except Exception as error:  # a provider that crashes is a finding, not the end of the report
                results.append(harness.Result(case, provider, "failed", f"{type(error).__name__}: {error}"))
        timed = harness.time_interleaved(ready, budget, min_rounds=3, pause_s=0.01) if ready else {}
        for provider, t in timed.items():
            results.append(harness.Result(case, provider, "ok", notes[provider], t["min"], t["median"], t["rounds"],
                                          t["times"]))
            log(f"{case.label:34s} {provider:16s} {t['min'] * 1e3:10.3f} ms  ({t['rounds']} rounds)")
        ready.clear()
        paths = _write(out, results, bandwidth, info, quick, started)  # after every case: a timeout keeps these
    paths = _write(out, results, bandwidth, info, quick, started)
    log(f"wrote {', '.join(str(p) for p in paths.values())}")
    return paths


def _write(out: Path, results: list[harness.Result], bandwidth: dict[str, Any], info: dict[str, Any], quick: bool,
           started: float) -> dict[str, Path]:
    info["seconds"] = time.perf_counter() - started
    paths = {"json": out / "gpu-results.json", "md": out / "gpu-report.md"}
    payload = {"quick": quick, "device": info, "device copy bandwidth": bandwidth,
               "results": [r.to_json() for r in results], "ratios": ratios(results)}
    paths["json"].write_text(json.dumps(payload, indent=1, default=harness._json_default))
    paths["md"].write_text(markdown(results, bandwidth, info, quick))
    return paths


def ratios(results: list[harness.Result]) -> list[dict[str, Any]]:
    """For every case: each peer's time over linreg-cuda's (> 1: ours is faster), where both ran."""
    rows = []
    for case in dict.fromkeys(r.case for r in results):
        ours = harness._find(results, case, "linreg-cuda")
        for peer in PEERS:
            theirs = harness._find(results, case, peer)
            if ours and theirs:
                rows.append({"case": case.label, "peer": peer, "speedup": theirs.min_s / ours.min_s})
    return rows


def markdown(results: list[harness.Result], bandwidth: dict[str, Any], info: dict[str, Any], quick: bool) -> str:
    gpu = info["gpu details"]
    roofline = bandwidth["GB/s"]
    lines = [
        "# linreg GPU report",
        "",
        f"- Device: **{gpu['name']}** (compute capability {gpu['compute capability']}, "
        f"{gpu['multiprocessors']} SMs, memory {gpu['memory bytes']} bytes)",
        f"- CUDA: driver {gpu['driver CUDA version']}, runtime {gpu['runtime CUDA version']}, "
        f"NVVM {gpu['NVVM version']}",
        f"- Host: {info['cpu']}; versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- Mode: {'quick (small sizes)' if quick else 'full'}; report took {info['seconds']:.0f} s",
        f"- Device copy bandwidth (the roofline): **{roofline:.0f} GB/s** (read + write of "
        f"{bandwidth['buffer bytes'] / 2**20:.0f} MiB float32 buffers, best of {bandwidth['rounds']}; median "
        f"{bandwidth['median GB/s']:.0f})",
        "",
        "Every figure below was measured on this device in this run; times are the best round. "
        "GB/s is the bytes of X and Y over the time of one epoch (W2, W4).",
        "",
        "| case | provider | time / unit | GB/s | of copy bandwidth | peer time / ours | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.status != "ok":
            lines.append(f"| {r.case.label} | {r.provider} | {r.status} | | | | {r.note} |")
            continue
        streaming = r.case.workload in harness.STREAMING
        gbs = r.case.nbytes / r.min_s / 1e9
        ours = harness._find(results, r.case, "linreg-cuda")
        speed = f"{r.min_s / ours.min_s:.2f}" if ours and r.provider != "linreg-cuda" else ""
        lines.append(f"| {r.case.label} | {r.provider} | {harness._fmt_time(r.min_s)} ({r.case.unit}) | "
                     + (f"{gbs:.0f} | {gbs / roofline:.0%}" if streaming else " | ")
                     + f" | {speed} | {r.note} |")
    skipped = [r for r in results if r.status != "ok"]
    if skipped:
        lines += ["", f"{len(skipped)} provider/case pairs did not run; each row above says why."]
    return "\n".join(lines) + "\n"


def main(out: str, quick: bool) -> int:
    """``linreg report --gpu``: exit 0 if every linreg-cuda case ran, 1 if one failed, 2 without a GPU."""
    try:
        run_gpu_report(out, quick=quick)
    except GpuUnavailable as error:
        print(f"linreg report --gpu: {error}", flush=True)
        return 2
    data = json.loads((Path(out) / "gpu-results.json").read_text())
    ours = [r for r in data["results"] if r["provider"] == "linreg-cuda"]
    bad = [r for r in ours if r["status"] != "ok"]
    for r in bad:
        print(f"linreg-cuda {r['case']['label']}: {r['status']}: {r['note']}", flush=True)
    return 1 if bad or not ours else 0


if __name__ == "__main__":  # python benchmarks/gpu.py OUT [--quick]
    import sys

    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "linreg-gpu-report", "--quick" in sys.argv))
