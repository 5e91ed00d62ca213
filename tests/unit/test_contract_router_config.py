"""The contract between the parts: what the operator renders is what the router reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from onion_contract import names
from onion_contract.router_config import ConfigError, Escalation, parse_config
from onion_contract.spec import parse_spec
from onion_operator.manifests import build_router_config

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
        assert [t.name for t in config.layers] == [
            names.CORE,
            *(layer.name for layer in spec.layers),
        ]
        assert config.kubernetes.enabled and config.kubernetes.onion == name
        for entry, layer in zip(config.layers[1:], spec.layers, strict=True):
            assert entry.managed == layer.managed
            assert entry.lease == (names.lease_name(name, layer.name) if layer.managed else None)


def test_self_policy_tool_call_reaches_the_router() -> None:
    def rendered(escalation: dict[str, str]) -> Escalation:
        spec = parse_spec("o", {"core": {"model": "m", "escalation": escalation}})
        data = yaml.safe_load(yaml.safe_dump(build_router_config(spec, "team-a", "o")))
        return parse_config(data).layers[0].escalation

    tool = rendered({"policy": "self", "via": "toolCall", "toolName": "ask_expert"})
    assert (tool.policy, tool.via, tool.tool_name) == ("self", "toolCall", "ask_expert")
    plain = rendered({"policy": "self"})
    assert (plain.via, plain.tool_name) == ("sentinel", "escalate")


def test_one_escalation_model_with_each_sides_default() -> None:
    # An Onion that names no policy escalates on confidence, and its router is told so.
    spec = parse_spec("o", {"core": {"model": "m"}, "layers": [{"name": "l", "model": "m"}]})
    assert spec.core.escalation.policy == spec.layers[0].escalation.policy == "confidence"
    rendered = build_router_config(spec, "team-a", "o")
    assert [t["escalation"]["policy"] for t in rendered["layers"]] == ["confidence", "confidence"]
    # A layer of a router config file that names none does not escalate.
    layers = [
        {"name": "core", "url": "http://a", "model": "m"},
        {"name": "mid", "url": "http://b", "model": "m", "escalation": {"threshold": -1.0}},
        {"name": "big", "url": "http://c", "model": "m", "escalation": {"policy": "self"}},
    ]
    config = parse_config({"layers": layers})
    assert [t.escalation.policy for t in config.layers] == ["none", "none", "self"]
    assert config.layers[1].escalation.threshold == -1.0


def test_verify_prompt_is_rendered_only_when_the_onion_sets_it() -> None:
    def rendered(escalation: dict[str, str]) -> dict[str, object]:
        spec = parse_spec("o", {"core": {"model": "m", "escalation": escalation}})
        return build_router_config(spec, "team-a", "o")["layers"][0]["escalation"]  # type: ignore[no-any-return]

    assert "verifyPrompt" not in rendered({"policy": "verify"})
    assert rendered({"policy": "verify", "verifyPrompt": "ok? {answer}"})["verifyPrompt"] == (
        "ok? {answer}"
    )


def test_the_older_spelling_tiers_still_parses_and_not_beside_layers() -> None:
    entry = {"name": "core", "url": "http://core:80", "model": "m"}
    assert parse_config({"tiers": [entry]}) == parse_config({"layers": [entry]})
    with pytest.raises(ConfigError, match="`layers` or its older spelling `tiers`, not both"):
        parse_config({"layers": [entry], "tiers": [entry]})
