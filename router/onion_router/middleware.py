"""ASGI middleware: the request id every answer carries, and the bearer-token check."""

from __future__ import annotations

import secrets

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onion_router.credentials import Keys
from onion_router.protocol.errors import error_body

UNAUTHENTICATED = frozenset({"/health", "/ready", "/metrics"})


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
                response = Response(
                    orjson.dumps(body),
                    401,
                    {"WWW-Authenticate": "Bearer"},
                    media_type="application/json",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
