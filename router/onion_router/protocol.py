"""Client protocols, pure: parse OpenAI chat/completions and TGI requests into one ChatRequest,
and shape answers, stream events and errors back into each protocol."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import orjson

Kind = Literal["chat", "completions", "tgi", "tgi_list"]

_TGI_PARAMS = {
    "max_new_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "frequency_penalty": "frequency_penalty",
}
_TGI_FINISH = {"stop": "eos_token", "length": "length"}


class ProtocolError(Exception):
    """The client sent something we cannot serve; `status` and `param` go into the error body."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        param: str | None = None,
        code: str = "invalid_request",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code


@dataclass(frozen=True)
class Token:
    text: str
    logprob: float
    top: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Call:
    """A tool call in an answer, or one streamed piece of it (later pieces carry no name or id)."""

    index: int
    name: str | None
    arguments: str = ""
    id: str | None = None


@dataclass
class _Text:
    text: str
    tokens: list[Token]
    finish_reason: str | None
    usage: dict[str, Any] | None
    raw: dict[str, Any]  # the model server's JSON, for fields we pass through untouched
    calls: tuple[Call, ...] = ()


@dataclass
class Answer(_Text):
    """A complete answer from one tier."""


@dataclass
class Chunk(_Text):
    """One streamed piece of an answer."""


@dataclass(frozen=True)
class Meta:
    """Who answered: shown as X-Onion-* headers and an `onion` field in every body."""

    layer: str
    path: tuple[str, ...]
    degraded: bool = False

    def body(self) -> dict[str, Any]:
        return {"layer": self.layer, "path": list(self.path), "degraded": self.degraded}

    def headers(self) -> dict[str, str]:
        headers = {"X-Onion-Layer": self.layer, "X-Onion-Path": ",".join(self.path)}
        if self.degraded:
            headers["X-Onion-Degraded"] = "true"
        return headers

    def within(self, remote: Any) -> Meta:
        """This answer's meta when the answering tier is itself an Onion's router, whose own
        `onion` field (`remote`) says which of its layers answered: that router's layers are
        named `<tier>:<layer>`, so an edge core escalated to a cluster's `mid` shows the path
        core, cluster:mid (with the remote's whole path in between)."""
        if not isinstance(remote, Mapping):
            return self
        layer, path = remote.get("layer"), remote.get("path")
        if not isinstance(layer, str) or not layer or not isinstance(path, list):
            return self
        inner = [f"{self.layer}:{p}" for p in path if isinstance(p, str)]
        if not inner or self.path[-1:] != (self.layer,):
            return self
        return Meta(
            f"{self.layer}:{layer}",
            (*self.path[:-1], *inner),
            self.degraded or remote.get("degraded") is True,
        )


@dataclass(frozen=True)
class Holding:
    """A request waits for a tier: it wakes, or it said when to come back (Retry-After)."""

    tier: str
    phase: str
    waited: float
    timeout: float


@dataclass(frozen=True)
class ChatRequest:
    """What the client asked, in one shape for every protocol."""

    kind: Kind
    model: str
    messages: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any]  # passed through to the model server
    stream: bool
    logprobs: bool = False
    top_logprobs: int | None = None
    include_usage: bool = False
    details: bool = False  # TGI: return token details
    request_id: str = ""

    @property
    def prompt(self) -> str:
        """The user's text, what routing rules look at."""
        return "\n".join(_text(m.get("content")) for m in self.messages if m.get("role") == "user")

    @property
    def tool_names(self) -> tuple[str, ...]:
        """Names of the functions the client offers the model (`tools`)."""
        tools = self.params.get("tools")
        if not isinstance(tools, list):
            return ()
        functions = (t.get("function") for t in tools if isinstance(t, Mapping))
        return tuple(str(f.get("name")) for f in functions if isinstance(f, Mapping))

    def with_system(self, instruction: str) -> ChatRequest:
        system = {"role": "system", "content": instruction}
        return replace(self, messages=(system, *self.messages))

    def with_tool(self, tool: Mapping[str, Any]) -> ChatRequest:
        """The request with one more tool offered to the model, after the client's own."""
        tools = self.params.get("tools")
        theirs = list(tools) if isinstance(tools, list) else []
        return replace(self, params={**self.params, "tools": [*theirs, tool]})

    def with_id(self, request_id: str) -> ChatRequest:
        return replace(self, request_id=request_id)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ProtocolError("the request body must be a JSON object")
    return body


