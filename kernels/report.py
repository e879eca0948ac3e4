"""Compile report of the CUDA kernels, without a GPU: ``python -m linreg.kernels.report``.

Every kernel of ``kernels.cuda``, for float32 and float64 data, is compiled
to PTX by NVVM (``numba.cuda.compile_ptx`` with an explicit compute
capability) and assembled for sm_80 and sm_90 by ptxas, or by nvJitLink when
no suitable ptxas is installed. The assembler's verbose report gives, per
kernel: registers, spill stores/loads, stack frame and static shared memory.
That catches what the simulator cannot: type inference, float64 leaking into
float32 code, unsupported features, register pressure.

Three things make this work on a machine without a driver:

* ``compile_ptx`` is given ``cc``; ``None`` would ask the driver.
* Kernels calling ``@cuda.jit(device=True)`` functions compile them through
  their dispatcher, which asks the current device for its compute
  capability, and numba-cuda looks up NVRTC for the list of supported
  architectures. ``offline_target`` answers both for the duration of one
  compilation (the target cc is the one asked for anyway).
* NVVM and the assembler must come from the same CUDA release, or the
  assembler from a newer one: NVVM 13.5 emits PTX ISA 9.5, which ptxas 13.0
  rejects. The release is read from the PTX header and an assembler that
  accepts it is chosen; with pip packages only, install the toolkit pieces from
  one ``cuda-toolkit`` version (``numba-cuda[cu13]`` brings NVVM, NVRTC and
  nvJitLink; ``cuda-toolkit[nvcc]`` of the same version brings ptxas).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types as pytypes
from collections.abc import Iterator

import numpy as np

#: The architectures the project targets (A100 and H100 class).
ARCHS: tuple[tuple[int, int], ...] = ((8, 0), (9, 0))
DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))


class ToolchainError(RuntimeError):
    """NVVM or an assembler accepting its PTX is missing; the message says what to install."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """One function's resource use as the assembler reports it (bytes except registers)."""

    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack_frame: int = 0
    shared: int = 0

    @property
    def spill_bytes(self) -> int:
        return self.spill_stores + self.spill_loads


@dataclasses.dataclass(frozen=True)
class Row:
    kernel: str
    dtype: str
    arch: str
    resources: Resources
    #: Spill bytes summed over every function in the module (the kernel and any non-inlined device function).
    module_spill_bytes: int


# --------------------------------------------------------------------------- compiling


@contextlib.contextmanager
def offline_target(cc: tuple[int, int]) -> Iterator[None]:
    """Compile for ``cc`` with no driver and no NVRTC: answer the two questions numba-cuda would ask them.

    ``numba.cuda.dispatcher.get_current_device`` is asked for the device's
    compute capability when a kernel calls a device function;
    ``config.FORCE_CUDA_CC`` makes ``nvrtc.get_arch_option`` return ``cc``
    instead of querying NVRTC's supported architectures. Both are restored on exit.
    """
    import numba.cuda.dispatcher as dispatcher
    from numba.cuda.core import config

    saved = dispatcher.get_current_device, config.FORCE_CUDA_CC
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=cc)
    config.FORCE_CUDA_CC = cc
    try:
        yield
    finally:
        dispatcher.get_current_device, config.FORCE_CUDA_CC = saved


def compile_kernel(pyfunc, argtypes: tuple, cc: tuple[int, int]) -> str:
    """PTX of the kernel ``pyfunc`` for ``argtypes`` and compute capability ``cc``."""
    from numba import cuda
    from numba.core import types

    with offline_target(cc):
        ptx, _ = cuda.compile_ptx(pyfunc, types.void(*argtypes), cc=cc)
    return ptx


def ptx_release(ptx: str) -> tuple[int, int]:
    """The CUDA release of the NVVM that wrote ``ptx``, from its header ("Cuda compilation tools, release 13.5")."""
    match = re.search(r"Cuda compilation tools, release (\d+)\.(\d+)", ptx)
    if match is None:
        raise ValueError("PTX header names no CUDA release")
    return int(match.group(1)), int(match.group(2))


# --------------------------------------------------------------------------- assemblers


