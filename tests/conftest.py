"""Shared test configuration.

tests/cuda runs in its own pytest process: under the CUDA simulator
(NUMBA_ENABLE_CUDASIM=1, which must be set before numba is imported) or, on a
machine with a GPU, with LINREG_TEST_GPU=1. The main run leaves it out.

``helpers`` (tests/helpers.py) is importable from every test folder, and the
benchmark harness (benchmarks/harness.py, not part of the installed package)
as ``harness``.
"""

import os
import signal
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
for folder in (TESTS, TESTS.parent / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

# A fit whose ahead-of-time library (linreg.aot) is missing would start a background build; in the suite that
# build would compete with timed tests for the cores. tests/aot builds what it tests explicitly.
os.environ.setdefault("LINREG_AOT_BACKGROUND", "0")

# The Ctrl-C tests send real SIGINTs, to this process and to the processes they start, and expect Python's own
# handler (``signal.default_int_handler``), as in an interactive session. A background job of a non-interactive
# shell (``cmd &``) starts with SIGINT ignored: Python then installs no handler, its children inherit the
# ignore, and a fit rightly leaves an ignored signal alone. Give the suite the interactive disposition; the
# processes it starts then get the default one (a handler, unlike an ignore, is reset at exec).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

collect_ignore = []
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and os.environ.get("LINREG_TEST_GPU") != "1":
    collect_ignore.append("cuda")

