"""OpenAI's chat completions API (`POST /v1/chat/completions`): requests, answers, streams."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from onion_router.protocol import sse
from onion_router.protocol.body import (
    boolean,
    include_usage,
    json_object,
    model_name,
    no_nulls,
    single_choice,
)
from onion_router.protocol.dialect import Dialect
from onion_router.protocol.errors import ProtocolError, error_body
from onion_router.protocol.types import Answer, ChatRequest, Chunk, Meta, Token


def _check_tools(body: Mapping[str, Any]) -> None:
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
    body = json_object(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProtocolError("'messages' must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ProtocolError(
                f"messages[{index}] must be an object with a 'role'", param=f"messages[{index}]"
            )
    single_choice(body)
    _check_tools(body)
    top = body.get("top_logprobs")
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 0):
        raise ProtocolError("'top_logprobs' must be a non-negative integer", param="top_logprobs")
    rest = {k: v for k, v in body.items() if k not in ("messages", "stream_options")}
    return ChatRequest(
        kind="chat",
        model=model_name(body),
        messages=tuple(messages),
        params=rest,
        stream=boolean(body, "stream"),
        logprobs=boolean(body, "logprobs"),
        top_logprobs=top,
        include_usage=include_usage(body),
    )


def _logprobs(tokens: Sequence[Token], top: int | None) -> dict[str, Any]:
    return {
        "content": [
            {"token": t.text, "logprob": t.logprob, "top_logprobs": t.top[: top or 0]}
            for t in tokens
        ]
    }


def render_chat(request: ChatRequest, answer: Answer, meta: Meta) -> dict[str, Any]:
    """The chat completion: the model server's, with the router's text, model and `onion`."""
    body = dict(answer.raw)
    body["model"] = request.model
    choices = []
    for choice in body.get("choices") or []:
        choice = dict(choice)
        message = dict(choice.get("message") or {})
        if answer.text or message.get("content") is not None:  # tool calls: content null
            message["content"] = answer.text
        if message.get("tool_calls"):
            message["tool_calls"] = no_nulls(message["tool_calls"])
        choice["message"] = message
        choice["logprobs"] = (
            _logprobs(answer.tokens, request.top_logprobs) if request.logprobs else None
        )
        choices.append(choice)
    body["choices"] = choices[:1]
    body["onion"] = meta.body()
    return body


class ChatStream(sse.OpenAIStream):
    """Chat completion chunks, each the model server's with the router's text and `onion`."""

    def __init__(self, request: ChatRequest) -> None:
        self.request = request

    def chunk(self, chunk: Chunk, meta: Meta) -> bytes:
        request = self.request
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
                    delta["tool_calls"] = no_nulls(delta["tool_calls"])
                choice["delta"] = {k: v for k, v in delta.items() if v is not None}
            choice["logprobs"] = (
                _logprobs(chunk.tokens, request.top_logprobs)
                if request.logprobs and chunk.tokens
                else None
            )
            choices.append(choice)
        body["choices"] = choices
        body["onion"] = meta.body()
        return sse.event(body)


CHAT = Dialect(parse=parse_chat, render=render_chat, shaper=ChatStream, error=error_body)
