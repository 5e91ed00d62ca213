"""The product packages use their dependencies' public APIs only (issue 22): no `_private`
module, name, attribute or keyword argument of a third-party package (huggingface_hub, httpx,
httpx2, the Kubernetes client, kopf, ...), and no assignment into a third-party module (a
global flag flipped at import). An AST check, so that it runs in seconds with the unit tests.

What counts as private: a name with a leading underscore that is not a dunder. An attribute is
ours when some first-party module defines a private name of that spelling (a method, a field
set on `self`, a parameter, a module global); every other private attribute belongs to someone
else's object. Attributes of a third-party module itself are never ours.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Documented public API that happens to start with an underscore (namedtuple's methods).
PUBLIC_UNDERSCORED = frozenset({"_asdict", "_replace", "_make", "_fields", "_field_defaults"})
BY_NAME = frozenset({"getattr", "setattr", "hasattr", "delattr"})


def first_party_roots() -> dict[str, Path]:
    """Every package the root pyproject.toml builds: name -> directory."""
    found = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]
    return {
        package.name: package
        for where in found
        for package in sorted((REPO / where).iterdir())
        if (package / "__init__.py").is_file()
    }


FIRST_PARTY = first_party_roots()
# The product packages: the ones mypy checks in strict mode.
PRODUCT = [FIRST_PARTY[name] for name in PYPROJECT["tool"]["mypy"]["packages"]]


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def third_party(module: str) -> bool:
    top = module.split(".")[0]
    return bool(top) and top not in FIRST_PARTY and top not in sys.stdlib_module_names


def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def sources(roots: Iterable[Path]) -> Iterator[tuple[str, str]]:
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            yield str(path.relative_to(REPO)), path.read_text()


def defined_private_names(trees: Iterable[ast.AST]) -> set[str]:
    """Private names first-party code defines: functions, classes, parameters, the names it
    assigns (module globals, class fields) and the attributes it sets on `self`."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                # `self._x = ...` defines `_x`; `other._x = ...` sets someone else's.
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    names.add(node.attr)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
    return {n for n in names if private(n)}


