#!/usr/bin/env bash
# The whole test suite, as the README gives it and CI runs it.
# Each step fails on failure and on "no tests collected" (pytest exit code 5).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

"$PYTHON" -m ruff check kernels linreg tests benchmarks scripts

# Main suite: kernels against the torch oracle, trainer, CLI, bad input, PTX compile check.
# Two worker processes (pytest-xdist; LINREG_TEST_WORKERS=0 runs it in this process): on an empty kernel
# cache most of the suite's time is Numba compiling, one function at a time per process, so two workers
# compile on both cores and share the cache (tests/estimator + tests/training, empty cache, load ~2:
# 376 s in one process, 267 s in two).
"$PYTHON" -m pytest tests -n "${LINREG_TEST_WORKERS:-2}" "$@"

# Every benchmark once, on small sizes, untimed: the suites run on a fresh machine.
"$PYTHON" -m pytest benchmarks --quick --benchmark-disable -q -p no:cacheprovider

# CUDA simulator suite: its own process, the variable set before numba is imported.
NUMBA_ENABLE_CUDASIM=1 "$PYTHON" -m pytest tests/cuda "$@"
