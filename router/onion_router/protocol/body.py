"""Checks of request-body fields that the dialects share, and a JSON helper."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onion_router.protocol.errors import ProtocolError


def json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ProtocolError("the request body must be a JSON object")
    return body


def single_choice(body: Mapping[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        raise ProtocolError(
            "only n=1 is supported (each answer is judged and escalated)", param="n"
        )


def boolean(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ProtocolError(f"'{name}' must be a boolean", param=name)
    return value


def model_name(body: Mapping[str, Any]) -> str:
    model = body.get("model", "onion")
    if not isinstance(model, str) or not model:
        raise ProtocolError("'model' must be a non-empty string", param="model")
    return model


def include_usage(body: Mapping[str, Any]) -> bool:
    """`stream_options.include_usage`: the client wants a last chunk with the token counts."""
    options = body.get("stream_options") or {}
    return bool(isinstance(options, dict) and options.get("include_usage"))


def no_nulls(value: Any) -> Any:
    """`value` without null fields in its objects, at every depth (client libraries' dataclasses
    add them; model servers may refuse them)."""
    if isinstance(value, Mapping):
        return {k: no_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [no_nulls(v) for v in value]
    return value
