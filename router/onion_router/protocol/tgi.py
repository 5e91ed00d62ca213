"""TGI's own API (`/generate`, `/generate_stream`, and `POST /`, where huggingface_hub's
`InferenceClient.text_generation` posts), served by the chat models: `inputs` becomes one user
message and TGI's parameters their chat equivalents."""

from __future__ import annotations

import functools
from typing import Any

import orjson

from onion_router.protocol.body import boolean, json_object
from onion_router.protocol.dialect import Dialect
from onion_router.protocol.errors import ProtocolError, tgi_error_body
from onion_router.protocol.types import Answer, ChatRequest, Chunk, Kind, Meta

_PARAMS = {
    "max_new_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "frequency_penalty": "frequency_penalty",
}
_FINISH = {"stop": "eos_token", "length": "length"}


def parse_tgi(body: Any, *, stream: bool | None, kind: Kind = "tgi") -> ChatRequest:
    """TGI's /generate, /generate_stream and POST / (`stream` None: the body's field decides)."""
    body = json_object(body)
    inputs = body.get("inputs")
    if not isinstance(inputs, str) or not inputs:
        raise ProtocolError("'inputs' must be a non-empty string", status=422, param="inputs")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object", status=422, param="parameters")
    params: dict[str, Any] = {
        ours: parameters[theirs]
        for theirs, ours in _PARAMS.items()
        if parameters.get(theirs) is not None
    }
    if parameters.get("do_sample") is False and "temperature" not in params:
        params["temperature"] = 0.0
    details = bool(parameters.get("details"))
    return ChatRequest(
        kind=kind,
        model=str(body.get("model") or "onion"),
        messages=({"role": "user", "content": inputs},),
        params=params,
        stream=boolean(body, "stream") if stream is None else stream,
        logprobs=details,
        top_logprobs=None,
        details=details,
    )


def render_tgi(request: ChatRequest, answer: Answer, meta: Meta) -> Any:
    """`generated_text` (with `details` when asked), in a list for POST /."""
    out: dict[str, Any] = {"generated_text": answer.text, "onion": meta.body()}
    if request.details:
        out["details"] = {
            "finish_reason": _FINISH.get(answer.finish_reason or "", "eos_token"),
            "generated_tokens": len(answer.tokens)
            or (answer.usage or {}).get("completion_tokens", 0),
            "seed": request.params.get("seed"),
            "prefill": [],
            "tokens": [
                {"id": 0, "text": t.text, "logprob": t.logprob, "special": False}
                for t in answer.tokens
            ],
        }
    return [out] if request.kind == "tgi_list" else out


def _event(body: Any) -> bytes:
    return b"data:" + orjson.dumps(body) + b"\n\n"  # TGI writes no space after the colon


class TgiStream:
    """TGI's token events; the last one has the whole text and the details."""

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.text = ""
        self.count = 0

    def chunk(self, chunk: Chunk, meta: Meta) -> bytes:
        self.count += max(1, len(chunk.tokens)) if chunk.text else 0
        self.text += chunk.text
        if not chunk.text and not chunk.finish_reason:
            return b""
        logprob = chunk.tokens[0].logprob if chunk.tokens else 0.0
        event: dict[str, Any] = {
            "index": self.count,
            "token": {"id": 0, "text": chunk.text, "logprob": logprob, "special": not chunk.text},
            "generated_text": None,
            "details": None,
            "onion": meta.body(),
        }
        if chunk.finish_reason:
            event["generated_text"] = self.text
            event["details"] = {
                "finish_reason": _FINISH.get(chunk.finish_reason, "eos_token"),
                "generated_tokens": self.count,
                "seed": None,
            }
        return _event(event)

    def done(self) -> bytes:
        return b""  # TGI's stream just ends

    def error(self, status: int, message: str, code: str) -> bytes:  # noqa: ARG002 - no status
        return _event(tgi_error_body(message, code))


def _tgi_error(status: int, message: str, code: str, param: str | None) -> Any:  # noqa: ARG001
    return tgi_error_body(message, code)


def _dialect(stream: bool | None, kind: Kind = "tgi") -> Dialect:
    return Dialect(
        parse=functools.partial(parse_tgi, stream=stream, kind=kind),
        render=render_tgi,
        shaper=TgiStream,
        error=_tgi_error,
    )


GENERATE = _dialect(stream=False)
GENERATE_STREAM = _dialect(stream=True)
TGI_ROOT = _dialect(stream=None, kind="tgi_list")  # POST /: the body says; answers in a list
