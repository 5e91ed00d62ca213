"""Code is imported by module name only: no file in bench/, tests/, demo/, lab/ or hack/ edits
sys.path or loads a module from a file path; the benchmarks, the demo and the shared package
(onion_lab) never import the tests, and the product (operator/, router/) imports neither. What the
tests, the benchmarks and the demo share is onion_lab, installed by the root pyproject.toml.

A child process's PYTHONPATH is set only where CHILD_PYTHONPATH says why (the A/B benchmarks run
another checkout's code). Allowed, as no path loading: `python -m tests.support.fake_tgi` started
as a process by the router benchmarks in the checkout's root (the test double stays under
tests/), and tests/integration/test_readme.py executing the README's code blocks (documentation,
not a module).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from onion_lab.paths import REPO

FOLDERS = ("bench", "tests", "demo", "lab", "hack")
# Names whose only use is to load code from a path or to put a directory on sys.path.
BY_PATH = {
    "spec_from_file_location": "loads a module from a file path",
    "SourceFileLoader": "loads a module from a file path",
    "SourcelessFileLoader": "loads a module from a file path",
    "run_path": "runs a file by its path (runpy.run_path)",
    "load_source": "loads a module from a file path (imp.load_source)",
    "addsitedir": "adds a directory to sys.path (site.addsitedir)",
}
SYS_PATH_EDITS = {"insert", "append", "extend", "remove", "pop", "clear", "__setitem__"}
# Files that run another checkout's code in a child process, through its PYTHONPATH.
CHILD_PYTHONPATH = {
    "lab/onion_lab/operator.py": "OperatorProcess(pythonpath=...) runs another checkout's "
    "operator, for bench/scale.py --operator-source (the code before a change, side by side)",
    "bench/router_ab.py": "runs the router of another checkout (--source) beside this one's",
    "bench/router_instructions.py": "counts the instructions of another checkout's router "
    "(--source) as of this one's",
}


def python_files() -> list[Path]:
    return sorted(
        path
        for folder in FOLDERS
        for path in (REPO / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def _is_sys_path(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def _edits_sys_path(target: ast.AST) -> bool:
    """An assignment or deletion target that is sys.path or an item or slice of it."""
    return _is_sys_path(target) or (
        isinstance(target, ast.Subscript) and _is_sys_path(target.value)
    )


def offences(source: str) -> list[str]:
    """Every place in `source` that edits sys.path or loads code by path, as 'line N: what'."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Attribute) and node.attr in BY_PATH:
            found.append((line, f"{node.attr}: {BY_PATH[node.attr]}"))
        elif isinstance(node, ast.Name) and node.id in BY_PATH:
            found.append((line, f"{node.id}: {BY_PATH[node.id]}"))
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in BY_PATH:
                    found.append((line, f"imports {alias.name}: {BY_PATH[alias.name]}"))
                if node.module == "sys" and alias.name == "path":
                    found.append((line, "imports sys.path (to edit it)"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SYS_PATH_EDITS
            and _is_sys_path(node.func.value)
        ):
            found.append((line, f"sys.path.{node.func.attr}(...)"))
        elif isinstance(node, ast.Assign | ast.Delete) and any(
            _edits_sys_path(t) for t in node.targets
        ):
            found.append((line, "assigns to or deletes from sys.path"))
        elif isinstance(node, ast.AugAssign | ast.AnnAssign) and _edits_sys_path(node.target):
            found.append((line, "assigns to sys.path"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def imports_of_tests(source: str, packages: tuple[str, ...] = ("tests",)) -> list[str]:
    """Every import of the `tests` package (or of `packages`) in `source`, as 'line N: module'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"line {node.lineno}: {n}" for n in names if n.split(".")[0] in packages]
    return found


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", python_files(), ids=relative)
def test_no_sys_path_edits_and_no_loading_by_path(path: Path) -> None:
    assert offences(path.read_text()) == [], relative(path)


def test_benchmarks_the_demo_and_the_shared_package_never_import_the_tests() -> None:
    found = {
        relative(path): imports
        for path in python_files()
        if path.relative_to(REPO).parts[0] in ("bench", "demo", "lab", "hack")
        if (imports := imports_of_tests(path.read_text()))
    }
    assert found == {}


def test_product_code_imports_neither_the_tests_nor_the_lab() -> None:
    """Test doubles and lab helpers never reach the operator or the router (STYLE.md)."""
    found = {
        relative(path): imports
        for folder in ("operator", "router")
        for path in sorted((REPO / folder).rglob("*.py"))
        if (imports := imports_of_tests(path.read_text(), ("tests", "onion_lab")))
    }
    assert found == {}


def sets_pythonpath(source: str) -> bool:
    """Whether `source` writes PYTHONPATH into an environment: `env["PYTHONPATH"] = ...` or a
    dict `{"PYTHONPATH": ...}`."""
    for node in ast.walk(ast.parse(source)):
        keys = node.keys if isinstance(node, ast.Dict) else []
        if isinstance(node, ast.Subscript):
            keys = [node.slice]
        if any(isinstance(k, ast.Constant) and k.value == "PYTHONPATH" for k in keys):
            return True
    return False


def test_only_the_named_files_set_a_childs_pythonpath() -> None:
    """A stale entry fails too: CHILD_PYTHONPATH names exactly the files that still do it."""
    setting = {relative(path) for path in python_files() if sets_pythonpath(path.read_text())}
    assert setting == set(CHILD_PYTHONPATH)


PLANTED = {
    "import sys\nsys.path.insert(0, 'bench')\n": "sys.path.insert(...)",
    "import sys\nsys.path.append('hack')\n": "sys.path.append(...)",
    "import sys\nsys.path.extend(['hack'])\n": "sys.path.extend(...)",
    "import sys\nsys.path[:0] = ['bench']\n": "assigns to or deletes from sys.path",
    "import sys\nsys.path = ['bench', *sys.path]\n": "assigns to or deletes from sys.path",
    "import sys\nsys.path += ['bench']\n": "assigns to sys.path",
    "from sys import path\npath.insert(0, 'bench')\n": "imports sys.path (to edit it)",
    "import importlib.util\nspec = importlib.util.spec_from_file_location('m', 'bench/m.py')\n": (
        "spec_from_file_location: loads a module from a file path"
    ),
    "from importlib.util import spec_from_file_location\n": (
        "imports spec_from_file_location: loads a module from a file path"
    ),
    "from importlib.machinery import SourceFileLoader\nSourceFileLoader('m', 'm.py')\n": (
        "SourceFileLoader: loads a module from a file path"
    ),
    "import runpy\nrunpy.run_path('bench/scale.py')\n": (
        "run_path: runs a file by its path (runpy.run_path)"
    ),
    "import site\nsite.addsitedir('hack')\n": "addsitedir: adds a directory to sys.path",
}


@pytest.mark.parametrize("source", PLANTED, ids=[s.splitlines()[-1][:40] for s in PLANTED])
def test_a_planted_offence_is_found(source: str) -> None:
    assert any(PLANTED[source] in found for found in offences(source)), offences(source)


def test_what_is_allowed_is_not_flagged() -> None:
    allowed = (
        "import sys\n"
        "sys.meta_path.insert(0, object())\n"  # an import hook (tests/support/without_modules.py)
        "print(sys.path)\n"  # reading it
        "import importlib\nimportlib.import_module('onion_lab.paths')\n"  # by name
        "import subprocess\nsubprocess.run([sys.executable, '-m', 'tests.support.fake_tgi'])\n"
    )
    assert offences(allowed) == []
    assert sets_pythonpath("env = {'PYTHONPATH': 'x'}\n") and sets_pythonpath(
        "env['PYTHONPATH'] = 'x'\n"
    )
    assert imports_of_tests("import tests.support.fake_tgi\nfrom tests.support import chaos\n") == [
        "line 1: tests.support.fake_tgi",
        "line 2: tests.support",
    ]
