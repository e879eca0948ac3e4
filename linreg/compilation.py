"""Compile the kernels a fit needs before it trains, and say how long that took.

Numba compiles each kernel on its first call for each type signature and keeps
the machine code in an on-disk cache (``cache=True``): the folder named by
``NUMBA_CACHE_DIR``, else ``__pycache__`` next to the kernels' source. A new
user's first fit therefore pays seconds of compilation for milliseconds of
training; later processes load the cache (~0.1-0.2 s).

``prepare_fit(estimator, X, y)`` runs a warm-up fit of one epoch on a few rows of
the same data (same dtype, n_features, n_outputs and options), so that exactly
the kernel variants the real fit will call are compiled (or loaded), timed, and
out of the real fit's progress rate and wall time. It never touches the
estimator it is given. ``prepare(dtype, n_features, ...)`` does the same on
synthetic data, and ``python -m linreg.compilation`` / ``linreg compile`` fills
the cache in advance (images, CI) and builds the ahead-of-time compiled libraries
of the plain GD loop (``linreg.aot``). A plain fit whose loop has such a library
prepares nothing: it loads the library, and numba is not imported (this module
imports numba only when it compiles).

The Python API stays quiet: the result is returned and logged to
``logging.getLogger("linreg")``; the CLI prints it.
"""

from __future__ import annotations

import argparse
import contextvars
import dataclasses
import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger("linreg")

#: Rows of a warm-up fit: enough for a validation split, few enough to cost nothing.
WARMUP_ROWS = 64
#: Kinds of fit ``prepare`` knows: the seeds' plain full-batch GD, and the engine (any other option).
KINDS = {"gd": {}, "engine": {"standardize": True, "lr": "auto"}}


@dataclasses.dataclass
class Preparation:
    """What ``prepare_fit`` did: ``seconds`` in all, ``compiled`` kernels (0: all from the cache or memory)."""

    what: str
    seconds: float = 0.0
    compiled: int = 0
    cache: str = ""
    skipped: str = ""  # why nothing was prepared (another backend, out-of-core data), else ""
    aot: bool = False  # the fit's loop is an ahead-of-time compiled library (linreg.aot): nothing compiled

    def message(self) -> str:
        """One line for a screen: what was compiled, how long it took, where it is cached."""
        if self.skipped:
            return f"kernels for {self.what}: not prepared ({self.skipped})"
        if self.aot:
            return f"kernels for {self.what}: ahead-of-time compiled, loaded in {self.seconds:.3f} s from {self.cache}"
        if self.compiled:
            return (f"compiled kernels for {self.what} in {self.seconds:.1f} s "
                    f"(first run only, cached in {self.cache})")
        return f"kernels for {self.what} loaded from cache in {self.seconds:.2f} s"


def cache_location() -> str:
    """The folder Numba caches linreg's CPU kernels in (NUMBA_CACHE_DIR, or next to the source)."""
    from linreg.kernels import cpu

    return str(cpu._gd_epochs._cache._cache_path)


def describe(dtype: Any, n_features: int, n_outputs: int = 1) -> str:
    """``"float32, 5 features"`` (and the outputs when more than one): what a variant is compiled for."""
    features = f"{n_features} feature{'s' if n_features != 1 else ''}"
    outputs = f", {n_outputs} outputs" if n_outputs != 1 else ""
    return f"{np.dtype(dtype).name}, {features}{outputs}"


def _compile_watch(on_start: Callable[[], None] | None):
    """A context manager counting Numba's top-level compilations (cache loads are none); calls ``on_start`` as
    the first begins. Imports numba (this module does not: a fit served by an AOT library never does)."""
    from numba.core import event

    class CompileWatch(event.Listener):
        def __init__(self) -> None:
            self._depth = 0
            self.compiled = 0

        def on_start(self, ev) -> None:
            if self._depth == 0:
                if self.compiled == 0 and on_start is not None:
                    on_start()
                self.compiled += 1
            self._depth += 1

        def on_end(self, ev) -> None:
            self._depth -= 1

        def __enter__(self):
            event.register("numba:compile", self)
            return self

        def __exit__(self, *exc_info) -> None:
            event.unregister("numba:compile", self)

    return CompileWatch()


