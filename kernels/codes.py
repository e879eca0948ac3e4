"""The integer codes and state layout shared by the compiled training loops and the Python around them.

Plain constants (no numba import), so that ``linreg`` can name stop reasons
without compiling anything; numba reads them as compile-time constants.
"""

# Optimisers and penalties (``EngineConfig.optimizer`` / ``.penalty``).
SGD, ADAM, ADAMW = 0, 1, 2
NO_PENALTY, L2, L1, ELASTICNET = 0, 1, 2, 3
# Why a run stopped (``counters[K_STOP]``). INTERRUPTED is set by the driver (Ctrl-C), never by a loop.
RUNNING, STOP_TOL, STOP_EARLY, STOP_ADAPTIVE, STOP_DIVERGED, INTERRUPTED = 0, 1, 2, 3, 4, 5
#: What ``stop_reason_`` says for each code (RUNNING at the end means the epoch budget ran out).
STOP_REASONS = {RUNNING: "epochs", STOP_TOL: "tol", STOP_EARLY: "early_stopping", STOP_ADAPTIVE: "adaptive",
                STOP_DIVERGED: "diverged", INTERRUPTED: "interrupted"}
#: The adaptive schedule stops once the learning rate falls below this (scikit-learn's rule).
ADAPTIVE_MIN_LR = 1e-6
# Layout of the int64 counters and float64 scalars that persist between calls (and partial_fit calls).
K_STEP, K_EPOCH, K_NO_IMPROVE, K_STOP = range(4)
S_BEST, S_LR_FACTOR, S_FIRST_LOSS = range(3)
