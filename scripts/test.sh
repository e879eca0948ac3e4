#!/usr/bin/env bash
# The whole test suite, as the README gives it and CI runs it.
# Each step fails on failure and on "no tests collected" (pytest exit code 5).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

"$PYTHON" -m ruff check kernels linreg tests benchmarks

# Main suite: kernels against the torch oracle, trainer, CLI, bad input, PTX compile check.
"$PYTHON" -m pytest tests "$@"

# Every benchmark once, on small sizes, untimed: the suites run on a fresh machine.
"$PYTHON" -m pytest benchmarks --quick --benchmark-disable -q -p no:cacheprovider

# CUDA simulator suite: its own process, the variable set before numba is imported.
NUMBA_ENABLE_CUDASIM=1 "$PYTHON" -m pytest tests/cuda "$@"
