"""The HTTP front door: `create_app(config)`; the lifespan owns the HTTP pool and the layer link.

Routes stay thin: read and parse the body, plan, hand over to the Escalator, shape the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onion_contract.router_config import RouterConfig
from onion_router.credentials import Keys
from onion_router.escalation import Answering, Escalator, Holding, StreamEvent
from onion_router.layers import LayerLink, Layers, Refused, StaticLink
from onion_router.metrics import Metrics
from onion_router.protocol.chat import CHAT
from onion_router.protocol.completions import COMPLETIONS
from onion_router.protocol.dialect import Dialect
from onion_router.protocol.errors import ProtocolError, error_body
from onion_router.protocol.sse import heartbeat
from onion_router.protocol.tgi import GENERATE, GENERATE_STREAM, TGI_ROOT
from onion_router.protocol.types import ChatRequest, Meta
from onion_router.upstream import Upstream, UpstreamError, upstreams

log = logging.getLogger("onion_router")
T = TypeVar("T")

UNAUTHENTICATED = frozenset({"/health", "/ready", "/metrics"})


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


class RequestIdMiddleware:
    """Propagate the client's X-Request-Id (if ASCII) or mint one; every response carries it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value[:128]
                break
        if not rid or not rid.isascii():  # it goes on to the model servers, in ASCII headers
            rid = secrets.token_hex(16).encode()
        scope.setdefault("state", {})["request_id"] = rid.decode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        await self.app(scope, receive, send_with_id)


