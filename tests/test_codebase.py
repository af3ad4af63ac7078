"""The code's own shape, kept: short functions, a tree that shows the architecture, no import circle,
no reaching into another module's privates, a CLI that starts without torch, docs that name only
paths that exist."""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "charlm"
MAX_FUNCTION_LINES = 60  # a screen: a function is read without scrolling
ENTRY_POINTS = {"__init__.py", "__main__.py", "api.py"}  # charlm.load, python -m charlm, LanguageModel
MAX_TOP_LEVEL_MODULES = 8  # beside the entry points and the packages: the rest lives in a package per concern


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE.parent), ast.parse(path.read_text(encoding="utf-8"))


def _module_name(path: Path) -> str:
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Which charlm modules each charlm module imports: every import statement, at the top, inside a
    function or under TYPE_CHECKING alike. ``from a.b import c`` counts as importing ``a.b.c`` where
    that is a module, else ``a.b``. A package's own ``__init__``, which Python runs before any of its
    modules, counts only where a module imports a name from it."""
    trees = {_module_name(path): tree for path, tree in _modules()}
    graph: dict[str, set[str]] = {}
    for name, tree in trees.items():
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in trees else node.module
                            for alias in node.names}
        graph[name] = {target for target in targets if target in trees and target != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            if group:
                found.append(sorted([node, *group]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_modules_import_each_other_in_a_circle():
    found = circles(import_graph())
    assert not found, "break these circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_packages_import_each_other_in_one_direction_only():
    """data and model below train, train below api, the commands on top: no package leans on one above it."""
    def concern(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2])

    graph: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        graph.setdefault(concern(module), set()).update(concern(t) for t in targets if concern(t) != concern(module))
    found = circles(graph)
    assert not found, "these packages lean on each other: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_circle_finder_finds_a_circle_of_three():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_top_level_holds_the_entry_points_and_few_modules_beside_the_packages():
    modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ENTRY_POINTS)
    packages = [p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, f"move some of these into a package: {modules}"
    undescribed = [p.name for p in packages if ast.get_docstring(ast.parse((p / "__init__.py").read_text())) is None]
    assert not undescribed, f"say in the package's __init__ docstring what it offers: {undescribed}"


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


def test_no_module_reaches_into_an_imported_modules_private_names():
    """``from charlm.x import y`` (a module) then ``y._name``: the same reach, one step later."""
    modules = {_module_name(path) for path, _ in _modules()}
    reached = []
    for path, tree in _modules():
        aliases = {alias.asname or alias.name: f"{node.module}.{alias.name}" for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("charlm")
                   for alias in node.names if f"{node.module}.{alias.name}" in modules}
        reached += [f"{path}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
                    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not reached


def test_the_command_line_starts_without_torch():
    code = "import sys, charlm.cli; print(sorted(m for m in ('torch', 'numpy', 'optuna') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_training_api_keeps_its_path_and_loads_torch_only_when_used():
    """README's ``from charlm.train import plan, run, session`` and ``charlm.train.train``: charlm.train is a
    package whose parts (the run directory, signals) the sweep scheduler imports without torch."""
    code = ("import sys, charlm.train, charlm.train.rundir, charlm.train.signals; before = 'torch' in sys.modules;"
            " from charlm.train import TrainRequest, TrainResult, fit, plan, run, session, train;"
            " from charlm.train import loop; assert train is loop.train and plan is charlm.train.plan;"
            " print(before, 'torch' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.split() == ["False", "True"]


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


DOCS = ["README.md", "CONTRIBUTING.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
PATH = re.compile(r"(?<![\w./-])(?:charlm|tests|bench|configs|docs|examples)/[\w./*-]*\w(?:::\w+\*?)?")
DOTTED = re.compile(r"(?<![\w./])charlm(?:\.[A-Za-z_]\w*)+")


def _named_in_docs() -> list[tuple[str, str]]:
    """(document, what it names) for every repository path and ``charlm.`` name in the docs and in the
    code's own docstrings and comments."""
    sources = DOCS + sorted(str(p.relative_to(ROOT)) for p in [*PACKAGE.rglob("*.py"), *(ROOT / "bench").glob("*.py")])
    return [(doc, match.group(0)) for doc in sources
            for pattern in (PATH, DOTTED) for match in pattern.finditer((ROOT / doc).read_text(encoding="utf-8"))]


def _exists(named: str) -> bool:
    if not named.partition("/")[2] and named.startswith("charlm."):
        return _resolves(named)
    path, _, test = named.partition("::")
    if re.search(r"\b[A-Z]{2,}\b", path):  # a placeholder: bench/results/serve-DATE.json
        return True
    if not test:
        return any(ROOT.glob(path))
    return any(f"def {test.rstrip('*')}" in p.read_text(encoding="utf-8") for p in ROOT.glob(path))


def _resolves(dotted: str) -> bool:
    """``charlm.a.b.name.attr``: the longest prefix that imports, then attributes from there."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        try:
            for attr in parts[cut:]:
                found = getattr(found, attr)
        except AttributeError:
            return False
        return True
    return False


def test_every_path_and_name_the_docs_give_exists():
    missing = sorted({f"{doc}: {named}" for doc, named in _named_in_docs() if not _exists(named)})
    assert not missing, "fix these references: " + "; ".join(missing)
