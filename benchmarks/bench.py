"""Helpers shared by the benchmark modules (the hooks and fixtures are in conftest.py)."""

from __future__ import annotations

import os
import time

import harness as report
import pytest

#: One row per timed benchmark of this session, for the summary at the end.
SUMMARY: list[dict] = []
_DATA: dict = {}


def quick_mode(config) -> bool:
    return bool(config.getoption("--quick")) or os.environ.get("LINREG_BENCH_QUICK") == "1"


def cases_of(config, workload: str) -> list[report.Case]:
    quick = quick_mode(config)
    return [case for case in report.cases(quick) + report.gram_fit_cases(quick) if case.workload == workload]


def problem(case: report.Case):
    """The case's data, kept while consecutive tests (one per provider) use it."""
    if case not in _DATA:
        _DATA.clear()
        _DATA[case] = report.make_problem(case)
    return _DATA[case]


def run_case(benchmark, provider: str, case: report.Case, roofline: dict, rounds: int | None = None,
             quick: bool = False) -> None:
    """Time one provider on one case; skip with the provider's reason if it cannot run here.

    Full mode: pytest-benchmark's calibration (or ``rounds`` for slow workloads); quick mode: a few rounds.
    """
    benchmark.group = case.label
    try:
        fn, note = report.prepare(provider, case, problem(case))
    except report.Unavailable as reason:
        pytest.skip(f"{provider}: {reason}")
    benchmark.extra_info.update({"provider": provider, "note": note, "bytes": case.nbytes, "unit": case.unit,
                                 "roofline GB/s": round(roofline["GB/s"], 2)})
    if rounds is None and quick:  # about 0.15 s per benchmark: a smoke run with rough ratios
        t0 = time.perf_counter()
        fn()
        rounds = max(3, min(200, int(0.15 / max(time.perf_counter() - t0, 1e-6))))
    if rounds is None:
        benchmark(fn)
    else:
        benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    gbs = case.nbytes / stats.min / 1e9
    if case.workload in report.STREAMING:
        benchmark.extra_info.update({"GB/s": round(gbs, 2), "roofline fraction": round(gbs / roofline["GB/s"], 3)})
    SUMMARY.append({"case": case, "provider": provider, "min": stats.min, "GB/s": gbs,
                     "roofline": roofline["GB/s"]})
