"""Benchmarks are timed by pytest-benchmark, never asserted: every figure is a ratio within one run."""
