"""A second process that compiles a fit's training loop into the kernel cache while the fit compiles its
statistics kernels: the defaults' first fit (``standardize=True``, ``lr="auto"``) on an empty cache.

Numba compiles one function at a time in a process (a global compiler lock), so such a fit compiled its
column moments and Gram pass (~3.3 s here) and then the engine's loop (``kernels.cpu_train._train_epochs``,
~6.3 s) one after the other on one core, with the second core idle. When ``linreg.compilation.prepare_fit``
sees the first kernel start compiling, it starts this module as a process (``python -m
linreg._compile_helper``) that runs one engine epoch of the same options on synthetic data of the same
dtype, width and row count: the same compiled signature, written to the same cache. The fit's engine run
waits for it before its first step (``linreg._engine.before_first_advance``) and then loads the loop from
the cache instead of compiling it. A helper that fails or takes too long changes nothing but time: the fit
then compiles the loop itself.

Only where it can pay: an in-memory dense fit on the cpu backend whose options take the engine and need a
statistics pass first (standardize, or lr="auto"), without sample weights or early stopping (whose loops
the helper's synthetic run would not reach), on a machine with at least two CPUs for this process.
``LINREG_COMPILE_HELPER=0`` turns it off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np

#: Seconds a fit waits for its helper before compiling the loop itself (the helper needs ~7 s here).
WAIT_SECONDS = 120.0


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def enabled() -> bool:
    return os.environ.get("LINREG_COMPILE_HELPER", "1") != "0" and _cpus() >= 2


class EngineHelper:
    """The helper process of one warm-up fit: ``start`` (when compiling begins), ``wait`` (before the fit's
    first engine step; after it, a ``start`` does nothing), ``stop`` (at the end: kills a helper still running)."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.process: subprocess.Popen | None = None
        self.stepped = False

    @classmethod
    def for_fit(cls, params: dict[str, Any], X: Any, Y: Any, weights: Any, rows: int) -> EngineHelper | None:
        """The helper of a warm-up fit of ``params`` on ``X[:rows]``, or None where it cannot pay (see above)."""
        from linreg import options

        if not enabled() or weights is not None or type(X) is not np.ndarray or not X.flags.c_contiguous:
            return None
        try:
            spec = options.make_spec(params)
        except ValueError:  # the fit raises it, with its own message
            return None
        statistics_first = spec.standardize or spec.lr == "auto"
        if (not spec.non_plain_options() or spec.solver != "gd" or spec.early_stopping or not statistics_first
                or params.get("backend", "cpu") != "cpu"):
            return None
        helper_params = dict(params, lr=1e-3, standardize=False, epochs=1, progress=False)
        try:
            encoded = json.dumps(helper_params)
        except TypeError:  # an option value the command line cannot carry: no helper
            return None
        return cls([sys.executable, "-m", "linreg._compile_helper", encoded, np.dtype(X.dtype).str,
                    np.dtype(Y.dtype).str, str(X.shape[1]), str(Y.shape[1]), str(rows)])

    def start(self) -> None:
        if self.process is not None or self.stepped:
            return  # started already, or the fit is past the point where the helper could help
        env = {**os.environ, "LINREG_COMPILE_HELPER": "0", "LINREG_AOT_BACKGROUND": "0"}
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, env=env)
        except OSError:
            self.process = None

    def wait(self) -> None:
        """Before the fit's first engine step: wait for a running helper (bounded), so the step loads the loop."""
        self.stepped = True
        if self.process is not None:
            try:
                self.process.wait(timeout=WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def main(argv: list[str]) -> int:
    """One engine epoch of ``params`` (JSON) on synthetic data: compiles (or loads) that loop into the cache."""
    from linreg import driver

    params_json, x_dtype, y_dtype, n_features, n_outputs, rows = argv
    rng = np.random.default_rng(0)
    X = rng.standard_normal((int(rows), int(n_features))).astype(np.dtype(x_dtype))
    Y = rng.standard_normal((int(rows), int(n_outputs))).astype(np.dtype(y_dtype))
    driver.engine_run(json.loads(params_json), X, Y).advance(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
