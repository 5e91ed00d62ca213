"""Talking to model servers: one code path for TGI, vLLM and llama.cpp through
huggingface_hub's AsyncInferenceClient and the OpenAI-compatible chat API they share."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2
import orjson
from huggingface_hub import AsyncInferenceClient
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError
from huggingface_hub.inference._providers import get_provider_helper

from onion_contract.router_config import Tier
from onion_router.credentials import ApiKey
from onion_router.protocol.sse import parse_heartbeat
from onion_router.protocol.types import Answer, Call, ChatRequest, Chunk, Holding, Token
from onion_router.retries import retry_after_seconds

# Sent as the bearer token to model servers without a key of their own (apiKeyFile). With no
# key, huggingface_hub would look up the host's Hugging Face token on every call (files and env)
# and send it to the engine; "EMPTY" is what keyless vLLM/TGI/llama.cpp servers are given.
NO_API_KEY = "EMPTY"

T = TypeVar("T", Answer, Chunk)

# The router talks to its model servers and nothing else. With telemetry on, the User-Agent that
# huggingface_hub builds for every request looks for torch each time and, on first use, fetches a
# registry of coding agents from huggingface.co: a blocking call of up to 3 s on the event loop,
# which an air-gapped cluster never answers. The hub reads this flag at each call.
hub_constants.HF_HUB_DISABLE_TELEMETRY = True

# Set by the router itself on upstream calls; a client's copy would override ours.
_OWN_FIELDS = frozenset({"model", "messages", "stream", "logprobs", "top_logprobs", "n", "tools"})


class UpstreamError(Exception):
    """A model server refused, timed out, was unreachable or broke off; `status` is ours to send."""

    def __init__(
        self, status: int, message: str, code: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after  # the model server's Retry-After, in seconds


@dataclass
class UpstreamStream:
    """An open streaming answer; `aclose()` closes the upstream connection, cancelling it.

    Iterated, it gives the answer's chunks; `items()` also gives the heartbeats (as Holding)
    of a tier that is another Onion's router holding the request while one of its layers wakes.
    """

    tier: str
    _client: AsyncInferenceClient
    _events: AsyncIterator[dict[str, Any] | Holding]
    closed: bool = field(default=False)

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> Chunk:
        while True:
            item = await self._next()
            if not isinstance(item, Holding):
                return item

    async def items(self) -> AsyncGenerator[Chunk | Holding]:
        while True:
            try:
                yield await self._next()
            except StopAsyncIteration:
                return

    async def _next(self) -> Chunk | Holding:
        try:
            event = await anext(self._events)
            return event if isinstance(event, Holding) else _chunk(event)
        except StopAsyncIteration:
            await self.aclose()
            raise
        except Exception as err:  # the connection broke, an error event, or malformed JSON
            await self.aclose()
            raise _translate(self.tier, err, midstream=True) from err

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            await self._client.close()  # type: ignore[no-untyped-call]


class Upstream:
    """One tier's model server. Owns nothing: the connection pool belongs to the app lifespan.

    huggingface_hub builds and sends every request (its request builder for an OpenAI-compatible
    chat server at a URL, the bearer header, status and timeout handling); the router reads the
    answer's JSON itself. `AsyncInferenceClient.chat_completion` would also turn each answer into
    the hub's typed objects, which the router would at once turn into its own: that parse deep-
    copies every nested object (one per token logprob) and was 85% of the router's CPU on a
    judged answer and half of it on a stream. So the router calls the two steps before it: the
    provider helper's `prepare_request` and the client's `_inner_post` (private: the hub's
    version is pinned below 3, and every router test goes through here)."""

    def __init__(self, tier: Tier, pool: httpx2.AsyncClient, timeout: float) -> None:
        self.tier = tier
        self._pool = pool
        self._timeout = timeout
        self._helper = get_provider_helper(None, task="conversational", model=tier.url)
        self._key = ApiKey(tier.api_key_file) if tier.api_key_file else None
        # Answers that are not streamed leave nothing behind in a client: they share this one.
        self._shared = self._client()

    def _client(self) -> AsyncInferenceClient:
        """A hub client over the app's connection pool. A stream needs one of its own:
        AsyncInferenceClient keeps each streamed response open in its exit stack until close(),
        so a shared client would hold abandoned streams (and their upstream generations) open
        until shutdown."""
        client = AsyncInferenceClient(
            base_url=self.tier.url, api_key=NO_API_KEY, timeout=self._timeout
        )
        client._async_client = self._pool
        return client

    async def _post(
        self,
        client: AsyncInferenceClient,
        request: ChatRequest,
        parameters: dict[str, Any],
        *,
        stream: bool,
    ) -> Any:
        headers = dict(self.tier.headers)
        if request.request_id:
            headers["X-Request-Id"] = request.request_id
        prepared = self._helper.prepare_request(
            inputs=[dict(m) for m in request.messages],
            parameters={**parameters, "stream": stream},
            headers=headers,
            model=self.tier.url,
            api_key=self._api_key(),
        )
        try:
            return await client._inner_post(prepared, stream=stream)
        except Exception as err:
            raise _translate(self.tier.name, err, midstream=False) from err

    def _api_key(self) -> str:
        """This tier's key (sent to its URL alone; redirects are never followed)."""
        if self._key is None:
            return NO_API_KEY
        key = self._key.value()
        if key is None:
            raise UpstreamError(
                503,
                f"layer {self.tier.name!r} has no usable API key: {self._key.path} is missing, "
                "empty or not one line of ASCII",
                "upstream_credentials",
                retry_after=10,
            )
        return key

    def _parameters(self, request: ChatRequest, logprobs: bool) -> dict[str, Any]:
        args = {k: v for k, v in request.params.items() if k not in _OWN_FIELDS}
        args["model"] = self.tier.model
        if request.params.get("tools"):  # the client's, plus the router's own (`self` policy)
            args["tools"] = list(request.params["tools"])
        if logprobs or request.logprobs:
            args["logprobs"] = True
            top = request.top_logprobs or 0
            # llama.cpp's server returns empty chat logprobs unless top_logprobs is set. Elsewhere
            # alternatives only when the client wants them: each one is an object in the answer.
            if top or self.tier.engine == "llamacpp":
                args["top_logprobs"] = max(1, top)
        return args

    async def complete(self, request: ChatRequest, *, logprobs: bool) -> Answer:
        parameters = self._parameters(request, logprobs)
        body = await self._post(self._shared, request, parameters, stream=False)
        try:
            return _answer(orjson.loads(body))
        except (ValueError, TypeError, LookupError, AttributeError) as err:
            raise UpstreamError(
                502, f"layer {self.tier.name!r} sent a malformed answer: {err!r}", "upstream_broken"
            ) from err

    async def open_stream(self, request: ChatRequest, *, logprobs: bool) -> UpstreamStream:
        """Start a streaming answer; raises UpstreamError before any byte reaches the client."""
        parameters = self._parameters(request, logprobs)
        if request.include_usage:
            parameters["stream_options"] = {"include_usage": True}
        client = self._client()
        try:
            lines = await self._post(client, request, parameters, stream=True)
        except BaseException:
            await client.close()  # type: ignore[no-untyped-call]
            raise
        return UpstreamStream(self.tier.name, client, _events(lines, self.tier.name))

    async def reachable(self) -> bool:
        """Whether the model server answers at all (for /ready); any HTTP answer counts."""
        try:
            await self._pool.get(f"{self.tier.url}/v1/models", timeout=2.0)
        except httpx2.HTTPError:
            return False
        return True


