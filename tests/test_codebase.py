"""The code's own shape, kept: short functions, no reaching into another module's privates, a CLI
that starts without torch."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "charlm"
MAX_FUNCTION_LINES = 60  # a screen: a function is read without scrolling


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE.parent), ast.parse(path.read_text(encoding="utf-8"))


def test_no_function_is_longer_than_a_screen():
    long = [f"{path}::{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, tree in _modules() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "split these: " + ", ".join(long)


def test_no_module_imports_another_modules_private_names():
    private = [f"{path}: from {node.module} import {alias.name}"
               for path, tree in _modules() for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("charlm")
               for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not private


def test_the_command_line_starts_without_torch():
    code = "import sys, charlm.cli; print(sorted(m for m in ('torch', 'numpy', 'optuna') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_an_editable_install_builds_without_a_warning(tmp_path, monkeypatch, capfd):
    """`make install` installs charlm in editable mode: its build says nothing the user must read, and
    the package carries its corpus registry."""
    import warnings
    import zipfile

    build = __import__("pytest").importorskip("hatchling.build")
    monkeypatch.chdir(PACKAGE.parent)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        editable = tmp_path / "editable" / build.build_editable(str(tmp_path / "editable"))
        wheel = tmp_path / "wheel" / build.build_wheel(str(tmp_path / "wheel"))
    assert not caught and not capfd.readouterr().err
    assert "_charlm.pth" in zipfile.ZipFile(editable).namelist()
    names = zipfile.ZipFile(wheel).namelist()
    assert "charlm/corpora/tinyshakespeare.yaml" in names and all(n.startswith("charlm") for n in names)
