"""How a pass over the rows is laid out: the chunking and the choice of loop, in plain Python (no numba import).

Shapes as in ``kernels.cpu``: X (n_samples, n_features), Y (n_samples, n_outputs).

These rules are shared by the JIT kernels (``kernels.cpu``, which re-exports the
tunables so tests can patch them there) and the ahead-of-time compiled full-batch
GD loop (``kernels.aot_gd``), whose import path must not import numba: both lay out
a problem the same way, so their floating-point summation order, and therefore their
bits, are the same.
"""

from __future__ import annotations

import math

#: Rows per chunk when n_samples is small enough that MAX_CHUNKS is not reached. Small enough that
#: cache-resident problems (10,000 rows: 10 chunks) split evenly over the threads: prange hands each
#: thread one contiguous range of chunks, and 3 chunks of 4096 rows over 2 threads ran 8192 rows on one
#: (issue 15; benchmarks/README.md item 32). Large problems reach MAX_CHUNKS and take larger chunks.
CHUNK_ROWS = 1024
#: Upper bound on the number of chunks, so the partial buffers stay small
#: (MAX_CHUNKS * n_outputs * n_features float64) at any n_samples.
MAX_CHUNKS = 256
#: Below this many multiply-adds per pass the chunks are walked serially.
PARALLEL_MIN_WORK = 1 << 18
#: Up to this many features (with one output) the kernels are specialised on n_features: the
#: feature loops unroll, w and dW live in registers, and LLVM vectorises across rows instead.
MAX_FIXED_FEATURES = 8
#: Full-batch GD on at most this many elements (n_samples * (n_features + 1)) of a specialised
#: problem keeps a transposed float64 copy of X and Y (1 MiB at most, cache-resident) for all epochs.
TRANSPOSE_MAX_ELEMENTS = 1 << 17


def chunking(n_samples: int, chunk_rows: int = CHUNK_ROWS, max_chunks: int = MAX_CHUNKS) -> tuple[int, int]:
    """Return ``(rows_per_chunk, n_chunks)`` for ``n_samples`` rows.

    Depends on n_samples and the two tunables only, never on the thread count:
    that is what makes the reductions reproducible.
    """
    rows = max(chunk_rows, math.ceil(n_samples / max_chunks), 1)
    return rows, max(1, math.ceil(n_samples / rows))


def parallel_pass(n_samples: int, n_features: int, n_outputs: int, min_work: int = PARALLEL_MIN_WORK) -> bool:
    """Whether a pass over (n_samples, n_features) -> n_outputs walks its chunks in parallel (PARALLEL_MIN_WORK)."""
    return n_samples * n_features * n_outputs >= min_work


def transposed_max_rows(n_features: int) -> int:
    """The most rows whose transposed float64 copy (X and Y) full-batch GD keeps: TRANSPOSE_MAX_ELEMENTS."""
    return TRANSPOSE_MAX_ELEMENTS // (n_features + 1)


def use_transposed(n_samples: int, n_features: int, n_outputs: int, parallel: bool) -> bool:
    """Whether full-batch GD takes the transposed loop (``_gd_epochs_transposed``): small specialised problems,
    walked serially."""
    return (not parallel and n_outputs == 1 and n_features <= MAX_FIXED_FEATURES
            and n_samples <= transposed_max_rows(n_features))