class AuthMiddleware:
    """Bearer-token check for everything but the probes and metrics."""

    def __init__(self, app: ASGIApp, keys: Keys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in UNAUTHENTICATED:
            authorization = next(
                (v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None
            )
            if not self.keys.allows(authorization):
                body = error_body(401, "missing or invalid bearer token", "invalid_api_key")
                response = _json(body, 401, {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass
class Services:
    """What the lifespan builds and the routes use."""

    escalator: Escalator
    layers: Layers
    upstreams: dict[str, Upstream]
    metrics: Metrics


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _failure(err: ProtocolError | Refused | UpstreamError, dialect: Dialect) -> Response:
    """One mapping from our exceptions to HTTP errors, in the client dialect's error shape."""
    headers: dict[str, str] = {}
    param = err.param if isinstance(err, ProtocolError) else None
    if not isinstance(err, ProtocolError) and err.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    body = dialect.error(err.status, err.message, err.code, param)
    return _json(body, err.status, headers)


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


def create_app(config: RouterConfig, *, link: LayerLink | None = None) -> FastAPI:
    """The router app. `link` replaces the Kubernetes (or static) layer link, e.g. in tests."""
    services: Services | None = None
    keys = Keys(config.auth.keys_file) if config.auth else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal services
        chosen = link
        if chosen is None and config.kubernetes.enabled:
            try:  # only in cluster mode: an edge install has no Kubernetes client
                from onion_router.kube import KubeLink
            except ImportError as err:
                raise RuntimeError(
                    f"kubernetes.enabled needs the Kubernetes client ({err}); install "
                    "'onion-of-experts[cluster]', or set kubernetes.enabled: false"
                ) from None
            chosen = KubeLink(config.kubernetes.namespace, config.kubernetes.onion)
        layers = Layers(config, chosen or StaticLink(config.tiers))
        async with upstreams(config) as clients:
            metrics = Metrics()
            metrics.track_layers(config.kubernetes.onion, layers.snapshot)
            services = Services(
                Escalator(config, layers, clients, metrics), layers, clients, metrics
            )
            await layers.start()
            try:
                yield
            finally:
                await layers.close()
                services = None

    app = FastAPI(
        title="onion-router", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.add_middleware(RequestIdMiddleware)
    if keys is not None:
        app.add_middleware(AuthMiddleware, keys=keys)

    def svc() -> Services:
        assert services is not None, "the app's lifespan has not started"
        return services

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> Response:
        code = "not_found" if err.status_code == 404 else "http_error"
        return _json(error_body(err.status_code, str(err.detail), code), err.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path, exc_info=err)
        return _json(error_body(500, f"internal router error: {err!r}", "internal_error"), 500)

    async def serve(request: Request, dialect: Dialect, endpoint: str) -> Response:
        s = svc()
        started = time.perf_counter()
        try:
            chat = dialect.parse(await _read_json(request, config.max_request_bytes))
            chat = chat.with_id(request.state.request_id)
            plan = s.escalator.plan(chat)
            if chat.stream:
                events = s.escalator.stream(chat, plan)
                return await stream(request, dialect, chat, events, endpoint)
            outcome = await _until_disconnect(request.receive, s.escalator.complete(chat, plan))
        except ClientGone:
            s.metrics.requests.labels(endpoint, "", "client_gone").inc()
            return Response(status_code=499)
        except (ProtocolError, Refused, UpstreamError) as err:
            s.metrics.requests.labels(endpoint, "", "error").inc()
            s.metrics.refusals.labels(err.code).inc()
            return _failure(err, dialect)
        s.metrics.requests.labels(endpoint, outcome.meta.layer, "ok").inc()
        s.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        body = dialect.render(chat, outcome.answer, outcome.meta)
        return _json(body, headers=outcome.meta.headers())

    async def stream(
        request: Request,
        dialect: Dialect,
        chat: ChatRequest,
        events: AsyncGenerator[StreamEvent],
        endpoint: str,
    ) -> Response:
        s = svc()
        try:
            first = await _until_disconnect(request.receive, events.__anext__())
        except BaseException:
            await events.aclose()
            raise
        if isinstance(first, Answering):
            headers = first.meta.headers()
        elif isinstance(first, Holding):
            headers = {"X-Onion-Layer": first.tier, "X-Onion-Path": "", "X-Onion-Held": "true"}
        else:  # pragma: no cover - the escalator always announces the answering tier first
            raise AssertionError(f"unexpected first stream event {first!r}")
        shaper = dialect.shaper(chat)

        async def body() -> AsyncIterator[bytes]:
            meta = Meta("", ())
            event: StreamEvent = first
            outcome = "ok"
            try:
                while True:
                    if isinstance(event, Holding):
                        yield heartbeat(event.tier, event.phase, event.waited, event.timeout)
                    elif isinstance(event, Answering):
                        meta = event.meta
                    else:
                        data = shaper.chunk(event, meta)
                        if data:
                            yield data
                    try:
                        event = await events.__anext__()
                    except StopAsyncIteration:
                        break
                yield shaper.done()
            except (Refused, UpstreamError) as err:
                outcome = "error"
                s.metrics.refusals.labels(err.code).inc()
                yield shaper.error(err.status, err.message, err.code)
            except asyncio.CancelledError:
                outcome = "client_gone"
                raise
            except Exception as err:  # a bug must still end the stream cleanly
                outcome = "error"
                log.exception("internal error while streaming", exc_info=err)
                yield shaper.error(500, f"internal router error: {err!r}", "internal_error")
            finally:
                await events.aclose()
                s.metrics.requests.labels(endpoint, meta.layer, outcome).inc()

        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
        return EventStream(body(), media_type="text/event-stream", headers=headers)

    async def chat_completions(request: Request) -> Response:
        return await serve(request, CHAT, "/v1/chat/completions")

    async def completions(request: Request) -> Response:
        return await serve(request, COMPLETIONS, "/v1/completions")

    async def generate(request: Request) -> Response:
        return await serve(request, GENERATE, "/generate")

    async def generate_stream(request: Request) -> Response:
        return await serve(request, GENERATE_STREAM, "/generate_stream")

    async def tgi_root(request: Request) -> Response:
        return await serve(request, TGI_ROOT, "/generate")

    # The model endpoints are plain Starlette routes: they read and validate their own bodies, so
    # FastAPI's per-request dependency solving would be pure overhead on the hot path.
    for path, endpoint in (
        ("/v1/chat/completions", chat_completions),
        ("/v1/completions", completions),
        ("/generate", generate),
        ("/generate_stream", generate_stream),
        ("/", tgi_root),
    ):
        app.add_route(path, endpoint, methods=["POST"])

    @app.get("/v1/models")
    async def models() -> Response:
        ids = ["onion", *(f"onion/{t.name}" for t in config.tiers)]
        return _json(
            {
                "object": "list",
                "data": [
                    {"id": i, "object": "model", "created": 0, "owned_by": "onion"} for i in ids
                ],
            }
        )

    @app.get("/health")
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        core = config.tiers[0].name
        if await svc().upstreams[core].reachable():
            return _json({"ready": True, "core": core})
        return _json(
            error_body(503, f"core layer {core!r} is not reachable", "core_unreachable"), 503
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(svc().metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/status")
    async def status() -> Response:
        s = svc()
        tiers = s.layers.snapshot()
        live = s.escalator.live()
        for entry, tier in zip(tiers, config.tiers, strict=True):
            entry["url"] = tier.url
            entry["policy"] = tier.escalation.policy
            if tier.name in live:
                now = live[tier.name]
                entry["threshold"] = now.threshold
                entry["targetRate"] = tier.escalation.target_rate
                entry["escalationRate"] = now.escalation_rate
                entry["samples"] = now.samples
                entry["adapting"] = now.adapting
        return _json(
            {
                "whileWaking": config.while_waking,
                "kubernetes": config.kubernetes.model_dump(by_alias=True),
                "layers": tiers,
                "recentEscalations": s.metrics.recent_escalations(),
            }
        )

    return app
