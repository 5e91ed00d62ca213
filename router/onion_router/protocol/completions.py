"""OpenAI's legacy completions API (`POST /v1/completions`), served by the chat models: one
prompt becomes one user message."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from onion_router.protocol import sse
from onion_router.protocol.body import (
    boolean,
    include_usage,
    json_object,
    model_name,
    single_choice,
)
from onion_router.protocol.dialect import Dialect
from onion_router.protocol.errors import ProtocolError, error_body
from onion_router.protocol.types import Answer, ChatRequest, Chunk, Meta, Token

_PASSED_ON = (
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "user",
)


def parse_completions(body: Any) -> ChatRequest:
    body = json_object(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ProtocolError("'prompt' must be a string (one prompt per request)", param="prompt")
    single_choice(body)
    if body.get("echo"):
        raise ProtocolError("'echo' is not supported", param="echo")
    logprobs = body.get("logprobs")
    if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool)):
        raise ProtocolError("'logprobs' must be an integer", param="logprobs")
    return ChatRequest(
        kind="completions",
        model=model_name(body),
        messages=({"role": "user", "content": prompt},),
        params={k: body[k] for k in _PASSED_ON if k in body},
        stream=boolean(body, "stream"),
        logprobs=logprobs is not None,
        top_logprobs=logprobs or None,
        include_usage=include_usage(body),
    )


def _logprobs(tokens: Sequence[Token], offset: int) -> dict[str, Any]:
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


def render_completions(request: ChatRequest, answer: Answer, meta: Meta) -> dict[str, Any]:
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
                "logprobs": _logprobs(answer.tokens, 0) if request.logprobs else None,
            }
        ],
        "usage": answer.usage,
        "onion": meta.body(),
    }


class CompletionsStream(sse.OpenAIStream):
    """Text completion events; keeps the text so far (for logprob offsets), one id and time."""

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.text = ""
        self.id = "cmpl-" + uuid.uuid4().hex
        self.created = int(time.time())

    def chunk(self, chunk: Chunk, meta: Meta) -> bytes:
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
                    "logprobs": _logprobs(chunk.tokens, offset)
                    if self.request.logprobs and chunk.tokens
                    else None,
                }
            ]
        )
        return sse.event(
            {
                "id": self.id,
                "object": "text_completion",
                "created": self.created,
                "model": self.request.model,
                "choices": choices,
                "usage": chunk.usage,
                "onion": meta.body(),
            }
        )


COMPLETIONS = Dialect(
    parse=parse_completions,
    render=render_completions,
    shaper=CompletionsStream,
    error=error_body,
)
