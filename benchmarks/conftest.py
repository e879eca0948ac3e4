"""pytest-benchmark suites W1..W6 against torch, NumPy, scikit-learn and statsmodels: never timed assertions.

Every benchmark group is one workload configuration with one benchmark per
provider, so pytest-benchmark's relative column is the ratio against the peers
timed in the same run. Each streaming benchmark records the bytes it reads and
its achieved GB/s in ``extra_info``, next to the read bandwidth measured at the
start of the same session (the roofline) and the fraction of it reached. The
session ends with a summary of those figures and the speedup over the seeds'
torch loop.

    pytest benchmarks                          # full sizes (a few minutes)
    pytest benchmarks --quick                  # small sizes (or LINREG_BENCH_QUICK=1)
    pytest benchmarks -k W1 --benchmark-autosave
    pytest benchmarks -k W1 --benchmark-compare

The providers, problem sizes and data are those of ``harness`` (benchmarks/harness.py), which
runs the same sweep without pytest (``harness`` (benchmarks/harness.py)).
"""

from __future__ import annotations

import harness as report
import pytest
from bench import SUMMARY, cases_of, quick_mode, run_case


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="benchmark small sizes only (also LINREG_BENCH_QUICK=1)")


def pytest_generate_tests(metafunc):
    """``case`` is parametrised from harness.cases for the module's WORKLOAD; ``provider`` over all."""
    if "case" in metafunc.fixturenames:
        selected = cases_of(metafunc.config, metafunc.module.WORKLOAD)
        metafunc.parametrize("case", selected, ids=[c.label.split(" ", 1)[1].replace(" ", "-") for c in selected])
    if "provider" in metafunc.fixturenames:
        metafunc.parametrize("provider", report.PROVIDERS)


@pytest.fixture(scope="session")
def roofline(request) -> dict:
    """The machine's read bandwidth, measured once at the start of this session."""
    nbytes = (64 if quick_mode(request.config) else 512) << 20
    return report.measure_read_bandwidth(nbytes, budget_s=1.0)


@pytest.fixture
def timed(benchmark, roofline, request):
    """``timed(provider, case, rounds=None)``: run_case with this session's roofline and mode."""
    quick = quick_mode(request.config)
    return lambda provider, case, rounds=None: run_case(benchmark, provider, case, roofline, rounds, quick)


def pytest_terminal_summary(terminalreporter):
    if not SUMMARY:
        return
    write = terminalreporter.write_line
    roof = SUMMARY[0]["roofline"]
    terminalreporter.section(f"linreg: ratios within this run (read bandwidth {roof:.1f} GB/s)")
    write(f"{'case':34s} {'provider':11s} {'best':>11s} {'GB/s':>7s} {'roofline':>8s} {'vs torch-seed':>13s}")
    for row in SUMMARY:
        case = row["case"]
        base = next((r for r in SUMMARY if r["case"] == case and r["provider"] == "torch-seed"), None)
        peer = {"W5": ("sklearn", " (sk)"), "W6": ("statsmodels", " (sm)")}.get(case.workload)
        if peer:
            base = next((r for r in SUMMARY if r["case"] == case and r["provider"] == peer[0]), None)
        speed = f"{base['min'] / row['min']:.1f}x" + (peer[1] if peer else "") if base else ""
        gbs, fraction = (f"{row['GB/s']:7.1f}", f"{row['GB/s'] / roof:8.0%}") if case.workload in report.STREAMING \
            else ("", "")
        write(f"{case.label:34s} {row['provider']:11s} {row['min'] * 1e3:9.3f}ms {gbs:>7s} {fraction:>8s} {speed:>13s}")
