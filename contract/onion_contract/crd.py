"""The Onion CustomResourceDefinition, built from the contract's models (as controller-gen builds
a CRD from Go types and their markers).

pydantic gives each model's JSON schema; `structural` turns it into the OpenAPI v3 structural
schema the API server wants: references inlined, optional fields without their null branch,
OpenAPI 3.0 exclusive bounds, free-form objects kept whole, no titles, class docstrings left to
the code (a field's `description` is the CRD's), and defaults only where the API server should
fill them in: scalars, and what a field's `json_schema_extra` sets.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from onion_contract import names
from onion_contract.schema import ROUTER_ONLY_KEY, JsonDict
from onion_contract.spec import OnionSpec
from onion_contract.status import OnionStatus

DESCRIPTION = (
    "An always-on core model with outer layers that sleep at zero replicas and are woken on "
    "demand by the router."
)


@dataclass(frozen=True)
class PrinterColumn:
    """A column of `kubectl get onions`."""

    name: str
    type: str
    json_path: str
    priority: int = 0

    def to_crd(self) -> JsonDict:
        out: JsonDict = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.priority:
            out["priority"] = self.priority
        return out


PRINTER_COLUMNS = (
    PrinterColumn("Core", "string", ".spec.core.model"),
    PrinterColumn("Engine", "string", ".spec.core.engine", priority=1),
    PrinterColumn("Layers", "integer", ".status.layerCount"),
    PrinterColumn("Awake", "integer", ".status.awakeLayers"),
    PrinterColumn("Ready", "string", f'.status.conditions[?(@.type=="{names.COND_READY}")].status'),
    PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
)

_SCALARS = (str, int, float, bool)


class _ModelSchema(GenerateJsonSchema):
    """pydantic's JSON schema with only scalar defaults and no class docstrings."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        # An object or list default would be written into every stored Onion; a field that
        # wants one says so in its json_schema_extra (as `escalation` and `router` do).
        if "default" in out and not isinstance(out["default"], _SCALARS):
            del out["default"]
        return out

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        out = super().model_schema(schema)
        doc = schema["cls"].__doc__
        if doc and out.get("description") == inspect.cleandoc(doc):
            del out["description"]  # for the code's readers; the field's description is the CRD's
        return out


def json_schema(model: type[BaseModel]) -> JsonDict:
    """A model's JSON schema as pydantic generates it (validation mode, camelCase aliases)."""
    return model.model_json_schema(by_alias=True, schema_generator=_ModelSchema)


_FIRST, _LAST = ("type", "format", "description"), ("properties", "items", "additionalProperties")


def structural(schema: JsonDict) -> JsonDict:
    """The OpenAPI v3 structural schema of a model's JSON schema (with its `$defs`)."""
    defs: dict[str, JsonDict] = schema.get("$defs", {})

    def inline(value: JsonDict) -> JsonDict:
        """The referenced model's schema under the referring field's keys."""
        ref = value.pop("$ref", None)
        if ref is None:
            return value
        target = dict(defs[ref.removeprefix("#/$defs/")])
        if "description" in value:
            target.pop("description", None)
        return {**target, **value}

    def node(value: JsonDict) -> JsonDict:
        value = inline(copy.deepcopy(value))
        if "anyOf" in value:
            branches = [b for b in value["anyOf"] if b != {"type": "null"}]
            if len(branches) < len(value["anyOf"]):  # Optional: the field may be left out
                del value["anyOf"]
                if len(branches) == 1:
                    value = inline({**branches[0], **value})
                else:
                    value["anyOf"] = branches
        value.pop("title", None)
        if value.get("default", 0) is None:
            del value["default"]  # NO_CRD_DEFAULT, or an optional field's None
        if value.get("additionalProperties") is False:
            del value["additionalProperties"]  # extra="forbid": structural schemas prune instead
        elif value.get("additionalProperties") is True:
            del value["additionalProperties"]
            value["x-kubernetes-preserve-unknown-fields"] = True
        for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(value.get(bound), int | float) and not isinstance(value[bound], bool):
                value[plain], value[bound] = value[bound], True
        if "properties" in value:
            props = {
                key: node(sub)
                for key, sub in value["properties"].items()
                if not sub.get(ROUTER_ONLY_KEY)
            }
            value["properties"] = props
            if "required" in value:
                value["required"] = [key for key in value["required"] if key in props]
        for key in ("items", "additionalProperties"):
            if isinstance(value.get(key), dict):
                value[key] = node(value[key])
        if "anyOf" in value:
            value["anyOf"] = [node(b) for b in value["anyOf"]]
        if "x-kubernetes-validations" in value:  # each rule before its message
            value["x-kubernetes-validations"] = [
                {"rule": r["rule"], "message": r["message"]}
                for r in value["x-kubernetes-validations"]
            ]
        return _ordered(value)

    return node({k: v for k, v in schema.items() if k != "$defs"})


def _ordered(value: JsonDict) -> JsonDict:
    """Keys in the order a reader expects: type and description first, children last."""
    first = [k for k in _FIRST if k in value]
    last = [k for k in _LAST if k in value]
    middle = sorted(k for k in value if k not in _FIRST and k not in _LAST)
    return {k: value[k] for k in (*first, *middle, *last)}


def _plain(value: Any) -> Any:
    """Integral floats as ints (`8`, not `8.0`), in lists and objects too."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def open_api_schema() -> JsonDict:
    """The Onion's `openAPIV3Schema`: the spec and the status from the models."""
    return {
        "type": "object",
        "description": DESCRIPTION,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _plain(structural(json_schema(OnionSpec))),
            "status": _plain(structural(json_schema(OnionStatus))),
        },
    }


def crd() -> JsonDict:
    """The whole CustomResourceDefinition."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        # Helm never deletes CRDs from crds/; keep says so to `helm uninstall` of a template too.
        "metadata": {"name": names.CRD, "annotations": {"helm.sh/resource-policy": "keep"}},
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": names.LIST_KIND,
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": list(names.SHORT_NAMES),
                "categories": list(names.CATEGORIES),
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [col.to_crd() for col in PRINTER_COLUMNS],
                    "schema": {"openAPIV3Schema": open_api_schema()},
                }
            ],
        },
    }