_CompileWatch = _compile_watch  # its earlier name (a class then), which tests use


def _warmup_rows(estimator, n_samples: int, n_features: int, n_outputs: int) -> int:
    """Rows of the warm-up fit: as few as land on the compiled entry points the real fit uses.

    Plain full-batch GD on a small specialised problem (seed 000's) takes
    ``kernels.cpu._gd_epochs_transposed``, a larger one ``_gd_epochs``: the warm-up
    uses as few rows as still select the same one. Every other path's kernels depend
    only on the types (dtype, n_features class, layout), not on the row count, except mini-batches
    smaller than the data: the warm-up has one batch more than the batch size.
    """
    from linreg.kernels import cpu

    small = min(n_samples, WARMUP_ROWS)
    from linreg import options

    spec = options.make_spec(estimator.get_params())
    if spec.non_plain_options():
        # Mini-batches smaller than the data take the gather kernel (a whole batch does not): so must the warm-up.
        batch = spec.batch_size
        return small if batch is None or batch >= n_samples else min(n_samples, max(small, batch + 1))
    transposed = cpu.use_transposed(n_samples, n_features, n_outputs,
                                    cpu.parallel_pass(n_samples, n_features, n_outputs))
    if transposed or not cpu.use_transposed(small, n_features, n_outputs, False):
        return small
    # The smallest row count past the transposed copy's limit: serial, streaming.
    return min(n_samples, cpu.transposed_max_rows(n_features) + 1)


#: Set while a warm-up fit runs: a fit that calls prepare_fit itself (the driver) must not recurse.
_warming_up = contextvars.ContextVar("linreg_warming_up", default=False)
def warming_up() -> bool:
    """True inside a warm-up fit: Ctrl-C there should raise at once (nothing is trained), not wait for a block."""
    return _warming_up.get()


#: What this process has prepared already (options, dtype, shape class): a repeat costs microseconds, not a
#: warm-up fit (what it compiled is in memory).
_prepared: set[tuple] = set()