@dataclasses.dataclass(frozen=True)
class Assembler:
    """A way to turn PTX into SASS with a verbose resource report: a ptxas binary or the nvJitLink library."""

    kind: str  # "ptxas" or "nvJitLink"
    release: tuple[int, int]
    location: str

    def describe(self) -> str:
        return f"{self.kind} {self.release[0]}.{self.release[1]} ({self.location})"

    def assemble(self, ptx: str, cc: tuple[int, int], max_registers: int | None = None) -> str:
        """The verbose log of assembling ``ptx`` for ``sm_<cc>``; raises ToolchainError if it fails."""
        arch = f"sm_{cc[0]}{cc[1]}"
        if self.kind == "ptxas":
            with tempfile.TemporaryDirectory() as folder:
                source = os.path.join(folder, "kernel.ptx")
                with open(source, "w") as handle:
                    handle.write(ptx)
                command = [self.location, f"-arch={arch}", "-v", "-o", os.path.join(folder, "kernel.cubin"), source]
                if max_registers is not None:
                    command.insert(1, f"-maxrregcount={max_registers}")
                done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise ToolchainError(f"{self.describe()} failed for {arch}:\n{done.stdout}{done.stderr}")
            return done.stdout + done.stderr
        from cuda.bindings import nvjitlink

        options = [f"-arch={arch}", "-Xptxas=-v"] + ([f"-maxrregcount={max_registers}"] if max_registers else [])
        handle = nvjitlink.create(len(options), options)
        try:
            data = ptx.encode()
            try:
                nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel.ptx")
                nvjitlink.complete(handle)
            except nvjitlink.nvJitLinkError as error:
                log = bytearray(nvjitlink.get_error_log_size(handle))
                nvjitlink.get_error_log(handle, log)
                raise ToolchainError(
                    f"{self.describe()} failed for {arch}: {error}\n{log.decode(errors='replace')}") from error
            log = bytearray(nvjitlink.get_info_log_size(handle))
            nvjitlink.get_info_log(handle, log)
            return log.decode(errors="replace").rstrip("\x00")
        finally:
            nvjitlink.destroy(handle)


