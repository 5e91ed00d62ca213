"""The Helm chart's static files (its CRD and RBAC rules are generated: test_generated.py)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from onion_contract.names import DEFAULT_OPERATOR_IMAGE

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "onion-of-experts"


def test_crd_is_kept_on_uninstall() -> None:
    crd = yaml.safe_load((CHART / "crds" / "onion.dev_onions.yaml").read_text())
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_app_version_matches_the_package_and_the_operator_default_image() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in pyproject
    assert f"ghcr.io/onion-of-experts/onion:{chart['appVersion']}" == DEFAULT_OPERATOR_IMAGE


def test_every_default_value_is_described_by_the_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(value: object, node: dict, path: str) -> None:  # type: ignore[type-arg]
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        if isinstance(value, dict) and "properties" in node:
            for key, sub in value.items():
                if node.get("additionalProperties") is False:
                    assert key in node["properties"], f"{path}.{key} is not in the schema"
                if key in node["properties"]:
                    walk(sub, node["properties"][key], f"{path}.{key}")

    walk(values, schema, "values")
