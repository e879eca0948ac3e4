"""Shared test configuration.

tests/cuda runs in its own pytest process: under the CUDA simulator
(NUMBA_ENABLE_CUDASIM=1, which must be set before numba is imported) or, on a
machine with a GPU, with LINREG_TEST_GPU=1. The main run leaves it out.
"""

import os

collect_ignore = []
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and os.environ.get("LINREG_TEST_GPU") != "1":
    collect_ignore.append("cuda")