def _ptxas_release(path: str) -> tuple[int, int] | None:
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False, timeout=60)
    except OSError:
        return None
    match = re.search(r"release (\d+)\.(\d+)", done.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else None


def find_assemblers() -> list[Assembler]:
    """Every assembler found, in order of preference.

    ``LINREG_PTXAS`` (an explicit ptxas path) first; then the ptxas that
    cuda.pathfinder finds (pip wheels in this environment before a system
    toolkit, the same search order as for libNVVM); then ``ptxas`` on PATH and
    under CUDA_HOME; then nvJitLink.
    """
    paths = [os.environ.get("LINREG_PTXAS")]
    try:
        from cuda import pathfinder

        paths.append(pathfinder.find_nvidia_binary_utility("ptxas"))
    except Exception:  # an old or absent cuda-pathfinder: fall back to PATH and CUDA_HOME
        pass
    paths.append(shutil.which("ptxas"))
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            paths.append(os.path.join(os.environ[variable], "bin", "ptxas"))
    found, seen = [], set()
    for path in paths:
        if not path or not os.path.isfile(path):
            continue
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        release = _ptxas_release(path)
        if release is not None:
            found.append(Assembler("ptxas", release, path))
    try:
        from cuda.bindings import nvjitlink

        major, minor = nvjitlink.version()
        found.append(Assembler("nvJitLink", (int(major), int(minor)), "cuda.bindings.nvjitlink"))
    except Exception:  # library not installed or not loadable
        pass
    return found


def choose_assembler(release: tuple[int, int], assemblers: list[Assembler]) -> Assembler:
    """An assembler of exactly ``release``, else the oldest newer one (it accepts older PTX); never an older one."""
    exact = [a for a in assemblers if a.release == release]
    if exact:
        return exact[0]
    newer = sorted((a for a in assemblers if a.release > release), key=lambda a: a.release)
    if newer:
        return newer[0]
    have = "; ".join(a.describe() for a in assemblers) or "none"
    raise ToolchainError(
        f"NVVM is from CUDA {release[0]}.{release[1]} but no assembler accepts its PTX (found: {have}). "
        f"Install ptxas of the same release: pip install 'cuda-toolkit[nvcc]=={release[0]}.{release[1]}.*', "
        f"or point LINREG_PTXAS at a ptxas of CUDA >= {release[0]}.{release[1]}."
    )


# --------------------------------------------------------------------------- parsing


def parse_resources(log: str) -> dict[str, Resources]:
    """Per-function resources from a ``ptxas -v`` / nvJitLink ``-Xptxas=-v`` log, keyed by mangled name."""
    values: dict[str, dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        match = re.search(r"Compiling entry function '([^']+)'", line) or re.search(
            r"Function properties for (\S+)", line)
        if match:
            current = match.group(1)
            values.setdefault(current, {})
            continue
        if current is None:
            continue
        match = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if match:
            values[current].update(stack_frame=int(match.group(1)), spill_stores=int(match.group(2)),
                                   spill_loads=int(match.group(3)))
        match = re.search(r"Used (\d+) registers", line)
        if match:
            values[current]["registers"] = int(match.group(1))
            shared = re.search(r"(\d+) bytes smem", line)
            values[current]["shared"] = int(shared.group(1)) if shared else 0
    return {name: Resources(**fields) for name, fields in values.items()}


def ptx_shared_bytes(ptx: str) -> int:
    """Static shared memory the PTX declares (nvJitLink's report omits it: it assembles relocatable code)."""
    declarations = re.findall(r"^\s*(?:\.visible\s+)?\.shared\s+(?:\.align\s+\d+\s+)?\.b8\s+[\w$]+\[(\d+)\];", ptx,
                              flags=re.M)
    return sum(int(size) for size in declarations)


def _entry_name(ptx: str) -> str:
    match = re.search(r"\.visible \.entry (\S+?)\(", ptx)
    if match is None:
        raise ValueError("PTX has no .entry function")
    return match.group(1)


# --------------------------------------------------------------------------- report


@functools.cache
def toolchain() -> tuple[tuple[int, int], Assembler]:
    """``(NVVM release, assembler)`` for this environment; ToolchainError if there is none."""
    from . import cuda as cuda_kernels

    try:
        name, pyfunc, argtypes = cuda_kernels.kernel_signatures(np.dtype(np.float64))[0]
        release = ptx_release(compile_kernel(pyfunc, argtypes, ARCHS[0]))
    except Exception as error:
        raise ToolchainError(
            f"cannot compile CUDA kernels to PTX here ({type(error).__name__}: {' '.join(str(error).split())}). "
            "NVVM and NVRTC come "
            "with pip install 'numba-linreg[cuda]' (numba-cuda[cu13])."
        ) from error
    return release, choose_assembler(release, find_assemblers())


@functools.cache
def kernel_rows(dtype: np.dtype, cc: tuple[int, int], max_registers: int | None = None) -> tuple[Row, ...]:
    """One row per kernel of ``kernels.cuda`` for ``dtype`` data on ``sm_<cc>`` (cached: compiling takes seconds)."""
    from . import cuda as cuda_kernels

    _, assembler = toolchain()
    rows = []
    for name, pyfunc, argtypes in cuda_kernels.kernel_signatures(dtype):
        ptx = compile_kernel(pyfunc, argtypes, cc)
        resources = parse_resources(assembler.assemble(ptx, cc, max_registers))
        entry = resources.get(_entry_name(ptx))
        if entry is None:
            raise ToolchainError(f"{assembler.describe()} reported nothing for kernel {name}")
        if entry.shared == 0:
            entry = dataclasses.replace(entry, shared=ptx_shared_bytes(ptx))
        rows.append(Row(name, np.dtype(dtype).name, f"sm_{cc[0]}{cc[1]}", entry,
                        sum(r.spill_bytes for r in resources.values())))
    return tuple(rows)


def report(dtypes: tuple = DTYPES, archs: tuple = ARCHS) -> list[Row]:
    return [row for dtype in dtypes for cc in archs for row in kernel_rows(np.dtype(dtype), cc)]


def format_table(rows: list[Row]) -> str:
    header = ("kernel", "dtype", "arch", "registers", "spill bytes", "shared bytes", "stack bytes")
    body = [(r.kernel, r.dtype, r.arch, str(r.resources.registers), str(r.module_spill_bytes),
             str(r.resources.shared), str(r.resources.stack_frame)) for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if i < 3 else cell.rjust(width) for i, (cell, width)
                       in enumerate(zip(line, widths, strict=True))) for line in [header, *body]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit status 1 if any kernel spills, 2 if the toolchain is missing."""
    try:
        release, assembler = toolchain()
        rows = report()
    except ToolchainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"NVVM from CUDA {release[0]}.{release[1]}; assembled by {assembler.describe()}")
    print(format_table(rows))
    spilling = [f"{r.kernel} {r.dtype} {r.arch}" for r in rows if r.module_spill_bytes]
    if spilling:
        print(f"spills: {', '.join(spilling)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
