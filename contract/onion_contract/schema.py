"""Schema metadata on the models, for the CRD generator (as controller-gen reads Go markers).

The models say most of the CRD themselves: types, defaults, enums, bounds and descriptions come
from their annotations and `Field`s. What they cannot say goes in pydantic's `json_schema_extra`
as OpenAPI keys: CEL rules (`validations`), list-map keys, bounds the API server alone checks
(where the router's own config file must stay as permissive as it was), and the few markers below.
`crd.py` turns the models' JSON schema into the CRD's structural OpenAPI v3 schema.
"""

from __future__ import annotations

from typing import Any

JsonDict = dict[str, Any]

# A field's `json_schema_extra` that keeps the model's default out of the CRD: the API server
# leaves the field unset and the model's default applies where the spec is parsed (a CEL rule
# may depend on the field being unset, as escalation's window and minSamples do).
NO_CRD_DEFAULT: JsonDict = {"default": None}

# A field of a model shared with the router's config file that the Onion does not have: the CRD
# leaves it out, so the API server prunes (or, with strict field validation, rejects) it.
ROUTER_ONLY_KEY = "x-onion-router-only"
ROUTER_ONLY: JsonDict = {ROUTER_ONLY_KEY: True}


def cel(rule: str, message: str) -> JsonDict:
    """One CEL rule the API server checks at admission, with the message it answers."""
    return {"rule": rule, "message": message}


def validations(*rules: JsonDict) -> JsonDict:
    """`json_schema_extra` with CEL rules (`x-kubernetes-validations`)."""
    return {"x-kubernetes-validations": list(rules)}


def list_map(*keys: str) -> JsonDict:
    """`json_schema_extra` of a list whose items are keyed (merged by key on server-side apply)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


# What a free-form object (`dict[str, Any]`) is in the CRD: kept as given, unchecked.
PRESERVE: JsonDict = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
