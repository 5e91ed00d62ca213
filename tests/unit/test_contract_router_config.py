"""The contract between the parts: what the operator renders is what the router reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from onion_operator import constants as c
from onion_operator.manifests import build_router_config
from onion_operator.spec import parse_spec
from onion_router.config import Escalation, parse_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def onions(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Onion"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_rendered_router_config_of_every_example_parses_in_the_router(path: Path) -> None:
    docs = onions(path)
    assert docs, f"{path.name} has no Onion"
    for doc in docs:
        name = doc["metadata"]["name"]
        spec = parse_spec(name, doc["spec"])
        rendered = build_router_config(spec, "team-a", name)
        config = parse_config(yaml.safe_load(yaml.safe_dump(rendered)))
        assert [t.name for t in config.tiers] == [c.CORE, *(layer.name for layer in spec.layers)]
        assert config.kubernetes.enabled and config.kubernetes.onion == name
        for tier, layer in zip(config.tiers[1:], spec.layers, strict=True):
            assert tier.managed == layer.managed
            assert tier.lease == (c.lease_name(name, layer.name) if layer.managed else None)


def test_self_policy_tool_call_reaches_the_router() -> None:
    def rendered(escalation: dict[str, str]) -> Escalation:
        spec = parse_spec("o", {"core": {"model": "m", "escalation": escalation}})
        data = yaml.safe_load(yaml.safe_dump(build_router_config(spec, "team-a", "o")))
        return parse_config(data).tiers[0].escalation

    tool = rendered({"policy": "self", "via": "toolCall", "toolName": "ask_expert"})
    assert (tool.policy, tool.via, tool.tool_name) == ("self", "toolCall", "ask_expert")
    plain = rendered({"policy": "self"})
    assert (plain.via, plain.tool_name) == ("sentinel", "escalate")


def test_the_default_hpa_metric_is_the_one_the_router_exports() -> None:
    from onion_router.metrics import LAYER_REQUESTS

    assert c.LAYER_REQUESTS_METRIC == LAYER_REQUESTS