class StreamError(Exception):
    """A model server sent an error event in place of the rest of a stream."""


async def _events(lines: AsyncIterable[str], tier: str) -> AsyncIterator[dict[str, Any] | Holding]:
    """The JSON events of an OpenAI-style SSE stream, up to `data: [DONE]`, and the
    heartbeats of an Onion router's stream (SSE comments) as Holding."""
    async for line in lines:
        if not line.startswith("data:"):
            if line.startswith(":"):
                held = parse_heartbeat(line, tier)
                if held is not None:
                    yield held
            continue  # blank separators, other comments, other fields
        data = line[5:].strip()
        if data == "[DONE]":
            return
        event = orjson.loads(data)
        if event.get("error") is not None:
            error = event["error"]
            message = error.get("message") if isinstance(error, Mapping) else error
            raise StreamError(str(message))
        yield event


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
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        if status in (429, 503):  # busy or waking: the client may come back (Retry-After)
            return UpstreamError(status, message, "upstream_busy", retry_after)
        return UpstreamError(502, message, "upstream_error")
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


def _tokens(logprobs: Mapping[str, Any] | None) -> list[Token]:
    content = (logprobs or {}).get("content") or []
    return [Token(t["token"], t["logprob"], t.get("top_logprobs") or []) for t in content]


def _calls(tool_calls: list[dict[str, Any]] | None) -> tuple[Call, ...]:
    """Tool calls of a message, or the pieces of them in a stream delta."""
    calls = []
    for position, item in enumerate(tool_calls or []):
        function = item.get("function") or {}
        index = item.get("index")
        calls.append(
            Call(
                index=index if isinstance(index, int) else position,
                name=function.get("name"),
                arguments=function.get("arguments") or "",
                id=item.get("id"),
            )
        )
    return tuple(calls)


def _answer(output: dict[str, Any]) -> Answer:
    return _text(Answer, output, "message")


def _chunk(event: dict[str, Any]) -> Chunk:
    return _text(Chunk, event, "delta")


def _text(kind: type[T], data: dict[str, Any], part: str) -> T:
    """The first choice of an answer (its `message`) or of a stream event (its `delta`)."""
    choice = (data.get("choices") or [{}])[0]
    content = choice.get(part) or {}
    return kind(
        text=content.get("content") or "",
        tokens=_tokens(choice.get("logprobs")),
        finish_reason=choice.get("finish_reason"),
        usage=data.get("usage"),
        raw=data,
        calls=_calls(content.get("tool_calls")),
    )
