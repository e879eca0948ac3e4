"""Regenerate the README's performance table from a ``linreg report`` run.

    linreg report --out benchmarks/results/NAME           # a run (full, or --targets)
    python scripts/readme_performance.py benchmarks/results/NAME/report.md

The block between the README's ``performance-table`` markers is replaced by the run's
device lines and its "Targets" table, verbatim, with the command that made it; so the
table is always one run's figures, every ratio timed in that run. ``--check`` writes
nothing and exits 1 if the README's block differs from what the named report gives
(``tests/frontends/test_readme_performance.py`` runs it on the report the README cites).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

START = "<!-- performance-table:start -->"
END = "<!-- performance-table:end -->"
#: The report's header lines the block repeats (the run's machine and its roofline).
HEADER_KEYS = ("Mode", "CPU", "GPU", "Read bandwidth")


def block(report_path: Path, root: Path) -> str:
    """The README block for ``report_path`` (a report.md written by ``linreg report``)."""
    text = report_path.read_text()
    header = [line for line in text.splitlines() if any(line.startswith(f"- {key}") for key in HEADER_KEYS)]
    match = re.search(r"^## Targets\n\n(\|.*?)\n\n", text, flags=re.S | re.M)
    if match is None or not header:
        raise SystemExit(f"{report_path}: no '## Targets' table or header lines; expected a report.md "
                         "written by `linreg report`")
    cited = report_path.resolve().relative_to(root.resolve()).as_posix()
    return "\n".join([
        START,
        f"From `{cited}`, regenerated with "
        f"`python scripts/readme_performance.py {cited}`:",
        "",
        *header,
        "",
        match.group(1),
        END,
    ])


def replace(readme: str, new_block: str, readme_path: Path) -> str:
    if readme.count(START) != 1 or readme.count(END) != 1:
        raise SystemExit(f"{readme_path}: expected one {START} and one {END} marker")
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    return head + new_block + tail


def cited_report(readme: str) -> str:
    """The report path the README's block names."""
    match = re.search(re.escape(START) + r"\nFrom `([^`]+)`", readme)
    if match is None:
        raise SystemExit("the README's performance block names no report")
    return match.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", nargs="?", help="report.md of the run (default with --check: the one cited)")
    parser.add_argument("--readme", default=None, help="the README to update (default: the repository's)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the block is not the report's")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    readme_path = Path(args.readme) if args.readme else root / "README.md"
    readme = readme_path.read_text()
    report = Path(args.report) if args.report else root / cited_report(readme)
    updated = replace(readme, block(report, root), readme_path)
    if args.check:
        if updated != readme:
            print(f"{readme_path}: the performance table is not {report}'s; rerun without --check", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(updated)
    print(f"{readme_path}: performance table from {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
