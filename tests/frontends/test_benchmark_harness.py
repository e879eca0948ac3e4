"""The benchmark harness (benchmarks/harness.py) in quick mode on small sizes: files and contents, no timings."""

import argparse
import json

import harness as report
import numpy as np
import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# One tiny case per workload (the quick mode's own sizes take longer than a unit test should).
TINY = [report.W1_CASE, report.Case("W2", 1_000, 32, 1, "float32"), report.Case("W2", 20_000, 32, 1, "float32"),
        report.Case("W2", 20_000, 5, 1, "float32"), report.Case("W3", 20_000, 32, 1, "float32"),
        report.Case("W4", 5_000, 64, 8, "float32"), report.Case("W5", 5_000, 32, 1, "float64"),
        report.Case("W6", 5_000, 8, 1, "float64")]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = report.run_report(out, quick=True, providers=("linreg-cpu", "linreg-cuda", "numpy"), cold=False,
                              budget_s=0.01, log=lambda line: None, case_list=TINY)
    return out, paths


def test_writes_markdown_json_and_plots(written):
    out, paths = written
    for name in ("report.md", "results.json", "time_per_epoch.png", "bandwidth.png", "roofline_by_width.png"):
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC
    assert set(paths) >= {"md", "json", "time_per_epoch", "bandwidth"}


def test_json_names_device_roofline_and_every_case(written):
    out, _ = written
    data = json.loads((out / "results.json").read_text())
    assert data["quick"] is True
    device = data["device"]
    assert device["cpu"] and device["numba threads"] >= 1 and device["threading layer"]
    assert device["gpu"]  # a GPU name, or "no GPU (reason)"
    assert {"numpy", "numba", "linreg", "torch"} <= set(device["versions"])
    assert data["read bandwidth"]["GB/s"] > 0
    labels = {r["case"]["label"] for r in data["results"]}
    assert labels == {c.label for c in TINY}
    ok = [r for r in data["results"] if r["status"] == "ok"]
    assert ok and all(r["min_s"] > 0 and r["GB/s"] > 0 for r in ok)
    assert all(r["note"] for r in data["results"] if r["status"] == "skipped")  # every skip says why
    assert {t["target"] for t in data["targets"]} >= {"W1 fit vs NumPy loop", "W5 exact solve vs scikit-learn"}


def test_markdown_has_device_targets_tables_and_plots(written):
    out, _ = written
    text = (out / "report.md").read_text()
    for needle in ("CPU:", "GPU:", "threading layer", "Read bandwidth", "## Targets", "### W1", "### W2",
                   "linreg-cpu", "![", "bandwidth.png", "roofline_by_width.png",
                   "## W2/W4: linreg-cpu per case", "| vs numpy |"):
        assert needle in text, needle
    summary = text.split("## W2/W4: linreg-cpu per case")[1].split("##")[0]
    assert "W2 20000x32->1 float32" in summary and "W4 5000x64->8 float32" in summary  # one row per case


def test_quick_cases_are_small_and_cover_every_workload():
    quick = report.cases(quick=True)
    assert {c.workload for c in quick} == {"W1", "W2", "W3", "W4", "W5", "W6"}
    assert max(c.nbytes for c in quick) <= 64 << 20


def test_cases_cover_the_issue_workloads():
    full = report.cases(quick=False)
    assert {c.workload for c in full} == {"W1", "W2", "W3", "W4", "W5", "W6"}
    assert report.W2_TARGET in full and report.W1_CASE in full
    sweep = [c for c in full if c.workload == "W2"]
    assert min(c.n_samples for c in sweep) == 1_000 and max(c.n_samples for c in sweep) == 4_000_000
    assert {c.n_features for c in sweep} == {5, 32, 128, 256} and {c.n_outputs for c in sweep} == {1, 8, 16}
    for case, _ in report.WIDE_TARGETS:
        assert case in full, case.label
    for case in report.SMALL_TARGETS:
        assert case in full, case.label
    assert {c.dtype for c in sweep} == {"float32", "float64"}


def test_prepare_runs_one_epoch_and_skips_with_a_reason():
    case = report.Case("W2", 300, 4, 2, "float64")
    X, Y = report.make_problem(case)
    assert X.shape == (300, 4) and Y.shape == (300, 2) and X.dtype == Y.dtype == np.float64
    fn, note = report.prepare("linreg-cpu", case, (X, Y))
    fn()
    assert "gd" in note
    with pytest.raises(report.Unavailable, match="scikit-learn"):
        report.prepare("sklearn", case, (X, Y))
    with pytest.raises(ValueError, match="provider"):
        report.prepare("fortran", case, (X, Y))


def test_report_parser_plugs_into_a_cli():
    parser = argparse.ArgumentParser(prog="linreg")
    report.add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", "--quick", "--out", "somewhere", "--providers", "linreg-cpu,numpy"])
    assert args.quick and args.out == "somewhere" and args.handler is report._handle


def test_cold_start_measures_a_new_process():
    cold = report.cold_start(compile_cost=False, repeats=1)
    warm = cold["warm"]
    assert 0 < warm["import"] <= warm["import+fit"] <= warm["process"]
    assert warm["torch imported"] is False


def test_linreg_report_runs_the_checkout_harness(monkeypatch):
    """``linreg report ARGS`` hands ARGS to benchmarks/harness.py's main (the harness is not installed)."""
    from linreg import cli

    seen = []
    monkeypatch.setattr(report, "main", lambda argv: seen.append(argv) or 0)
    assert cli.benchmark_harness() is report
    assert cli.main(["report", "--quick", "--out", "somewhere"]) == 0
    assert seen == [["--quick", "--out", "somewhere"]]


def test_targets_judge_each_empty_cache_first_run_against_its_own_goal():
    """Issue 11's three empty-cache goals: seed 000's fit (import to result), the defaults' fit and
    ``linreg train`` (whole processes); a missing measurement adds no row."""
    run = {"import": 0.05, "import+fit": 0.2, "process": 0.3, "torch imported": False, "numba imported": False}
    cold = {"warm": run, "warm runs": [run], "warm, no scipy": run,
            "compile": {**run, "import+fit": 4.0, "process": 4.2},
            "compile, defaults": {**run, "import+fit": 9.5, "process": 10.5},
            "compile, linreg train": {"process": 14.0}}
    rows = {r["target"]: r for r in report.targets([], 40.0, cold)}
    seed = rows["cold start: import + first fit, empty kernel cache"]
    defaults = rows["cold start: standardize=True, lr='auto' fit, empty kernel cache, whole process"]
    train = rows["cold start: `linreg train` (both demo runs), empty kernel cache, whole process"]
    assert (seed["value"], seed["goal"], seed["met"]) == (4.0, report.COMPILE_START_GOAL_S, True)
    assert (defaults["value"], defaults["goal"], defaults["met"]) == (10.5, report.COMPILE_DEFAULTS_GOAL_S, False)
    assert (train["value"], train["goal"], train["met"]) == (14.0, report.COMPILE_TRAIN_GOAL_S, True)
    del cold["compile, defaults"], cold["compile, linreg train"]
    assert not any("whole process" in r["target"] for r in report.targets([], 40.0, cold))
