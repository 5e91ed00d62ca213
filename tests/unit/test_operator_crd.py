"""The CRD (the API's source of truth) and the contract's spec model agree."""

from __future__ import annotations

from typing import Any

import yaml

from onion_contract import names as c
from onion_contract.spec import parse_duration, parse_spec
from onion_lab.paths import REPO
from onion_operator.engines import ENGINE_NAMES

CRD = yaml.safe_load((REPO / "crds" / "onion.dev_onions.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SPEC = VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
LAYER = SPEC["layers"]["items"]["properties"]


def test_names_match_the_constants() -> None:
    names = CRD["spec"]["names"]
    assert CRD["metadata"]["name"] == f"{c.PLURAL}.{c.GROUP}"
    assert (CRD["spec"]["group"], VERSION["name"]) == (c.GROUP, c.VERSION)
    assert (names["kind"], names["plural"], names["singular"]) == (c.KIND, c.PLURAL, c.SINGULAR)
    assert tuple(names["shortNames"]) == c.SHORT_NAMES
    assert VERSION["subresources"] == {"status": {}}


def test_enums_match_the_model() -> None:
    assert tuple(SPEC["core"]["properties"]["engine"]["enum"]) == ENGINE_NAMES
    assert LAYER["engine"]["enum"] == SPEC["core"]["properties"]["engine"]["enum"]
    phases = VERSION["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["layers"]
    assert phases["items"]["properties"]["phase"]["enum"] == [
        c.PHASE_DORMANT,
        c.PHASE_WAKING,
        c.PHASE_READY,
        c.PHASE_DRAINING,
        c.PHASE_FAILED,
    ]


def schema_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v["default"] for k, v in schema["properties"].items() if "default" in v}


def test_schema_defaults_equal_model_defaults() -> None:
    parsed = parse_spec("o", {"core": {"model": "m"}, "layers": [{"name": "l", "model": "m"}]})
    layer = parsed.layers[0]
    layer_defaults = schema_defaults(SPEC["layers"]["items"])
    assert parse_duration(layer_defaults["idleTimeout"]) == layer.idle_timeout
    assert parse_duration(layer_defaults["wakeTimeout"]) == layer.wake_timeout
    assert layer_defaults["minReplicas"] == layer.min_replicas
    assert layer_defaults["engine"] == layer.engine == parsed.core.engine
    escalation = schema_defaults(SPEC["core"]["properties"]["escalation"])
    assert escalation == {
        "policy": layer.escalation.policy,
        "threshold": layer.escalation.threshold,
        "score": layer.escalation.score,
        "firstK": layer.escalation.first_k,
        "sentinel": layer.escalation.sentinel,
        "via": layer.escalation.via,
        "toolName": layer.escalation.tool_name,
    }
    router = schema_defaults(SPEC["router"])
    model_router = parsed.router.model_dump(by_alias=True)
    assert {k: model_router[k] for k in router} == router
    assert parse_duration(SPEC["evictionGracePeriod"]["default"]) == parsed.eviction_grace_period


def test_printer_columns_show_awake_and_ready() -> None:
    columns = {col["name"]: col["jsonPath"] for col in VERSION["additionalPrinterColumns"]}
    assert columns["Awake"] == ".status.awakeLayers"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'


def test_autoscaling_schema_matches_the_model() -> None:
    core_auto = SPEC["core"]["properties"]["autoscaling"]
    assert LAYER["autoscaling"] == core_auto  # one anchor for both
    parsed = parse_spec("o", {"core": {"model": "m", "autoscaling": {"maxReplicas": 3}}})
    auto = parsed.core.autoscaling
    assert auto is not None
    model = auto.model_dump(by_alias=True)
    assert set(core_auto["properties"]) == set(model)
    assert schema_defaults(core_auto) == {
        "minReplicas": auto.min_replicas,
        "targetRequestsPerReplica": auto.target_requests_per_replica,
    }
    assert core_auto["required"] == ["maxReplicas"]
