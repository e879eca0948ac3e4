"""The installed layout: only ``linreg`` on the import path, and no import-time cycles between its modules."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import linreg

PACKAGE = Path(linreg.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_time_imports(path: Path, module: str) -> set[str]:
    """Modules imported when ``module`` is imported: module-level and class-body imports, not function bodies."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules imported by name
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            elif isinstance(node, ast.If | ast.Try):
                test = getattr(node, "test", None)
                if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                    continue
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return found


def _graph() -> dict[str, set[str]]:
    files = {}
    for folder, _, names in os.walk(PACKAGE, followlinks=True):  # linreg/kernels is the repository's kernels/
        for name in names:
            if name.endswith(".py"):
                files[_module_name(Path(folder) / name)] = Path(folder) / name
    graph = {}
    for module, path in files.items():
        # The bare package is excluded as a target: a submodule importing ``linreg`` while it initialises is
        # how Python packages work; what matters are cycles between modules.
        graph[module] = {m for m in _import_time_imports(path, module) if m in files and m not in ("linreg", module)}
    return graph


def test_the_kernels_are_inside_linreg():
    assert (PACKAGE / "kernels" / "cpu.py").is_file()
    assert "linreg.kernels.cpu" in _graph()


def test_no_module_imports_another_that_imports_it_back_at_import_time():
    graph = _graph()
    cycles = []

    def walk(node, stack, on_stack, done):
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in done:
                walk(nxt, stack, on_stack, done)
        on_stack.discard(node)
        stack.pop()
        done.add(node)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            walk(module, [], set(), done)
    assert not cycles, "import-time cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    """The check above can fail: two modules importing each other at module level are reported."""
    (tmp_path / "a.py").write_text("from linreg import b\n")
    (tmp_path / "b.py").write_text("import linreg.a\n\ndef later():\n    import linreg.c\n")
    assert _import_time_imports(tmp_path / "a.py", "linreg.a") >= {"linreg.b"}
    assert _import_time_imports(tmp_path / "b.py", "linreg.b") == {"linreg.a"}


def test_no_top_level_kernels_package_outside_the_repository(tmp_path):
    """``pip install`` puts only ``linreg`` on the path: ``import kernels`` must fail outside the checkout."""
    code = ("import importlib.util, sys\n"
            "import linreg.kernels.cpu\n"
            "sys.exit(0 if importlib.util.find_spec('kernels') is None else 1)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr or "a top-level package named 'kernels' is importable"


def test_the_readme_options_table_is_the_declared_one():
    """The README's options table is generated from linreg.options.OPTIONS (python -m linreg.options)."""
    from linreg import options

    readme = (PACKAGE.parent / "README.md").read_text()
    begin, end = "<!-- options:begin -->\n", "\n<!-- options:end -->"
    assert readme[readme.index(begin) + len(begin):readme.index(end)] == options.markdown_table()


def test_every_option_reaches_the_estimator_the_cli_and_the_checkpoint_rules():
    import argparse
    import inspect

    from linreg import LinearRegressor, checkpoint, options

    assert list(inspect.signature(LinearRegressor).parameters) == [o.name for o in options.OPTIONS]
    parser = argparse.ArgumentParser()
    options.add_flags(parser)
    args = parser.parse_args([])
    flagged = options.params_from_flags(args)
    assert {name: value for name, value in flagged.items()} == {
        o.name: o.default for o in options.OPTIONS if o.flag is not None}
    assert checkpoint.FREE_PARAMS == {o.name for o in options.OPTIONS if o.resumable}
