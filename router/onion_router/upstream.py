"""Talking to model servers: one code path for TGI, vLLM and llama.cpp through
huggingface_hub's AsyncInferenceClient and the OpenAI-compatible chat API they share."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

from onion_router.config import Tier
from onion_router.protocol import Answer, Call, ChatRequest, Chunk, Token

# Sent as the bearer token to model servers. With no key, huggingface_hub would look up the
# host's Hugging Face token on every call (files and env) and send it to the engine; "EMPTY" is
# what keyless vLLM/TGI/llama.cpp servers are conventionally given.
NO_API_KEY = "EMPTY"

# Set by the router itself on upstream calls; a client's copy would override ours.
_OWN_FIELDS = frozenset({"model", "messages", "stream", "logprobs", "top_logprobs", "n", "tools"})


class UpstreamError(Exception):
    """A model server refused, timed out, was unreachable or broke off; `status` is ours to send."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass
class UpstreamStream:
    """An open streaming answer; `aclose()` closes the upstream connection, cancelling it."""

    tier: str
    _client: AsyncInferenceClient
    _events: AsyncIterator[Any]
    closed: bool = field(default=False)

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> Chunk:
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            await self.aclose()
            raise
        except Exception as err:
            await self.aclose()
            raise _translate(self.tier, err, midstream=True) from err
        return _chunk(event)

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            await self._client.close()  # type: ignore[no-untyped-call]


class Upstream:
    """One tier's model server. Owns nothing: the connection pool belongs to the app lifespan."""

    def __init__(self, tier: Tier, pool: httpx2.AsyncClient, timeout: float) -> None:
        self.tier = tier
        self._pool = pool
        self._timeout = timeout

    def _client(self, request: ChatRequest) -> AsyncInferenceClient:
        # One lightweight client per call over the shared pool: AsyncInferenceClient keeps each
        # streamed response open in its exit stack until close(), so a shared client would hold
        # abandoned streams (and their upstream generations) open until shutdown.
        headers = {"X-Request-Id": request.request_id} if request.request_id else None
        client = AsyncInferenceClient(
            base_url=self.tier.url, api_key=NO_API_KEY, timeout=self._timeout, headers=headers
        )
        client._async_client = self._pool
        return client

    def _arguments(self, request: ChatRequest, logprobs: bool) -> dict[str, Any]:
        extra = {k: v for k, v in request.params.items() if k not in _OWN_FIELDS}
        args: dict[str, Any] = {"model": self.tier.model, "extra_body": extra}
        if request.params.get("tools"):  # the client's, plus the router's own (`self` policy)
            args["tools"] = list(request.params["tools"])
        if logprobs or request.logprobs:
            args["logprobs"] = True
            top = request.top_logprobs or 0
            # llama.cpp's server returns empty chat logprobs unless top_logprobs is set. Elsewhere
            # alternatives only when the client wants them: huggingface_hub parses each one into
            # an object, and that parsing is the router's largest cost per judged answer.
            if top or self.tier.engine == "llamacpp":
                args["top_logprobs"] = max(1, top)
        return args

    async def complete(self, request: ChatRequest, *, logprobs: bool) -> Answer:
        client = self._client(request)
        try:
            output = await client.chat_completion(
                [dict(m) for m in request.messages],
                stream=False,
                **self._arguments(request, logprobs),
            )
        except Exception as err:
            raise _translate(self.tier.name, err, midstream=False) from err
        finally:
            await client.close()  # type: ignore[no-untyped-call]
        return _answer(output)

    async def open_stream(self, request: ChatRequest, *, logprobs: bool) -> UpstreamStream:
        """Start a streaming answer; raises UpstreamError before any byte reaches the client."""
        client = self._client(request)
        args = self._arguments(request, logprobs)
        if request.include_usage:
            args["stream_options"] = {"include_usage": True}
        try:
            events = await client.chat_completion(
                [dict(m) for m in request.messages], stream=True, **args
            )
        except Exception as err:
            await client.close()  # type: ignore[no-untyped-call]
            raise _translate(self.tier.name, err, midstream=False) from err
        return UpstreamStream(self.tier.name, client, aiter(events))

    async def reachable(self) -> bool:
        """Whether the model server answers at all (for /ready); any HTTP answer counts."""
        try:
            await self._pool.get(f"{self.tier.url}/v1/models", timeout=2.0)
        except httpx2.HTTPError:
            return False
        return True