def prepare_fit(estimator, X: Any, y: Any, sample_weight: Any = None, *,
                on_compile: Callable[[str], None] | None = None, validated: bool = False) -> Preparation:
    """Compile (or load from the cache) the kernels ``estimator.fit(X, y, sample_weight)`` will call; time it.

    A warm-up fit of one epoch on the first rows of the data, with the estimator's
    options (progress and checkpoints off), on a copy: ``estimator`` is not touched.
    ``on_compile(what)`` is called when the first kernel starts compiling (not for
    cache loads): the CLI prints its "compiling kernels ..." line then. Invalid data
    or options raise the errors ``fit`` would raise. Ctrl-C while compiling raises
    KeyboardInterrupt with a message saying nothing was trained.

    ``validated=True``: X and y are the fit's checked arrays already (``_check_data``'s
    2-D float arrays, ``sample_weight`` float64 or None), as the fit driver has them;
    they are not checked again (a pass over all of X). Called from inside a warm-up
    fit, it does nothing.
    """
    from linreg import outofcore
    from linreg.estimator import DivergenceError, LinearRegressor

    params = estimator.get_params()
    if _warming_up.get():
        return Preparation("a warm-up fit", skipped="inside a warm-up fit")
    if outofcore.is_out_of_core(X, y, sample_weight):
        return Preparation("streamed data", skipped="out-of-core fits compile on their first chunk")
    if params["backend"] != "cpu":
        return Preparation(f"backend {params['backend']!r}", skipped="only the cpu backend's kernels are prepared")
    params.update(epochs=1, progress=False, checkpoint_path=None, checkpoint_every=None, warm_start=False)
    if validated:
        X2, Y2, weights = X, y, sample_weight
    else:  # the fit's own validation: the same errors
        from linreg import _validation as check

        if check.is_sparse(X):  # scipy.sparse: validated (and kept sparse) as the fit does
            from linreg import sparse

            X2, Y2, _ = sparse.check_X_y(X, y)
        else:
            X2, Y2, _ = check.check_X_y(X, y)
        weights = check.check_sample_weight(sample_weight, X2.shape[0])
    n_samples, n_features = X2.shape
    n_outputs = Y2.shape[1]
    what = describe(X2.dtype, n_features, n_outputs)
    ahead = _ahead_of_time(params, X2, Y2, weights, what)
    if ahead is not None:  # nothing to compile, and numba is not imported
        return ahead
    from linreg.kernels import cpu

    transposed = cpu.use_transposed(n_samples, n_features, n_outputs,
                                    cpu.parallel_pass(n_samples, n_features, n_outputs))
    key = (repr(sorted(params.items())), X2.dtype.str, n_features, n_outputs, min(n_samples, WARMUP_ROWS + 1),
           transposed, weights is None, type(X2).__name__)  # a sparse X compiles its own kernels
    if key in _prepared:
        return Preparation(what)
    result = Preparation(what, cache=cache_location())
    warmup = LinearRegressor(**params)
    rows = _warmup_rows(warmup, n_samples, n_features, n_outputs)
    # The engine's loop compiled by a second process while this one compiles the statistics kernels.
    from linreg import _compile_helper, _engine  # past the AOT return above: these import numba

    helper = _compile_helper.EngineHelper.for_fit(params, X2, Y2, weights, rows)

    def compiling() -> None:  # the first kernel starts compiling (not on cache loads)
        if helper is not None:
            helper.start()
        if on_compile is not None:
            on_compile(what)

    start = time.perf_counter()
    token = _warming_up.set(True)
    if helper is not None:
        _engine.before_first_advance = helper.wait
    try:
        with _compile_watch(compiling) as watch, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the warm-up's one epoch is not the user's fit
            try:
                warmup.fit(X2[:rows], Y2[:rows], None if weights is None else np.ones(rows))
            except DivergenceError:
                pass  # one epoch on a few rows: the kernels are compiled all the same
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted while compiling the kernels for {what}: nothing was trained, "
                                "the model was not fitted") from None
    finally:
        _warming_up.reset(token)
        if helper is not None:
            _engine.before_first_advance = None
            helper.stop()
    _prepared.add(key)
    result.seconds = time.perf_counter() - start
    result.compiled = watch.compiled
    (logger.info if result.compiled else logger.debug)(result.message())
    return result


def _ahead_of_time(params: dict[str, Any], X: Any, Y: Any, weights: Any, what: str) -> Preparation | None:
    """The preparation of a plain fit whose loop has an AOT library (``linreg.aot``): loading it; else None."""
    from linreg import aot, options

    if not aot.enabled() or weights is not None or not isinstance(X, np.ndarray):
        return None
    if options.make_spec(params).non_plain_options():  # the compiled engine, not the seeds' plain loop
        return None
    start = time.perf_counter()
    if aot.available(X, Y) is None:  # a missing library is scheduled for a background build here
        return None
    result = Preparation(what, cache=str(aot.cache_dir()), seconds=time.perf_counter() - start, aot=True)
    logger.debug(result.message())
    return result


def prepare(dtype: Any = np.float32, n_features: int = 5, n_outputs: int = 1, kind: str = "gd", *,
            n_samples: int | None = None, on_compile: Callable[[str], None] | None = None) -> Preparation:
    """Compile the kernels of one kind of fit on synthetic data of this dtype and shape; returns the timing.

    ``kind``: ``"gd"`` (plain full-batch GD, the seeds' loop: both its small-data and
    streaming entry points unless ``n_samples`` says which) or ``"engine"``
    (standardize and lr="auto": the compiled engine every other option uses too).
    """
    from linreg.estimator import LinearRegressor

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    counts = [n_samples] if n_samples is not None else [WARMUP_ROWS]
    if kind == "gd" and n_samples is None:
        from linreg.kernels import cpu

        if cpu.use_transposed(WARMUP_ROWS, n_features, n_outputs, False):
            counts.append(cpu.transposed_max_rows(n_features) + 1)
    total = Preparation(describe(dtype, n_features, n_outputs), cache=cache_location())
    rng = np.random.default_rng(0)
    for rows in counts:
        X = rng.standard_normal((rows, n_features)).astype(dtype)
        y = rng.standard_normal((rows, n_outputs) if n_outputs > 1 else rows).astype(dtype)
        part = prepare_fit(LinearRegressor(**KINDS[kind]), X, y, on_compile=on_compile)
        total.seconds += part.seconds
        total.compiled += part.compiled
    return total