def third_party_modules(tree: ast.AST) -> dict[str, str]:
    """Local names bound to third-party modules by imports: local name -> module."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if third_party(alias.name):
                    local = alias.asname or alias.name.split(".")[0]
                    bound[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not third_party(node.module):
                continue
            for alias in node.names:
                module = f"{node.module}.{alias.name}"
                if is_module(module):
                    bound[alias.asname or alias.name] = module
    return bound


def attribute_by_name(call: ast.Call) -> str | None:
    """The attribute named in `getattr(obj, "name")` and its kin, when it is a literal."""
    if isinstance(call.func, ast.Name) and call.func.id in BY_NAME and len(call.args) >= 2:
        name = call.args[1]
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            return name.value
    return None


def check(path: str, source: str, ours: set[str]) -> list[Finding]:
    """Uses of third-party private APIs in one module's source; `ours` are the private names
    that first-party code defines."""
    tree = ast.parse(source, path)
    modules = third_party_modules(tree)
    found: list[Finding] = []

    def add(node: ast.AST, what: str) -> None:
        found.append(Finding(path, getattr(node, "lineno", 0), what))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if third_party(alias.name) and any(map(private, alias.name.split("."))):
                    add(node, f"imports the private module {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not third_party(node.module):
                continue
            if any(map(private, node.module.split("."))):
                add(node, f"imports from the private module {node.module}")
            for alias in node.names:
                if private(alias.name):
                    add(node, f"imports the private name {alias.name} from {node.module}")
        elif isinstance(node, ast.Attribute):
            base = node.value.id if isinstance(node.value, ast.Name) else None
            if base in modules and isinstance(node.ctx, ast.Store | ast.Del):
                add(node, f"assigns {node.attr} into the module {modules[base]}")
            elif private(node.attr) and node.attr not in PUBLIC_UNDERSCORED:
                if base in modules:
                    add(node, f"uses {modules[base]}.{node.attr}, a private name")
                elif node.attr not in ours:
                    add(node, f"uses .{node.attr}, a private attribute of another package")
        elif isinstance(node, ast.Call):
            name = attribute_by_name(node)
            if name is not None and private(name) and name not in ours:
                add(node, f"uses .{name}, a private attribute of another package")
            for keyword in node.keywords:
                if keyword.arg and private(keyword.arg) and keyword.arg not in ours:
                    add(keyword.value, f"passes the private keyword argument {keyword.arg}")
    return found


def check_all(roots: Iterable[Path]) -> list[Finding]:
    everything = list(sources(FIRST_PARTY.values()))
    ours = defined_private_names(ast.parse(text, path) for path, text in everything)
    return [finding for path, text in sources(roots) for finding in check(path, text, ours)]


# --- the check catches what it is for ----------------------------------------------------


PLANTED = {
    "a private module of the hub": (
        "from huggingface_hub.inference._providers import get_provider_helper\n",
        "imports from the private module huggingface_hub.inference._providers",
    ),
    "import of a private module": (
        "import httpx2._client\n",
        "imports the private module httpx2._client",
    ),
    "a private name": (
        "from httpx2 import _utils\n",
        "imports the private name _utils from httpx2",
    ),
    "a private attribute of a client": (
        "async def f(client):\n    return await client._inner_post(None)\n",
        "uses ._inner_post, a private attribute of another package",
    ),
    "replacing a client's internals": (
        "def f(client, pool):\n    client._async_client = pool\n",
        "uses ._async_client, a private attribute of another package",
    ),
    "an inherited private method": (
        "import httpx2\n\nclass C(httpx2.AsyncClient):\n"
        "    def f(self, url):\n        return self._transport_for_url(url)\n",
        "uses ._transport_for_url, a private attribute of another package",
    ),
    "a private keyword argument": (
        "async def f(api):\n    await api.list_pods('ns', _return_http_data_only=False)\n",
        "passes the private keyword argument _return_http_data_only",
    ),
    "a global flag set at import": (
        "from huggingface_hub import constants as hub_constants\n"
        "hub_constants.HF_HUB_DISABLE_TELEMETRY = True\n",
        "assigns HF_HUB_DISABLE_TELEMETRY into the module huggingface_hub.constants",
    ),
    "a private attribute by name": (
        "def f(site):\n    return getattr(site, '_server', None)\n",
        "uses ._server, a private attribute of another package",
    ),
    "a private name of a third-party module": (
        "import httpx2\nx = httpx2._config\n",
        "uses httpx2._config, a private name",
    ),
}


@pytest.mark.parametrize(("source", "what"), PLANTED.values(), ids=PLANTED.keys())
def test_the_check_finds_a_planted_use_of_a_private_api(source: str, what: str) -> None:
    assert [f.what for f in check("planted.py", source, ours=set())] == [what]


def test_the_check_lets_public_and_first_party_code_be() -> None:
    source = (
        "import collections\nimport httpx2\n"
        "from onion_router.protocol.body import no_nulls\n\n"
        "class Mine:\n    def __init__(self):\n        self._state = 1\n\n"
        "    def _step(self, other):\n        return other._state + self.__class__.__name__\n\n"
        "def f(point: collections.namedtuple):\n"
        "    httpx2.AsyncClient(timeout=1).__aenter__\n"
        "    return point._replace(x=1), Mine()._step(Mine()), no_nulls(_private=1)\n"
    )
    ours = defined_private_names([ast.parse(source)]) | {"_private"}
    assert check("fine.py", source, ours) == []


def test_setting_a_private_attribute_on_another_object_defines_nothing() -> None:
    source = "def f(client, pool):\n    client._async_client = pool\n"
    ours = defined_private_names([ast.parse(source)])
    assert ours == set()
    assert [f.what for f in check("x.py", source, ours)] == [
        "uses ._async_client, a private attribute of another package"
    ]


# --- the product ---------------------------------------------------------------------------


def test_the_product_packages_use_public_apis_only() -> None:
    assert {FIRST_PARTY["onion_router"], FIRST_PARTY["onion_operator"]} <= set(PRODUCT)
    assert [str(f) for f in check_all(PRODUCT)] == []
