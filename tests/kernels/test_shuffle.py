"""The epoch shuffle (``kernels.cpu_train._shuffle_rows``): a permutation that depends only on (seed, epoch),
uniform, with an exact 64x64 -> high 64 bits product (checked against Python's integers)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from linreg.kernels import cpu_train

_UINT64 = st.integers(min_value=0, max_value=2**64 - 1)


@njit
def _multiply_high(a, b):
    return cpu_train._multiply_high(a, b)


@settings(max_examples=300, deadline=None)
@given(_UINT64, _UINT64)
def test_multiply_high_is_the_top_half_of_the_exact_product(a, b):
    assert int(_multiply_high(np.uint64(a), np.uint64(b))) == (a * b) >> 64


@pytest.mark.parametrize("a, b", [(2**64 - 1, 2**64 - 1), (2**64 - 1, 1), (0, 2**64 - 1), (2**32, 2**32),
                                  (2**32 - 1, 2**32 - 1), (2**63, 2)])
def test_multiply_high_at_the_carry_edges(a, b):
    assert int(_multiply_high(np.uint64(a), np.uint64(b))) == (a * b) >> 64


@pytest.mark.parametrize("n", [1, 2, 3, 255, 256, 257, 10_000])
def test_each_epoch_is_a_permutation(n):
    for epoch in range(3):
        np.testing.assert_array_equal(np.sort(cpu_train.epoch_order(7, epoch, n)), np.arange(n))


def test_the_order_depends_on_seed_and_epoch_only():
    first = cpu_train.epoch_order(3, 5, 1000)
    np.testing.assert_array_equal(cpu_train.epoch_order(3, 5, 1000), first)
    assert not np.array_equal(cpu_train.epoch_order(3, 6, 1000), first)
    assert not np.array_equal(cpu_train.epoch_order(4, 5, 1000), first)


def test_a_subset_of_rows_is_permuted_among_itself():
    rows = np.array([9, 4, 17, 2, 30], np.int64)
    order = cpu_train.epoch_order(0, 1, 40, rows)
    np.testing.assert_array_equal(np.sort(order), np.sort(rows))


def test_every_position_is_equally_likely():
    # 4 rows over 8,000 epochs: each (row, position) count is Binomial(8000, 1/4), sd ~39; a chi-square over the
    # 16 cells (9 degrees of freedom) stays below 27.9 with probability 0.999. A biased index map (say j = z % i,
    # or a high-product off by one) fails it by hundreds.
    n, epochs = 4, 8000
    counts = np.zeros((n, n))
    for epoch in range(epochs):
        counts[cpu_train.epoch_order(11, epoch, n), np.arange(n)] += 1
    expected = epochs / n
    chi_square = ((counts - expected) ** 2 / expected).sum()
    assert chi_square < 27.9, counts
