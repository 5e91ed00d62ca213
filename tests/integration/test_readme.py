"""The README's client examples, run as written against a local router (static mode, in front of
TGI-protocol test servers), so the first code a newcomer copies works."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator

import pytest

from onion_lab.paths import REPO
from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import RouterServer, router_layer

EXAMPLE_URL = "http://localhost:8080"


def readme_examples() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [b for b in blocks if EXAMPLE_URL in b]


@pytest.fixture
def router() -> Iterator[RouterServer]:
    core = FakeTGI(Script(tokens=["Paris", "."], logprob=-0.05), name="core").start()
    expert = FakeTGI(Script(tokens=["A", " join", " combines", " rows"]), name="expert").start()
    conf = {"policy": "confidence", "threshold": -0.8}
    settings = {
        "layers": [
            router_layer("core", core.url, escalation=conf),
            router_layer("expert", expert.url),
        ]
    }
    try:
        with RouterServer(settings) as server:
            yield server
    finally:
        core.stop()
        expert.stop()


def test_the_readme_has_the_client_examples() -> None:
    assert len(readme_examples()) == 2


@pytest.mark.parametrize("index", [0, 1], ids=["openai", "huggingface_hub"])
def test_a_readme_example_runs_as_written(router: RouterServer, index: int) -> None:
    code = readme_examples()[index].replace(EXAMPLE_URL, router.url)
    out = io.StringIO()
    names: dict[str, object] = {}
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README.md example {index}", "exec"), names)
    finally:  # the examples' clients hold connections: close them here, not in a later test
        for value in names.values():
            close = getattr(value, "close", None)
            if callable(close) and not isinstance(value, type):
                close()
    printed = out.getvalue()
    if index == 0:
        assert printed.startswith("Paris.\ncore core\n")
        assert printed.endswith("A join combines rows")
    else:
        assert printed.strip() == "Paris."
