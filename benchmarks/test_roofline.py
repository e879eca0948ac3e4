"""The roofline: read bandwidth of a vectorised parallel sum over a large float64 array, this run."""

import harness as report
import numpy as np
import pytest
from bench import quick_mode


@pytest.mark.benchmark(group="roofline: read bandwidth")
def test_read_bandwidth(benchmark, request):
    array = np.ones(((64 if quick_mode(request.config) else 512) << 20) // 8)
    parts = np.zeros(256)
    kernel = report._parallel_sum()
    kernel(array, parts)
    benchmark(kernel, array, parts)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    benchmark.extra_info["bytes"] = array.nbytes
    if stats is not None:
        benchmark.extra_info["GB/s"] = round(array.nbytes / stats.min / 1e9, 2)