# --------------------------------------------------------------------------- command line


def _int_list(text: str) -> list[int]:
    values = []
    for token in text.split(","):
        low, _, high = token.partition("-")
        try:
            values.extend(range(int(low), int(high or low) + 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected numbers like 5 or 1-8,16, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive numbers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of ``linreg compile`` / ``python -m linreg.compilation``."""
    parser.add_argument("--dtype", default="float32,float64",
                        help="comma-separated dtypes of the data (default: float32,float64)")
    parser.add_argument("--features", type=_int_list, default=_int_list("1-9"),
                        help="n_features to compile for, e.g. 5 or 1-8,16 (default 1-9: the 8 specialised "
                             "kernels and 9, which stands for every larger count)")
    parser.add_argument("--outputs", type=_int_list, default=[1], help="n_outputs (default 1)")
    parser.add_argument("--kind", default=",".join(KINDS),
                        help=f"comma-separated kinds of fit: {', '.join(KINDS)} (default: both)")
    aot_mode = parser.add_mutually_exclusive_group()
    aot_mode.add_argument("--no-aot", dest="aot", action="store_const", const="no", default="yes",
                          help="skip the ahead-of-time compiled libraries of the plain GD loop (linreg.aot)")
    aot_mode.add_argument("--aot-only", dest="aot", action="store_const", const="only",
                          help="build only the ahead-of-time compiled libraries, not the Numba cache")
    return parser


def aot_variants(dtypes: Sequence[str], features: Sequence[int], outputs: Sequence[int],
                 kinds: Sequence[str]) -> list[tuple[str, int]]:
    """The (dtype, n_features) AOT libraries that ``linreg compile`` builds for these choices: the plain GD loop
    (kind "gd") with one output and at most ``layout.MAX_FIXED_FEATURES`` features (``kernels.aot_gd``)."""
    from linreg.kernels import layout

    if "gd" not in kinds or 1 not in outputs:
        return []
    return [(dtype, n) for dtype in dtypes for n in features if n <= layout.MAX_FIXED_FEATURES]


def run(args: argparse.Namespace, out=print) -> int:
    """Compile every (dtype, n_features, n_outputs, kind) asked for; one line each."""
    kinds = [kind.strip() for kind in args.kind.split(",")]
    dtypes = [dtype.strip() for dtype in args.dtype.split(",")]
    for name in dtypes:
        if name not in ("float32", "float64"):
            raise SystemExit(f"--dtype must be float32 and/or float64, got {name!r}")
    for kind in kinds:
        if kind not in KINDS:
            raise SystemExit(f"--kind must be among {', '.join(KINDS)}, got {kind!r}")
    mode = getattr(args, "aot", "yes")
    start = time.perf_counter()
    if mode != "only":
        out(f"kernel cache: {cache_location()}")
        for name in dtypes:
            for n_outputs in args.outputs:
                for n_features in args.features:
                    for kind in kinds:
                        result = prepare(name, n_features, n_outputs, kind)
                        out(f"{kind:7} {result.message()}")
    failed = False
    if mode != "no":
        from linreg import aot

        variants = aot_variants(dtypes, args.features, args.outputs, kinds)
        if not aot.enabled():
            out("ahead-of-time libraries: not built (LINREG_AOT=0)")
        elif variants:
            out(f"ahead-of-time libraries: {aot.cache_dir()}")
            results = aot.build(variants, out=out)
            failed = any(status.startswith("failed") for *_, status in results)
            if failed:
                out("some ahead-of-time builds failed: those fits use the JIT kernels (Numba cache) instead")
    out(f"done in {time.perf_counter() - start:.1f} s")
    return 1 if failed and mode == "only" else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m linreg.compilation",
        description="Compile linreg's CPU kernels into the Numba cache in advance (for images and CI)."))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