def _single_choice(body: Mapping[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        raise ProtocolError(
            "only n=1 is supported (each answer is judged and escalated)", param="n"
        )


def _bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ProtocolError(f"'{name}' must be a boolean", param=name)
    return value


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model", "onion")
    if not isinstance(model, str) or not model:
        raise ProtocolError("'model' must be a non-empty string", param="model")
    return model


def _tools(body: Mapping[str, Any]) -> None:
    """`tools`, if given, as OpenAI defines it: the router reads the functions' names (the
    `self` policy's own tool must not clash with a client's) and adds its own to the list."""
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise ProtocolError("'tools' must be an array of tool objects", param="tools")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ProtocolError(
                f"tools[{index}] must be an object with a 'function' that has a 'name'",
                param=f"tools[{index}]",
            )


def parse_chat(body: Any) -> ChatRequest:
    body = _object(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProtocolError("'messages' must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ProtocolError(
                f"messages[{index}] must be an object with a 'role'", param=f"messages[{index}]"
            )
    _single_choice(body)
    _tools(body)
    top = body.get("top_logprobs")
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 0):
        raise ProtocolError("'top_logprobs' must be a non-negative integer", param="top_logprobs")
    options = body.get("stream_options") or {}
    rest = {k: v for k, v in body.items() if k not in ("messages", "stream_options")}
    return ChatRequest(
        kind="chat",
        model=_model(body),
        messages=tuple(messages),
        params=rest,
        stream=_bool(body, "stream"),
        logprobs=_bool(body, "logprobs"),
        top_logprobs=top,
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
    )


def parse_completions(body: Any) -> ChatRequest:
    body = _object(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ProtocolError("'prompt' must be a string (one prompt per request)", param="prompt")
    _single_choice(body)
    if body.get("echo"):
        raise ProtocolError("'echo' is not supported", param="echo")
    logprobs = body.get("logprobs")
    if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool)):
        raise ProtocolError("'logprobs' must be an integer", param="logprobs")
    options = body.get("stream_options") or {}
    passthrough = (
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "user",
    )
    return ChatRequest(
        kind="completions",
        model=_model(body),
        messages=({"role": "user", "content": prompt},),
        params={k: body[k] for k in passthrough if k in body},
        stream=_bool(body, "stream"),
        logprobs=logprobs is not None,
        top_logprobs=logprobs or None,
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
    )


def parse_tgi(body: Any, *, stream: bool | None, kind: Kind = "tgi") -> ChatRequest:
    """TGI's /generate, /generate_stream and POST / (`stream` None: the body's field decides)."""
    body = _object(body)
    inputs = body.get("inputs")
    if not isinstance(inputs, str) or not inputs:
        raise ProtocolError("'inputs' must be a non-empty string", status=422, param="inputs")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object", status=422, param="parameters")
    params: dict[str, Any] = {
        ours: parameters[theirs]
        for theirs, ours in _TGI_PARAMS.items()
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
        stream=_bool(body, "stream") if stream is None else stream,
        logprobs=details,
        top_logprobs=None,
        details=details,
    )


# --- answers --------------------------------------------------------------------------------


def merged_calls(pieces: Sequence[Call]) -> tuple[Call, ...]:
    """Streamed tool-call pieces joined into whole calls, in index order."""
    calls: dict[int, Call] = {}
    for piece in pieces:
        have = calls.get(piece.index)
        if have is not None:
            piece = Call(
                piece.index,
                have.name or piece.name,
                have.arguments + piece.arguments,
                have.id or piece.id,
            )
        calls[piece.index] = piece
    return tuple(calls[i] for i in sorted(calls))


def call_json(call: Call) -> dict[str, Any]:
    """One whole call in a chat message's `tool_calls`."""
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}


def _call_index(entry: Mapping[str, Any], position: int) -> int:
    index = entry.get("index")
    return index if isinstance(index, int) else position


