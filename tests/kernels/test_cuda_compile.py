"""The CUDA kernels on a machine without a GPU, in the main test process (real numba-cuda, no simulator).

* Every kernel of kernels.cuda, for float32 and float64 data, compiles to PTX
  for sm_80 and sm_90 and assembles without spills or local memory
  (kernels.report: NVVM plus ptxas or nvJitLink of a release that accepts its PTX).
* The float32 parameter update really is float32 arithmetic in the PTX.
* backend="cuda" without a GPU fails at construction, naming what is missing.
"""

import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from linreg import LinearRegressor, backends
from linreg.cuda_backend import CudaBackend, CudaUnavailableError
from linreg.kernels import report
from linreg.testing import assert_close

ARCHS = {f"sm_{major}{minor}": (major, minor) for major, minor in report.ARCHS}
DTYPES = {dtype.name: dtype for dtype in report.DTYPES}


@pytest.fixture(autouse=True, scope="module")
def real_numba_cuda():
    if numba.config.ENABLE_CUDASIM:
        pytest.fail("this module checks the real compiler: run it in a process without NUMBA_ENABLE_CUDASIM=1")


def kernel_names() -> list[str]:
    from linreg.kernels import cuda as cuda_kernels

    return [name for name, _, _ in cuda_kernels.kernel_signatures(np.dtype(np.float64))]


def row(name: str, dtype: str, arch: str) -> report.Row:
    rows = report.kernel_rows(DTYPES[dtype], ARCHS[arch])  # cached: each (dtype, arch) compiles once
    return next(r for r in rows if r.kernel == name)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", kernel_names())
def test_kernel_assembles_without_spills(name, dtype, arch):
    resources = row(name, dtype, arch)
    assert resources.module_spill_bytes == 0, f"{name} {dtype} {arch} spills: {resources}"
    # No local memory at all: in particular the register path's accumulators stay in registers.
    assert resources.resources.stack_frame == 0, f"{name} {dtype} {arch} uses local memory: {resources}"
    assert 0 < resources.resources.registers <= 255
    assert resources.resources.shared <= 48 * 1024  # the static shared-memory limit of a block


def test_the_spill_check_sees_spills():
    """The same report under a 32-register cap must show the register path spilling: the parser reads spills."""
    capped = report.kernel_rows(np.dtype(np.float64), report.ARCHS[0], max_registers=32)
    spilled = next(r for r in capped if r.kernel == "register_partials_8x4")
    assert spilled.module_spill_bytes > 0
    assert spilled.resources.registers <= 32


def test_float32_update_is_float32_arithmetic():
    """NVVM turns Python float constants into float64 math; the update W - dW * lr must stay in float32."""
    from linreg.kernels import cuda as cuda_kernels

    def finish_step_ptx(dtype):
        _, pyfunc, argtypes = next(entry for entry in cuda_kernels.kernel_signatures(np.dtype(dtype))
                                   if entry[0] == "finish_step")
        return report.compile_kernel(pyfunc, argtypes, (9, 0))

    ptx32 = finish_step_ptx(np.float32)
    assert ("sub.f32" in ptx32 and "mul.f32" in ptx32) or "fma.rn.f32" in ptx32
    assert "cvt.f64.f32" not in ptx32  # no float32 value is widened: parameters, gradients and lr stay float32
    ptx64 = finish_step_ptx(np.float64)
    assert "sub.f32" not in ptx64 and "mul.f32" not in ptx64


def test_assembler_accepts_nvvm_output():
    release, assembler = report.toolchain()
    assert assembler.release >= release, f"{assembler.describe()} cannot assemble PTX of CUDA {release}"


def test_nvjitlink_reports_like_ptxas():
    """nvJitLink (numba-cuda[cu13] always brings it) is the fallback assembler: it must read the same PTX."""
    from linreg.kernels import cuda as cuda_kernels

    release, _ = report.toolchain()
    linkers = [a for a in report.find_assemblers() if a.kind == "nvJitLink"]
    assert linkers, "nvJitLink not found: pip install 'numba-cuda[cu13]' brings nvidia-nvjitlink"
    assert linkers[0].release >= release
    _, pyfunc, argtypes = next(entry for entry in cuda_kernels.kernel_signatures(np.dtype(np.float32))
                               if entry[0] == "tiled_partials")
    ptx = report.compile_kernel(pyfunc, argtypes, (9, 0))
    resources = report.parse_resources(linkers[0].assemble(ptx, (9, 0)))
    entry = resources[report._entry_name(ptx)]
    assert entry.spill_bytes == 0 and entry.stack_frame == 0 and entry.registers > 0
    # Its log leaves out shared memory, so the table takes it from the PTX: the same as ptxas reports.
    assert report.ptx_shared_bytes(ptx) == row("tiled_partials", "float32", "sm_90").resources.shared > 0


