"""Ahead-of-time compiled kernels: a new process's first plain fit without importing numba.

With a warm Numba cache, import + seed 000's fit in a new process costs ~0.4 s, of
which ~0.2 s is Numba itself (its import, its type registries on the first cache load,
the BLAS check that imports scipy.linalg). The plain full-batch GD of small specialised
problems (seed 000's 5000x5, ``kernels.aot_gd``) is therefore also built ahead of time
with ``numba.pycc`` into small extension modules holding (dtype, n_features) variants;
a fit that finds one for its variant runs it and never imports numba. Every other fit
uses the JIT kernels as before (they import numba lazily).

Where: ``$LINREG_AOT_DIR`` if set, else ``$NUMBA_CACHE_DIR/linreg-aot``, else
``$XDG_CACHE_HOME/linreg/aot`` (default ``~/.cache/linreg/aot``). A file's name
carries a key of linreg's version, the source of the kernels it is compiled from,
the Python, NumPy, Numba and llvmlite versions and the CPU (model and feature flags),
then which variants it holds (``module_name``): a library built from other sources or
for another CPU has another name and is never loaded (a build deletes such files).
Written atomically (temporary file, rename).

When: ``linreg compile`` (``build``) builds them explicitly. A fit that could have used
a missing one starts a detached background build of its variant (``schedule_build``)
that waits until the process that asked has exited (at most ``BUILD_WAIT_S``) and runs
at the lowest priority, so a first run is not slowed; the next process finds the
library. ``LINREG_AOT=0`` turns all of it off; ``LINREG_AOT_BACKGROUND=0`` only the
background build. No compiler, a failed build (recorded in a ``.failed`` file, so it is
not retried by every fit), a library that does not load: the JIT path, logged at debug
level on ``logging.getLogger("linreg")``.

This module imports no numba; ``build`` does.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("linreg")

#: The background build waits at most this long for the process that asked for it to exit.
BUILD_WAIT_S = 600.0
#: A build lock older than this is a crashed build's and is taken over.
STALE_LOCK_S = 900.0
_PREFIX = "linreg_gd_"
_KERNEL_SOURCES = ("cpu.py", "layout.py", "aot_gd.py")  # what the exported code is compiled from


def enabled() -> bool:
    """False when ``LINREG_AOT=0``: no library is loaded or built, every fit uses the JIT kernels."""
    return os.environ.get("LINREG_AOT", "1").strip() != "0"


def background_enabled() -> bool:
    """False when ``LINREG_AOT=0`` or ``LINREG_AOT_BACKGROUND=0``: a fit never starts a build."""
    return enabled() and os.environ.get("LINREG_AOT_BACKGROUND", "1").strip() != "0"


def cache_dir() -> Path:
    """The folder of the AOT libraries: ``$LINREG_AOT_DIR``, else ``$NUMBA_CACHE_DIR/linreg-aot``, else the
    user's cache dir."""
    if os.environ.get("LINREG_AOT_DIR"):
        return Path(os.environ["LINREG_AOT_DIR"])
    numba_dir = os.environ.get("NUMBA_CACHE_DIR")
    if numba_dir:
        return Path(numba_dir) / "linreg-aot"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "linreg" / "aot"


