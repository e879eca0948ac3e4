"""The README's performance table is one `linreg report` run's Targets table (scripts/readme_performance.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "readme_performance.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def test_the_readme_table_is_the_cited_reports():
    """Not a copy that drifts: regenerating from the report the README names changes nothing."""
    result = run("--check")
    assert result.returncode == 0, result.stderr
    readme = (ROOT / "README.md").read_text()
    cited = readme.split("<!-- performance-table:start -->\nFrom `")[1].split("`")[0]
    report = (ROOT / cited).read_text()
    targets = report.split("## Targets\n\n")[1].split("\n\n")[0]
    assert targets.startswith("| target | goal | measured |") and targets in readme


def test_a_stale_block_is_replaced_and_check_fails_before(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- performance-table:start -->\nold figures\n<!-- performance-table:end -->\ntail\n")
    report = "benchmarks/results/full-2026-12-01-night/report.md"
    assert run(report, "--readme", str(readme), "--check").returncode == 1
    assert run(report, "--readme", str(readme)).returncode == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- performance-table:start -->\nFrom `" + report) and text.endswith("tail\n")
    assert "old figures" not in text and "| W1 fit vs torch seed loop |" in text
    assert run(report, "--readme", str(readme), "--check").returncode == 0


@pytest.mark.parametrize("content, message", [
    ("no markers here\n", "expected one"),
    ("<!-- performance-table:start -->\n<!-- performance-table:start -->\n<!-- performance-table:end -->\n",
     "expected one"),
])
def test_a_readme_without_one_pair_of_markers_is_an_error(tmp_path, content, message):
    readme = tmp_path / "README.md"
    readme.write_text(content)
    result = run("benchmarks/results/full-2026-12-01-night/report.md", "--readme", str(readme))
    assert result.returncode != 0 and message in result.stderr


def test_a_file_that_is_no_report_is_an_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- performance-table:start -->\n<!-- performance-table:end -->\n")
    result = run("README.md", "--readme", str(readme))
    assert result.returncode != 0 and "no '## Targets' table" in result.stderr