def _translate(tier: str, err: Exception, *, midstream: bool) -> UpstreamError:
    if isinstance(err, InferenceTimeoutError | httpx2.TimeoutException):
        return UpstreamError(504, f"layer {tier!r} timed out", "upstream_timeout")
    # huggingface_hub's status check only refines httpx errors; httpx2 ones come through raw.
    response = getattr(err, "response", None)
    if isinstance(err, HfHubHTTPError | httpx2.HTTPStatusError) and response is not None:
        status = response.status_code
        detail = _error_detail(response)
        message = f"layer {tier!r} answered HTTP {status}" + (f": {detail}" if detail else "")
        # The client's own mistakes (e.g. a prompt longer than the context) keep their status.
        if 400 <= status < 500 and status not in (401, 403, 404, 408, 429):
            return UpstreamError(status, message, "upstream_rejected")
        return UpstreamError(503 if status == 503 else 502, message, "upstream_error")
    if isinstance(err, httpx2.TransportError) and not midstream:
        return UpstreamError(502, f"layer {tier!r} is unreachable: {err!r}", "upstream_unreachable")
    what = "broke off mid-stream" if midstream else "failed"
    return UpstreamError(502, f"layer {tier!r} {what}: {err}", "upstream_broken")


def _error_detail(response: httpx2.Response) -> str:
    try:
        body = response.json()
    except (httpx2.ResponseNotRead, httpx2.StreamError, ValueError):
        return ""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            return str(error.get("message", ""))
        if error:
            return str(error)
    return json.dumps(body)[:300]


def _tokens(logprobs: Any) -> list[Token]:
    content = getattr(logprobs, "content", None) or []
    return [
        Token(item.token, item.logprob, [dict(t) for t in (item.top_logprobs or [])])
        for item in content
    ]


def _calls(tool_calls: Any) -> tuple[Call, ...]:
    """Tool calls of a message, or the pieces of them in a stream delta."""
    calls = []
    for position, item in enumerate(tool_calls or []):
        function = getattr(item, "function", None)
        index = getattr(item, "index", None)
        calls.append(
            Call(
                index=index if isinstance(index, int) else position,
                name=getattr(function, "name", None),
                arguments=getattr(function, "arguments", None) or "",
                id=getattr(item, "id", None),
            )
        )
    return tuple(calls)


def _answer(output: Any) -> Answer:
    raw = dict(output)
    choice = output.choices[0] if output.choices else None
    message = choice.message if choice is not None else None
    return Answer(
        text=(message.content if message is not None else None) or "",
        tokens=_tokens(choice.logprobs) if choice is not None else [],
        finish_reason=choice.finish_reason if choice is not None else None,
        usage=dict(output.usage) if output.usage else None,
        raw=raw,
        calls=_calls(message.tool_calls if message is not None else None),
    )


def _chunk(event: Any) -> Chunk:
    choices = event.choices or []
    choice = choices[0] if choices else None
    delta = choice.delta if choice is not None else None
    return Chunk(
        text=(delta.content if delta is not None else None) or "",
        tokens=_tokens(choice.logprobs) if choice is not None else [],
        finish_reason=choice.finish_reason if choice is not None else None,
        usage=dict(event.usage) if getattr(event, "usage", None) else None,
        raw=dict(event),
        calls=_calls(delta.tool_calls if delta is not None else None),
    )