def _cpu_identity() -> str:
    """The CPU model and its feature flags (Linux: /proc/cpuinfo's first processor), without llvmlite."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = {}
        for line in lines:
            name, _, value = line.partition(":")
            name = name.strip()
            if name in ("vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU part"):
                wanted.setdefault(name, value.strip())
            elif not line.strip() and wanted:
                break  # the first processor is enough
        if wanted:
            return repr(sorted(wanted.items()))
    except OSError:
        pass
    import platform

    return f"{platform.machine()} {platform.processor()}"


def _versions() -> bytes:
    """Numba's and llvmlite's version files (found, not imported; importlib.metadata costs ~10 ms)."""
    parts = []
    for name in ("numba", "llvmlite"):
        spec = importlib.util.find_spec(name)
        try:
            parts.append(name.encode() + Path(spec.origin).with_name("_version.py").read_bytes())
        except (AttributeError, TypeError, OSError):
            parts.append(name.encode() + b" unknown")
    return b"\0".join(parts)


_key_cache: dict[str, str] = {}


def key() -> str:
    """16 hex digits naming what a library was built from and for (module doc); computed once per process."""
    if "key" not in _key_cache:
        from linreg import __version__

        digest = hashlib.sha256()
        kernels = Path(__file__).resolve().parent / "kernels"
        for name in _KERNEL_SOURCES:
            digest.update(name.encode() + b"\0" + (kernels / name).read_bytes())
        for part in (__version__, sys.version, np.__version__, _cpu_identity()):
            digest.update(b"\0" + part.encode())
        digest.update(b"\0" + _versions())
        _key_cache["key"] = digest.hexdigest()[:16]
    return _key_cache["key"]


_DTYPE_ORDER = ("float32", "float64")


def module_name(variants: Iterable[tuple[str, int]], library_key: str | None = None) -> str:
    """``linreg_gd_<key>_<float32 mask><float64 mask>``: the extension module of these (dtype, n_features)
    variants, each mask two hex digits with bit n-1 set for n features (seed 000's alone: ``..._1000``)."""
    masks = [0, 0]
    for dtype, n_features in variants:
        masks[_DTYPE_ORDER.index(np.dtype(dtype).name)] |= 1 << (n_features - 1)
    return f"{_PREFIX}{library_key or key()}_{masks[0]:02x}{masks[1]:02x}"


def _suffix() -> str:
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def libraries() -> dict[tuple[str, int], Path]:
    """The libraries of this key in ``cache_dir()``: which file holds each (dtype, n_features) variant."""
    folder = cache_dir()
    found: dict[tuple[str, int], Path] = {}
    head, suffix = f"{_PREFIX}{key()}_", _suffix()
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return found
    for name in names:
        masks = name[len(head):-len(suffix)]
        if not (name.startswith(head) and name.endswith(suffix) and len(masks) == 4):
            continue
        try:
            bits = (int(masks[:2], 16), int(masks[2:], 16))
        except ValueError:
            continue
        for dtype, mask in zip(_DTYPE_ORDER, bits, strict=True):
            for n in range(1, 9):
                if mask >> (n - 1) & 1:
                    found.setdefault((dtype, n), folder / name)
    return found


def library_path(dtype: Any, n_features: int) -> Path | None:
    """The file holding this variant (of this key), or None."""
    return libraries().get((np.dtype(dtype).name, n_features))


#: Loaded functions (or None: missing or failed) per (dtype name, n_features, folder).
_loaded: dict[tuple, Callable | None] = {}
_modules: dict[Path, Any] = {}


def _load_module(path: Path):
    if path not in _modules:
        module_id = path.name[: -len(_suffix())]
        loader = importlib.machinery.ExtensionFileLoader(module_id, str(path))
        spec = importlib.util.spec_from_file_location(module_id, str(path), loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        _modules[path] = module
    return _modules[path]


def load(dtype: Any, n_features: int) -> Callable | None:
    """The AOT full-batch GD function of this variant, or None (off, not built, or not loadable: logged)."""
    if not enabled():
        return None
    name = np.dtype(dtype).name
    slot = (name, n_features, str(cache_dir()))
    if _loaded.get(slot) is not None:
        return _loaded[slot]
    path = library_path(name, n_features)  # looked for again while missing: a build may have finished since
    function = None
    if path is not None:
        try:
            from linreg.kernels import aot_gd

            function = getattr(_load_module(path), aot_gd.symbol(name, n_features))
        except Exception as error:  # a damaged or foreign file: the JIT path
            logger.debug("AOT library %s not loaded (%s: %s); using the JIT kernels", path, type(error).__name__,
                         error)
    else:
        logger.debug("no AOT library for %s, %d features in %s; using the JIT kernels", name, n_features,
                     cache_dir())
    _loaded[slot] = function
    return function


class Kernel:
    """An AOT variant bound to one problem: ``gd`` and ``Workspace`` as ``kernels.cpu`` has them."""

    def __init__(self, function: Callable, n_samples: int, n_features: int, dtype: np.dtype) -> None:
        from linreg.kernels import aot_gd

        self.function = function
        self.workspace = aot_gd.Workspace(n_samples, n_features, dtype, *_planner().chunking(n_samples))

    def gd(self, X, Y, W, b, lr, loss_history, start, stop, workspace) -> int:
        from linreg.kernels import aot_gd

        return aot_gd.gd(self.function, X, Y, W, b, lr, loss_history, start, stop, workspace)


def _planner():
    """Where the chunk layout comes from: ``kernels.cpu`` when loaded (tests patch its tunables), else the
    numba-free ``kernels.layout``: either way the plan the JIT path would make in this process."""
    return sys.modules.get("linreg.kernels.cpu") or _layout()


def _layout():
    from linreg.kernels import layout

    return layout


def available(X: Any, Y: Any, *, schedule: bool = True) -> Callable | None:
    """The loaded AOT function for plain full-batch GD on (X, Y), or None (the JIT path).

    None when AOT is off, the problem is not one the AOT loop serves (``kernels.aot_gd.serves``), or its
    library is missing or broken; a missing one is then built in the background (``schedule_build``) unless
    ``schedule`` is False or background builds are off.
    """
    if not enabled() or not isinstance(X, np.ndarray) or not isinstance(Y, np.ndarray):
        return None
    from linreg.kernels import aot_gd

    planner = _planner()
    if X.ndim != 2 or Y.ndim != 2:
        return None
    if not aot_gd.serves(X, Y, planner.parallel_pass(X.shape[0], X.shape[1], Y.shape[1])):
        return None
    function = load(X.dtype, X.shape[1])
    if function is None and schedule and background_enabled():
        schedule_build([(X.dtype.name, X.shape[1])])
    return function


def gd_kernel(X: np.ndarray, Y: np.ndarray, W: np.ndarray, b: np.ndarray, *, schedule: bool = True) -> Kernel | None:
    """The AOT kernel for plain full-batch GD of (W, b) on (X, Y), bound to this problem; or None (``available``)."""
    from linreg.kernels import aot_gd

    function = available(X, Y, schedule=schedule)
    if function is None or not aot_gd.parameters_fit(X, W, b):
        return None
    return Kernel(function, X.shape[0], X.shape[1], X.dtype)


# --------------------------------------------------------------------------- building


def _variant_file(dtype: str, n_features: int, ending: str) -> Path:
    return cache_dir() / f"{_PREFIX}{key()}_{dtype}_{n_features}{ending}"


def _lock_path(dtype: str, n_features: int) -> Path:
    return _variant_file(dtype, n_features, ".lock")


def _failed_path(dtype: str, n_features: int) -> Path:
    """Records a failed build of the variant: fits do not start it again (``linreg compile`` does)."""
    return _variant_file(dtype, n_features, ".failed")


def building(folder: Path | None = None) -> list[Path]:
    """The builds in progress in ``folder`` (default ``cache_dir()``): their lock files, stale ones aside."""
    folder = cache_dir() if folder is None else Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    return [p for p in folder.glob(f"{_PREFIX}*.lock") if now - _mtime(p) < STALE_LOCK_S]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def wait_for_builds(timeout: float = 300.0, poll: float = 0.1, folder: Path | None = None) -> bool:
    """Wait until no build is in progress in ``folder`` (default ``cache_dir()``): True, or False once
    ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while building(folder):
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


_scheduled: set[tuple] = set()


def schedule_build(variants: Iterable[tuple[str, int]]) -> Any:
    """Start a detached, lowest-priority process that builds these (dtype name, n_features) variants once this
    process has exited; skips variants built, being built, failed before, or asked for already. Returns the
    ``subprocess.Popen`` (None: nothing to build)."""
    built = libraries()
    wanted = [(d, f) for d, f in variants
              if (d, f, str(cache_dir())) not in _scheduled and (d, f) not in built and not _failed_path(d, f).exists()]
    for dtype, n_features in wanted:
        _scheduled.add((dtype, n_features, str(cache_dir())))
    # The locks are taken here, so that the processes started before this one exits do not start builds too;
    # the build process releases them.
    try:
        wanted = [(d, f) for d, f in wanted if _take_lock(_lock_path(d, f))]
    except OSError as error:  # a read-only cache folder: nothing can be built there
        logger.debug("cannot build AOT libraries in %s (%s); fits keep using the JIT kernels", cache_dir(), error)
        return None
    if not wanted:
        return None
    import subprocess

    command = [sys.executable, "-m", "linreg.aot", "--after-pid", str(os.getpid()), "--locked",
               "--variants", ",".join(f"{d}:{f}" for d, f in wanted)]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)  # this linreg, also when not installed
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True, env=env, close_fds=True)
    except OSError as error:
        for dtype, n_features in wanted:
            _lock_path(dtype, n_features).unlink(missing_ok=True)
        logger.debug("could not start the background AOT build (%s); fits keep using the JIT kernels", error)
        return None
    logger.debug("started a background AOT build of %s (pid %d)", wanted, process.pid)
    return process


def _fresh_lock(path: Path) -> bool:
    return path.exists() and time.time() - _mtime(path) < STALE_LOCK_S


def _take_lock(path: Path) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not _fresh_lock(path):
        path.unlink(missing_ok=True)  # a crashed build's
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def build(variants: Iterable[tuple[str, int]], out: Callable[[str], None] | None = None, *,
          force: bool = False, locked: bool = False) -> list[tuple[str, int, float, str]]:
    """Build the AOT library of these (dtype name, n_features) variants into ``cache_dir()``; imports numba.

    One extension module for all the variants not built yet (all, with ``force``): compiled for the host CPU
    into a temporary folder next to its final place, then renamed (atomic). Returns (dtype, n_features,
    seconds, status) per variant, status "built", "cached", "busy" (another process is building it) or
    "failed: why"; ``out`` gets one line per status. A failure is recorded (``_failed_path``) so fits do not
    retry it; a successful build clears it. ``locked``: the caller holds the variants' build locks
    (``schedule_build``); they are released here.
    """
    from linreg.kernels import aot_gd, layout

    variants = list(dict.fromkeys(variants))
    for dtype, n_features in variants:
        if dtype not in aot_gd.DTYPES or not 1 <= n_features <= layout.MAX_FIXED_FEATURES:
            raise ValueError(f"AOT kernels exist for dtype float32/float64 and 1..{layout.MAX_FIXED_FEATURES} "
                             f"features, got {dtype!r}, {n_features}")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale(folder)
    start = time.perf_counter()
    existing = libraries()
    status: dict[tuple[str, int], str] = {}
    todo = []
    for variant in variants:
        if variant in existing and not force:
            status[variant] = "cached"
            if locked:
                _lock_path(*variant).unlink(missing_ok=True)
        elif not locked and not _take_lock(_lock_path(*variant)):
            status[variant] = "busy"
        else:
            todo.append(variant)
    target = folder / (module_name(todo) + _suffix()) if todo else None
    if todo:
        try:
            _compile(todo, target)
            for variant in todo:
                status[variant] = "built"
                _failed_path(*variant).unlink(missing_ok=True)
        except Exception as error:  # no compiler, a pycc failure: the JIT path stays
            why = str(error).strip().splitlines()
            why = f"failed: {type(error).__name__}: {why[-1] if why else ''}"
            logger.debug("AOT build of %s failed: %s", todo, error)
            for variant in todo:
                status[variant] = why
                _failed_path(*variant).write_text(f"{type(error).__name__}: {error}\n")
        finally:
            for variant in todo:
                _lock_path(*variant).unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    if out is not None:
        for what in dict.fromkeys(status.values()):
            group = [v for v in variants if status[v] == what]
            names = "; ".join(f"{dtype} {','.join(str(n) for d, n in group if d == dtype)}"
                              for dtype in _DTYPE_ORDER if any(d == dtype for d, _ in group))
            where = target if what == "built" or what.startswith("failed") else (
                existing.get(group[0]) if what == "cached" else folder)
            out(f"aot     {names} features: {what} in {seconds if what != 'cached' else 0.0:.1f} s ({where})")
    return [(dtype, n, seconds, status[(dtype, n)]) for dtype, n in variants]


def _compile(variants: list[tuple[str, int]], target: Path) -> None:
    import tempfile
    import warnings

    from linreg.kernels import aot_gd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba.pycc's pending deprecation: we pin numba and test the output
        from numba.pycc import CC
    from numba.pycc.platform import external_compiler_works

    if not external_compiler_works():  # before seconds of LLVM work: pycc links through a C compiler
        raise RuntimeError("no working C compiler (numba.pycc builds extension modules through setuptools' "
                           "compiler: $CC, else cc/gcc)")
    name = target.name[: -len(_suffix())]
    with tempfile.TemporaryDirectory(prefix=".build-", dir=target.parent) as scratch:
        cc = CC(name)
        cc.output_dir = scratch
        cc.target_cpu = "host"  # the JIT kernels' CPU: the same vector width, hence the same bits
        for dtype, n_features in variants:
            aot_gd.export(cc, dtype, n_features)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cc.compile()
        built = Path(scratch) / target.name
        if not built.exists():
            found = sorted(p.name for p in Path(scratch).iterdir())
            raise RuntimeError(f"pycc wrote {found}, expected {target.name}")
        os.replace(built, target)  # same folder, so atomic: a reader sees no file or the whole file


def _remove_stale(folder: Path) -> None:
    """Delete libraries (and records) of other keys: built from older sources or for another CPU."""
    current = f"{_PREFIX}{key()}_"
    for path in folder.glob(f"{_PREFIX}*"):
        if not path.name.startswith(current) and not path.name.endswith(".lock"):
            try:
                path.unlink()
            except OSError:
                pass


def parse_variants(text: str) -> list[tuple[str, int]]:
    """``"float32:5,float64:1"`` -> [("float32", 5), ("float64", 1)]."""
    import argparse

    variants = []
    for token in filter(None, (t.strip() for t in text.split(","))):
        dtype, _, features = token.partition(":")
        try:
            variants.append((dtype, int(features)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected dtype:n_features like float32:5, got {token!r}") from None
    return variants


def _wait_for_exit(pid: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        time.sleep(0.2)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m linreg.aot --variants float32:5 [--after-pid PID]``: the background build."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m linreg.aot", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=parse_variants, required=True, help="dtype:n_features,...")
    parser.add_argument("--after-pid", type=int, help="wait until this process has exited (at most BUILD_WAIT_S)")
    parser.add_argument("--locked", action="store_true", help="the build locks are held for this process")
    args = parser.parse_args(argv)
    if args.after_pid:
        _wait_for_exit(args.after_pid, BUILD_WAIT_S)
    try:
        os.nice(19)
    except OSError:
        pass
    results = build(args.variants, out=print, locked=args.locked)
    return 0 if all(status in ("built", "cached", "busy") for *_, status in results) else 1


if __name__ == "__main__":
    sys.exit(main())
