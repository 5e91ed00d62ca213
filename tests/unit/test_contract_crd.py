"""The CRD generated from the contract's models: structural, and meaning what the models mean."""

from __future__ import annotations

import copy
from typing import Any, get_args

import pytest

from onion_contract import names
from onion_contract.crd import crd
from onion_contract.router_config import EngineName
from onion_contract.spec import parse_spec
from onion_operator.engines import ENGINE_NAMES
from onion_operator.manifests import build_router_config

CRD = crd()
VERSION = CRD["spec"]["versions"][0]
ROOT = VERSION["schema"]["openAPIV3Schema"]
SPEC = ROOT["properties"]["spec"]


def nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node below `schema`, with its path."""
    out = [(path, schema)]
    for key, sub in (schema.get("properties") or {}).items():
        out += nodes(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out += nodes(schema[key], f"{path}[]")
    for i, sub in enumerate(schema.get("anyOf") or []):
        out += nodes(sub, f"{path}|{i}")
    return out


def test_the_schema_is_structural() -> None:
    for path, node in nodes(ROOT):
        assert not {"$ref", "$defs", "title", "allOf", "oneOf"} & set(node), path
        if "|" in path.rsplit(".", 1)[-1]:
            continue  # an anyOf branch of an int-or-string
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("default", 0) is not None, path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}: OpenAPI 3.0 bounds are booleans"


def test_the_engines_are_the_operators() -> None:
    assert get_args(EngineName) == ENGINE_NAMES
    assert SPEC["properties"]["core"]["properties"]["engine"]["enum"] == list(ENGINE_NAMES)


def test_printer_columns_show_awake_and_ready() -> None:
    columns = {col["name"]: col["jsonPath"] for col in VERSION["additionalPrinterColumns"]}
    assert columns["Awake"] == ".status.awakeLayers"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'


def test_router_only_fields_are_not_in_the_crd() -> None:
    escalation = SPEC["properties"]["core"]["properties"]["escalation"]["properties"]
    assert "instruction" not in escalation and "verifyPrompt" in escalation


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server stores: `value` with the schema's defaults filled in."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for key, sub in schema["properties"].items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(sub, out[key])
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


SPECS = [
    {"core": {"model": "m"}},
    {"core": {"model": "m", "escalation": {"threshold": -1.5}}},
    {
        "core": {"model": "m", "autoscaling": {"maxReplicas": 3}},
        "layers": [
            {"name": "mid", "model": "m2", "escalation": {"policy": "self", "via": "toolCall"}},
            {"name": "ad", "model": "m3", "idlePolicy": "adaptive", "adaptive": {}},
            {
                "name": "cron",
                "model": "m4",
                "warmSchedule": [{"cron": "0 9 * * *", "duration": "2h"}],
            },
            {"name": "ext", "endpoint": "https://example.test/v1"},
        ],
        "router": {"httpRoute": {"parentRefs": [{"name": "gw"}]}},
        "modelCache": {"size": "10Gi"},
        "coldStart": {},
    },
]


@pytest.mark.parametrize("spec", SPECS)
def test_what_the_api_server_fills_in_is_what_the_model_assumes(spec: dict[str, Any]) -> None:
    bare = parse_spec("o", spec)
    defaulted = parse_spec("o", apply_defaults(SPEC, spec))
    assert defaulted == bare
    # and so the router gets the same config, whoever applied the defaults
    assert build_router_config(defaulted, "ns", "o") == build_router_config(bare, "ns", "o")
    assert names.CORE not in {layer.name for layer in bare.layers}