def _call_name(entry: Mapping[str, Any]) -> Any:
    function = entry.get("function")
    return function.get("name") if isinstance(function, Mapping) else None


def _no_nones(value: Any) -> Any:
    """Drop null fields that the client library's dataclasses add to nested objects."""
    if isinstance(value, Mapping):
        return {k: _no_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nones(v) for v in value]
    return value


def without_calls(answer: Answer, name: str) -> Answer:
    """The answer without calls of the tool `name` (the router's own, which clients never see)."""
    if not any(c.name == name for c in answer.calls):
        return answer
    kept = tuple(c for c in answer.calls if c.name != name)
    finish = answer.finish_reason
    if not kept and finish == "tool_calls":
        finish = "stop"
    choices = []
    for choice in answer.raw.get("choices") or []:
        choice = dict(choice)
        message = dict(choice.get("message") or {})
        entries = [e for e in message.get("tool_calls") or [] if _call_name(e) != name]
        message["tool_calls"] = entries or None
        if not entries and message.get("content") is None:
            message["content"] = ""
        choice["message"] = message
        choice["finish_reason"] = finish
        choices.append(choice)
    return replace(answer, finish_reason=finish, calls=kept, raw={**answer.raw, "choices": choices})


class CallFilter:
    """Removes the calls of one tool from a stream. Only the first piece of a call names the
    tool, so the call indices that are its are remembered for the pieces that follow."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ours: set[int] = set()
        self.kept = False  # whether the client has seen a call of another tool

    def chunk(self, chunk: Chunk) -> Chunk:
        self.ours.update(c.index for c in chunk.calls if c.name == self.name)
        self.kept = self.kept or any(c.index not in self.ours for c in chunk.calls)
        if not self.ours or not (chunk.calls or chunk.finish_reason == "tool_calls"):
            return chunk
        finish = chunk.finish_reason
        if finish == "tool_calls" and not self.kept:
            finish = "stop"
        choices = []
        for choice in chunk.raw.get("choices") or []:
            choice = dict(choice)
            delta = dict(choice.get("delta") or {})
            entries = [
                e
                for position, e in enumerate(delta.get("tool_calls") or [])
                if _call_index(e, position) not in self.ours
            ]
            delta["tool_calls"] = entries or None
            choice["delta"] = delta
            choice["finish_reason"] = finish
            choices.append(choice)
        return replace(
            chunk,
            finish_reason=finish,
            calls=tuple(c for c in chunk.calls if c.index not in self.ours),
            raw={**chunk.raw, "choices": choices},
        )


def _chat_logprobs(tokens: Sequence[Token], top: int | None) -> dict[str, Any]:
    return {
        "content": [
            {"token": t.text, "logprob": t.logprob, "top_logprobs": t.top[: top or 0]}
            for t in tokens
        ]
    }


def _completion_logprobs(tokens: Sequence[Token], offset: int) -> dict[str, Any]:
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token.text)
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{x["token"]: x["logprob"] for x in t.top} for t in tokens],
        "text_offset": offsets,
    }


def render_answer(request: ChatRequest, answer: Answer, meta: Meta) -> Any:
    """The non-streaming response body for the client's protocol."""
    if request.kind == "chat":
        body = dict(answer.raw)
        body["model"] = request.model
        choices = []
        for choice in body.get("choices") or []:
            choice = dict(choice)
            message = dict(choice.get("message") or {})
            if answer.text or message.get("content") is not None:  # tool calls: content null
                message["content"] = answer.text
            if message.get("tool_calls"):
                message["tool_calls"] = _no_nones(message["tool_calls"])
            choice["message"] = message
            choice["logprobs"] = (
                _chat_logprobs(answer.tokens, request.top_logprobs) if request.logprobs else None
            )
            choices.append(choice)
        body["choices"] = choices[:1]
        body["onion"] = meta.body()
        return body
    if request.kind == "completions":
        return {
            "id": "cmpl-" + str(answer.raw.get("id") or uuid.uuid4().hex),
            "object": "text_completion",
            "created": answer.raw.get("created") or int(time.time()),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "text": answer.text,
                    "finish_reason": answer.finish_reason,
                    "logprobs": _completion_logprobs(answer.tokens, 0)
                    if request.logprobs
                    else None,
                }
            ],
            "usage": answer.usage,
            "onion": meta.body(),
        }
    out: dict[str, Any] = {"generated_text": answer.text, "onion": meta.body()}
    if request.details:
        out["details"] = {
            "finish_reason": _TGI_FINISH.get(answer.finish_reason or "", "eos_token"),
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


class StreamShaper:
    """Turns one answer's chunks into the client's SSE protocol; keeps the per-stream state."""

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.text = ""
        self.count = 0
        self.id = "cmpl-" + uuid.uuid4().hex
        self.created = int(time.time())

    def chunk(self, chunk: Chunk, meta: Meta) -> bytes:
        request = self.request
        self.count += max(1, len(chunk.tokens)) if chunk.text else 0
        if request.kind == "chat":
            body = dict(chunk.raw)
            body["model"] = request.model
            choices = []
            for choice in body.get("choices") or []:
                choice = dict(choice)
                if choice.get("delta") is not None:
                    delta = dict(choice["delta"])
                    if delta.get("content") is not None:
                        delta["content"] = chunk.text
                    if delta.get("tool_calls"):
                        delta["tool_calls"] = _no_nones(delta["tool_calls"])
                    choice["delta"] = {k: v for k, v in delta.items() if v is not None}
                choice["logprobs"] = (
                    _chat_logprobs(chunk.tokens, request.top_logprobs)
                    if request.logprobs and chunk.tokens
                    else None
                )
                choices.append(choice)
            body["choices"] = choices
            body["onion"] = meta.body()
            return _sse(body)
        if request.kind == "completions":
            offset = len(self.text)
            self.text += chunk.text
            choices = (
                []
                if chunk.usage and not chunk.text and not chunk.finish_reason
                else [
                    {
                        "index": 0,
                        "text": chunk.text,
                        "finish_reason": chunk.finish_reason,
                        "logprobs": _completion_logprobs(chunk.tokens, offset)
                        if request.logprobs and chunk.tokens
                        else None,
                    }
                ]
            )
            return _sse(
                {
                    "id": self.id,
                    "object": "text_completion",
                    "created": self.created,
                    "model": request.model,
                    "choices": choices,
                    "usage": chunk.usage,
                    "onion": meta.body(),
                }
            )
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
                "finish_reason": _TGI_FINISH.get(chunk.finish_reason, "eos_token"),
                "generated_tokens": self.count,
                "seed": None,
            }
        return b"data:" + orjson.dumps(event) + b"\n\n"

    def done(self) -> bytes:
        return b"" if self.request.kind in ("tgi", "tgi_list") else b"data: [DONE]\n\n"

    def error(self, status: int, message: str, code: str) -> bytes:
        if self.request.kind in ("tgi", "tgi_list"):
            return b"data:" + orjson.dumps({"error": message, "error_type": code}) + b"\n\n"
        return _sse(error_body(status, message, code))


def _sse(body: Any) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


def heartbeat(layer: str, phase: str, waited: float, timeout: float) -> bytes:
    """An SSE comment: clients ignore it, proxies see traffic, people see progress."""
    return f": waiting for layer {layer} ({phase}, {waited:.0f}s of {timeout:.0f}s)\n\n".encode()


_HEARTBEAT = re.compile(r"^:\s*waiting for layer (\S+) \((.+), (\d+)s of (\d+)s\)$")


def parse_heartbeat(line: str, tier: str) -> Holding | None:
    """Another Onion router's heartbeat line (see `heartbeat`), as a Holding of tier `tier`:
    its layer L is shown as `tier:L`. None for any other line."""
    match = _HEARTBEAT.match(line.strip())
    if match is None:
        return None
    layer, phase, waited, timeout = match.groups()
    return Holding(f"{tier}:{layer}", phase, float(waited), float(timeout))


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header in seconds: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str, code: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def tgi_error_body(message: str, code: str) -> dict[str, Any]:
    """TGI's error shape (what huggingface_hub's client reads on TGI routes)."""
    return {"error": message, "error_type": code}
