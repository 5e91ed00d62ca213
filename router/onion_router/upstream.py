"""Talking to model servers: one code path for TGI, vLLM, llama.cpp and hosted APIs through the
OpenAI-compatible chat API they share, sent with httpx2's public AsyncClient.

The router builds each request itself (the URL rule, the JSON body, the bearer key) and reads the
answer's JSON with orjson: the hub's `AsyncInferenceClient.chat_completion` would turn every
answer into typed objects (one per token logprob) that the router would at once turn into its
own, takes no per-request headers (X-Request-Id), drops the SSE comments that carry another
Onion router's heartbeats, and keeps each streamed response open until the client is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx2
import orjson

from onion_contract.router_config import RouterConfig, RouterLayer
from onion_router.credentials import ApiKey
from onion_router.protocol.body import no_nulls
from onion_router.protocol.sse import parse_heartbeat
from onion_router.protocol.types import Answer, Call, ChatRequest, Chunk, Holding, Token
from onion_router.retries import retry_after_seconds

# Sent as the bearer token to model servers without a key of their own (apiKeyFile): what
# keyless vLLM, TGI and llama.cpp servers are given (the OpenAI SDK sends the same).
NO_API_KEY = "EMPTY"
# Idle connections are dropped after this long: under the 5 s keep-alive timeout of uvicorn
# (vLLM) and llama.cpp's server, so the router never sends on a connection the server is
# closing at that moment (httpx2 does not resend a POST that met a closed connection).
KEEPALIVE_SECONDS = 4.0
MAX_ERROR_BODY = 64 * 1024  # of a refusal's body read for its message
DRAIN_SECONDS = 0.5  # for the end of a stream's body after `data: [DONE]`

try:
    USER_AGENT = f"onion-router/{importlib.metadata.version('onion-of-experts')}"
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
    USER_AGENT = "onion-router"

T = TypeVar("T", Answer, Chunk)

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


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """httpx2's default verification (the system's CA bundle), trusting `ca_file` as well."""
    context = httpx2.create_ssl_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=os.path.expanduser(ca_file))
        except (OSError, ssl.SSLError) as err:
            raise ValueError(f"cannot load the CA file {ca_file}: {err}") from None
    return context


def http_client(timeout: float, ca_file: str | None = None) -> httpx2.AsyncClient:
    """The HTTP client that the layers trusting `ca_file` (None: only the system's CAs) share.
    Redirects are never followed, so a layer's key never goes to another host."""
    return httpx2.AsyncClient(
        verify=tls_context(ca_file),
        limits=httpx2.Limits(
            max_connections=1024,
            max_keepalive_connections=256,
            keepalive_expiry=KEEPALIVE_SECONDS,
        ),
        timeout=timeout,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


@asynccontextmanager
async def upstreams(config: RouterConfig) -> AsyncIterator[dict[str, Upstream]]:
    """One Upstream per layer, over one HTTP client per CA file to trust (most often only the
    system's bundle); the clients are closed on exit."""
    async with AsyncExitStack() as stack:
        clients: dict[str | None, httpx2.AsyncClient] = {}
        for ca in dict.fromkeys(t.ca_file for t in config.layers):
            client = http_client(config.upstream_timeout_seconds, ca)
            clients[ca] = await stack.enter_async_context(client)
        yield {t.name: Upstream(t, clients[t.ca_file]) for t in config.layers}


def chat_url(base: str) -> str:
    """The chat completions URL of a model server at `base`: `/v1/chat/completions` appended,
    or only `/chat/completions` after a path ending in /v1, or nothing if it is there."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions" if path.endswith("/v1") else "/v1/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


class UpstreamStream:
    """An open streaming answer; `aclose()` closes the upstream connection, cancelling it.

    Iterated, it gives the answer's chunks; `items()` also gives the heartbeats (as Holding)
    of a layer that is another Onion's router holding the request while one of its layers wakes.
    """

    def __init__(self, layer: str, response: httpx2.Response) -> None:
        self.layer = layer
        self.closed = False
        self._response = response
        self._lines = response.aiter_lines()
        self._events = _events(self._lines, layer)

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
        if self.closed:
            raise StopAsyncIteration
        try:
            event = await anext(self._events)
            return event if isinstance(event, Holding) else _chunk(event)
        except StopAsyncIteration:
            await self._finish()
            raise
        except Exception as err:  # the connection broke, an error event, or malformed JSON
            await self.aclose()
            raise _translate(self.layer, err, midstream=True) from err

    async def _finish(self) -> None:
        """After `data: [DONE]`: read the end of the body (it is on its way), so that the
        connection goes back to the pool instead of being closed unfinished."""
        with contextlib.suppress(Exception):  # a server that goes on, or breaks off, now
            async with asyncio.timeout(DRAIN_SECONDS):
                async for _ in self._lines:
                    pass
        await self.aclose()

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            await self._events.aclose()
            await self._response.aclose()


class Upstream:
    """One layer's model server. Owns nothing: the HTTP client belongs to the app's lifespan."""

    def __init__(self, layer: RouterLayer, client: httpx2.AsyncClient) -> None:
        self.layer = layer
        self._client = client
        self._url = httpx2.URL(chat_url(layer.url))
        self._key = ApiKey(layer.api_key_file) if layer.api_key_file else None

    def _headers(self, request: ChatRequest) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._api_key()}",
            "Content-Type": "application/json",
            **self.layer.headers,  # none of the names above (the config refuses them)
        }
        if request.request_id:
            headers["X-Request-Id"] = request.request_id
        return headers

    def _api_key(self) -> str:
        """This layer's key (sent to its URL alone; redirects are never followed)."""
        if self._key is None:
            return NO_API_KEY
        key = self._key.value()
        if key is None:
            raise UpstreamError(
                503,
                f"layer {self.layer.name!r} has no usable API key: {self._key.path} is missing, "
                "empty or not one line of ASCII",
                "upstream_credentials",
                retry_after=10,
            )
        return key

    def _body(self, request: ChatRequest, *, logprobs: bool, stream: bool, top: int = 0) -> bytes:
        """The JSON body: the client's parameters (null fields dropped at every depth), the
        served model's name, and what the router itself asks for."""
        args = no_nulls({k: v for k, v in request.params.items() if k not in _OWN_FIELDS})
        if request.params.get("tools"):  # the client's, plus the router's own (`self` policy)
            args["tools"] = no_nulls(list(request.params["tools"]))
        if logprobs or request.logprobs:
            args["logprobs"] = True
            # llama.cpp's server returns empty chat logprobs unless top_logprobs is set. Elsewhere
            # alternatives only when the client or the router (`top`, a learned policy's
            # features) wants them: each one is an object in the answer.
            alternatives = max(request.top_logprobs or 0, top)
            if alternatives or self.layer.engine == "llamacpp":
                args["top_logprobs"] = max(1, alternatives)
        if stream and request.include_usage:
            args["stream_options"] = {"include_usage": True}
        response_format = args.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            # TGI's grammar form of a JSON schema (as huggingface_hub has always sent it).
            schema = (response_format.get("json_schema") or {}).get("schema")
            args["response_format"] = {"type": "json_object", "value": schema}
        body = {"model": self.layer.model, "messages": [dict(m) for m in request.messages]}
        return orjson.dumps({**body, **args, "stream": stream})

    async def complete(self, request: ChatRequest, *, logprobs: bool, top: int = 0) -> Answer:
        body = self._body(request, logprobs=logprobs, stream=False, top=top)
        try:
            response = await self._client.post(
                self._url, content=body, headers=self._headers(request)
            )
        except httpx2.HTTPError as err:
            raise _translate(self.layer.name, err, midstream=False) from err
        if not response.is_success:
            raise _refusal(self.layer.name, response, response.content)
        try:
            return _answer(orjson.loads(response.content))
        except (ValueError, TypeError, LookupError, AttributeError) as err:
            raise UpstreamError(
                502,
                f"layer {self.layer.name!r} sent a malformed answer: {err!r}",
                "upstream_broken",
            ) from err

    async def open_stream(
        self, request: ChatRequest, *, logprobs: bool, top: int = 0
    ) -> UpstreamStream:
        """Start a streaming answer; raises UpstreamError before any byte reaches the client."""
        body = self._body(request, logprobs=logprobs, stream=True, top=top)
        sent = self._client.build_request(
            "POST", self._url, content=body, headers=self._headers(request)
        )
        try:
            response = await self._client.send(sent, stream=True)
        except httpx2.HTTPError as err:
            raise _translate(self.layer.name, err, midstream=False) from err
        if response.is_success:
            return UpstreamStream(self.layer.name, response)
        try:
            detail = await _head_of_body(response)
        except httpx2.HTTPError:
            detail = b""
        finally:
            await response.aclose()
        raise _refusal(self.layer.name, response, detail)

    async def reachable(self) -> bool:
        """Whether the model server answers at all (for /ready); any HTTP answer counts."""
        try:
            await self._client.get(f"{self.layer.url}/v1/models", timeout=2.0)
        except httpx2.HTTPError:
            return False
        return True


async def _head_of_body(response: httpx2.Response) -> bytes:
    """The first MAX_ERROR_BODY bytes of a streamed response's body."""
    body = b""
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) >= MAX_ERROR_BODY:
            break
    return body[:MAX_ERROR_BODY]


class StreamError(Exception):
    """A model server sent an error event in place of the rest of a stream."""


async def _events(
    lines: AsyncIterable[str], layer: str
) -> AsyncGenerator[dict[str, Any] | Holding]:
    """The JSON events of an OpenAI-style SSE stream, up to `data: [DONE]`, and the
    heartbeats of an Onion router's stream (SSE comments) as Holding."""
    async for raw in lines:
        line = raw.strip()
        if not line.startswith("data:"):
            if line.startswith(":"):
                held = parse_heartbeat(line, layer)
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


def _refusal(layer: str, response: httpx2.Response, body: bytes) -> UpstreamError:
    """A model server's answer that is not a 2xx, as the error the client gets."""
    status = response.status_code
    detail = _error_detail(body)
    message = f"layer {layer!r} answered HTTP {status}" + (f": {detail}" if detail else "")
    # The client's own mistakes (e.g. a prompt longer than the context) keep their status.
    if 400 <= status < 500 and status not in (401, 403, 404, 408, 429):
        return UpstreamError(status, message, "upstream_rejected")
    if status in (429, 503):  # busy or waking: the client may come back (Retry-After)
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return UpstreamError(status, message, "upstream_busy", retry_after)
    return UpstreamError(502, message, "upstream_error")


def _translate(layer: str, err: Exception, *, midstream: bool) -> UpstreamError:
    if isinstance(err, httpx2.TimeoutException):
        return UpstreamError(504, f"layer {layer!r} timed out", "upstream_timeout")
    if isinstance(err, httpx2.TransportError) and not midstream:
        return UpstreamError(
            502, f"layer {layer!r} is unreachable: {err!r}", "upstream_unreachable"
        )
    what = "broke off mid-stream" if midstream else "failed"
    return UpstreamError(502, f"layer {layer!r} {what}: {err}", "upstream_broken")


def _error_detail(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(parsed, Mapping):
        error = parsed.get("error")
        if isinstance(error, Mapping):
            return str(error.get("message", ""))
        if error:
            return str(error)
    return json.dumps(parsed)[:300]


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
