"""W1: seed 000's whole fit (5000x5, 500 epochs, full batch), our kernels vs the seeds' torch loop.

Run: pytest benchmarks --benchmark-group-by=group
"""

import numpy as np
import pytest

import linreg
from linreg import oracle

X, y = linreg.datasets.seed_linear(random_state=0)


@pytest.mark.benchmark(group="W1 seed 000 fit")
def test_linreg_cpu(benchmark):
    model = linreg.LinearRegressor()
    model.fit(X, y)  # compile or load the kernels outside the timing
    benchmark(model.fit, X, y)


@pytest.mark.benchmark(group="W1 seed 000 fit")
def test_torch_seed_loop(benchmark):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    benchmark(oracle.seed_loop, X, y, np.ones(5, np.float32), np.ones(1, np.float32), 1e-5, 500)
