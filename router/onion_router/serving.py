"""The hot path between a route and the escalator: read and parse the body in the route's
dialect, route, answer whole or as a stream (its first event read before the response is
committed, so a refusal keeps its status), and cancel the upstream work when the client leaves.
Errors leave in the dialect's error shape."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from onion_router.escalation import Answering, Holding, Route, StreamEvent
from onion_router.layers import Refused
from onion_router.protocol.dialect import Dialect
from onion_router.protocol.errors import ProtocolError, error_body
from onion_router.protocol.sse import heartbeat
from onion_router.protocol.types import ChatRequest, Meta
from onion_router.services import Services, services
from onion_router.upstream import UpstreamError

log = logging.getLogger("onion_router")
T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def add_model_route(
    router: APIRouter, path: str, dialect: Dialect, endpoint: str | None = None
) -> None:
    """POST `path`: a model endpoint in `dialect`, named `endpoint` (else `path`) in metrics.

    A plain Starlette route: it reads and validates its own body, so FastAPI's per-request
    dependency solving would be pure overhead on the hot path."""
    name = endpoint or path

    async def answer(request: Request) -> Response:
        return await serve(request, dialect, name)

    router.add_route(path, answer, methods=["POST"])


async def serve(request: Request, dialect: Dialect, endpoint: str) -> Response:
    """Answer one request of a model endpoint."""
    s = services(request)
    started = time.perf_counter()
    try:
        chat = dialect.parse(await _read_json(request, s.config.max_request_bytes))
        chat = chat.with_id(request.state.request_id)
        route = s.escalator.route(chat)
        if chat.stream:
            return await _stream(request, s, dialect, chat, route, endpoint)
        answered = await _until_disconnect(request.receive, s.escalator.complete(chat, route))
    except ClientGone:
        s.metrics.requests.labels(endpoint, "", "client_gone").inc()
        return Response(status_code=499)
    except (ProtocolError, Refused, UpstreamError) as err:
        s.metrics.requests.labels(endpoint, "", "error").inc()
        s.metrics.refusals.labels(err.code).inc()
        return _failure(err, dialect)
    s.metrics.requests.labels(endpoint, answered.meta.layer, "ok").inc()
    s.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
    body = dialect.render(chat, answered.answer, answered.meta)
    return json_response(body, headers=answered.meta.headers())


def _failure(err: ProtocolError | Refused | UpstreamError, dialect: Dialect) -> Response:
    """One mapping from our exceptions to HTTP errors, in the client dialect's error shape."""
    headers: dict[str, str] = {}
    param = err.param if isinstance(err, ProtocolError) else None
    if not isinstance(err, ProtocolError) and err.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    body = dialect.error(err.status, err.message, err.code, param)
    return json_response(body, err.status, headers)


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(
            f"request body is larger than {limit} bytes", status=413, code="request_too_large"
        )
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise ProtocolError(
                f"request body is larger than {limit} bytes", status=413, code="request_too_large"
            )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ProtocolError(f"request body is not valid JSON: {err}") from None


async def _until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work` unless the client leaves first; then cancel it (closing upstream calls).

    `work` runs in the caller's task, so it starts at once and its result needs no hand-over; a
    watcher task cancels the caller when the client disconnects."""
    caller = asyncio.current_task()
    assert caller is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        caller.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        caller.uncancel()
        raise ClientGone from None
    finally:
        watcher.cancel()


class EventStream(StreamingResponse):
    """Starlette's streaming response, with the client's leaving watched by `_until_disconnect`
    (one watcher task) instead of an anyio task group and two tasks per stream."""

    async def __call__(self, _scope: Scope, receive: Receive, send: Send) -> None:
        # A client that left has nothing more to receive; the body's cleanup ran when cancelled.
        with contextlib.suppress(ClientGone):
            await _until_disconnect(receive, self.stream_response(send))


async def _stream(
    request: Request, s: Services, dialect: Dialect, chat: ChatRequest, route: Route, endpoint: str
) -> Response:
    """The SSE response; its status and headers wait for the escalator's first event."""
    events = s.escalator.stream(chat, route)
    try:
        first = await _until_disconnect(request.receive, anext(events))
    except BaseException:
        await events.aclose()
        raise
    if isinstance(first, Answering):
        headers = first.meta.headers()
    elif isinstance(first, Holding):
        headers = {"X-Onion-Layer": first.layer, "X-Onion-Path": "", "X-Onion-Held": "true"}
    else:  # pragma: no cover - the escalator always announces the answering layer first
        raise AssertionError(f"unexpected first stream event {first!r}")
    headers["Cache-Control"] = "no-cache"
    headers["X-Accel-Buffering"] = "no"
    body = _sse_body(s, dialect, chat, first, events, endpoint)
    return EventStream(body, media_type="text/event-stream", headers=headers)


async def _sse_body(
    s: Services,
    dialect: Dialect,
    chat: ChatRequest,
    first: StreamEvent,
    events: AsyncGenerator[StreamEvent],
    endpoint: str,
) -> AsyncIterator[bytes]:
    """The stream's bytes in the client's dialect: heartbeats while held, then the chunks; a
    failure after the response was committed ends it with an error event."""
    shaper = dialect.shaper(chat)
    meta = Meta("", ())
    event = first
    answered = "ok"
    try:
        while True:
            if isinstance(event, Holding):
                yield heartbeat(event.layer, event.phase, event.waited, event.timeout)
            elif isinstance(event, Answering):
                meta = event.meta
            else:
                data = shaper.chunk(event, meta)
                if data:
                    yield data
            try:
                event = await anext(events)
            except StopAsyncIteration:
                break
        yield shaper.done()
    except (Refused, UpstreamError) as err:
        answered = "error"
        s.metrics.refusals.labels(err.code).inc()
        yield shaper.error(err.status, err.message, err.code)
    except asyncio.CancelledError:
        answered = "client_gone"
        raise
    except Exception as err:  # a bug must still end the stream cleanly
        answered = "error"
        log.exception("internal error while streaming", exc_info=err)
        yield shaper.error(500, f"internal router error: {err!r}", "internal_error")
    finally:
        await events.aclose()
        s.metrics.requests.labels(endpoint, meta.layer, answered).inc()


async def http_error(_: Request, err: Exception) -> Response:
    """Starlette's HTTP errors (an unknown route, a wrong method) in the OpenAI error shape."""
    assert isinstance(err, HTTPException)
    code = "not_found" if err.status_code == 404 else "http_error"
    return json_response(error_body(err.status_code, str(err.detail), code), err.status_code)


async def internal_error(request: Request, err: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=err)
    return json_response(error_body(500, f"internal router error: {err!r}", "internal_error"), 500)