def test_assembler_choice_never_takes_an_older_release():
    older = report.Assembler("ptxas", (13, 0), "/usr/local/cuda-13.0/bin/ptxas")
    same = report.Assembler("ptxas", (13, 5), "site-packages/nvidia/cu13/bin/ptxas")
    newer = report.Assembler("nvJitLink", (13, 6), "cuda.bindings.nvjitlink")
    newest = report.Assembler("ptxas", (14, 0), "/opt/cuda-14/bin/ptxas")
    assert report.choose_assembler((13, 5), [older, newest, same, newer]) == same
    assert report.choose_assembler((13, 5), [older, newest, newer]) == newer
    with pytest.raises(report.ToolchainError, match=r"cuda-toolkit\[nvcc\]==13\.5\.\*"):
        report.choose_assembler((13, 5), [older])
    assert report.ptx_release("//\n// Cuda compilation tools, release 13.5, V13.5.37\n.version 9.5") == (13, 5)


def test_resource_parser_reads_every_field():
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z6kernelPd' for 'sm_90'
ptxas info    : Function properties for _Z6kernelPd
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem
ptxas info    : Function properties for helper
    8 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
"""
    parsed = report.parse_resources(log)
    assert parsed["_Z6kernelPd"] == report.Resources(registers=40, spill_stores=8, spill_loads=4, stack_frame=16,
                                                     shared=2048)
    assert parsed["helper"].stack_frame == 8


def test_report_command_prints_the_table(capsys):
    assert report.main([]) == 0
    out = capsys.readouterr().out
    assert "registers" in out and "spill bytes" in out and "shared bytes" in out
    for name in kernel_names():
        assert out.count(f"{name} ") == len(DTYPES) * len(ARCHS)


# --------------------------------------------------------------------------- clear failure without a GPU


def test_cuda_backend_names_what_is_missing():
    from numba import cuda

    if cuda.is_available():  # a GPU machine: the backend must simply work
        assert CudaBackend().name == "cuda"
        return
    with pytest.raises(CudaUnavailableError, match="driver") as error:
        CudaBackend()
    assert "backend='cpu'" in str(error.value)


def test_estimator_with_cuda_backend(monkeypatch):
    """No GPU: fit fails at once with the clear error. A GPU: the fit equals the CPU fit."""
    from numba import cuda

    monkeypatch.setitem(backends.BACKENDS, "cuda", CudaBackend)
    X, y = np.arange(8.0).reshape(4, 2), np.arange(4.0)
    if cuda.is_available():
        fitted = LinearRegressor(backend="cuda", epochs=5, lr=1e-2).fit(X, y)
        expected = LinearRegressor(backend="cpu", epochs=5, lr=1e-2).fit(X, y)
        assert_close(fitted.loss_history_, expected.loss_history_, np.float64, "trajectory", "loss history")
        return
    with pytest.raises(CudaUnavailableError, match="backend='cpu'"):
        LinearRegressor(backend="cuda").fit(X, y)


def test_missing_toolkit_is_named(monkeypatch):
    from numba import cuda

    from linreg.kernels import cuda as cuda_kernels

    def no_nvvm():
        raise OSError("libnvvm.so.4: cannot open shared object file")

    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda_kernels, "_probe_nvvm", no_nvvm)
    with pytest.raises(CudaUnavailableError, match="toolkit.*NVVM.*libnvvm") as error:
        CudaBackend()
    assert "backend='cpu'" in str(error.value)


def test_missing_numba_cuda_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "linreg.kernels.cuda", None)  # what an absent numba-cuda looks like to the import
    with pytest.raises(CudaUnavailableError, match=r"numba-cuda.*pip install 'numba-linreg\[cuda\]'"):
        CudaBackend()


def test_importing_linreg_does_not_import_numba_cuda():
    code = "import sys, linreg, linreg.cuda_backend; assert 'numba.cuda' not in sys.modules, 'numba.cuda imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120,
                          env={key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"})
    assert done.returncode == 0, done.stderr


def test_missing_numba_cuda_package_is_a_clear_error(monkeypatch):
    """Without numba-cuda, numba's own deprecated numba.cuda still imports: the check must not rely on it."""
    import importlib.util

    from linreg import cuda_backend

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "numba_cuda" else real_find_spec(name, *args))
    with pytest.raises(cuda_backend.CudaUnavailableError, match="needs the numba-cuda package.*numba-linreg\\[cuda\\]"):
        cuda_backend.CudaBackend()


def test_cli_backend_cuda_without_a_gpu_exits_2_with_the_reason(capsys):
    from linreg import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--no-progress", "--backend", "cuda", "--epochs", "2"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "backend='cuda'" in err and "backend='cpu'" in err and "Traceback" not in err
