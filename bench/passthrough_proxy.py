"""A do-nothing HTTP proxy: the yardstick for what any Python proxy adds on this machine.

One raw ASGI app on uvicorn (uvloop + httptools, like the router), no framework, no parsing, no
decisions: it forwards the body to the backend with aiohttp (C-accelerated HTTP client) and
streams the answer back. The router benchmark runs it beside the router, so the router's added
latency can be read against the floor of the same server stack on the same machine, in one run.

Usage: python bench/passthrough_proxy.py --port N --backend http://127.0.0.1:M
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

Scope = dict[str, Any]

_DROP = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})


def make_app(backend: str) -> Any:
    session: aiohttp.ClientSession | None = None

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            await receive()  # startup
            session = aiohttp.ClientSession(auto_decompress=False)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # shutdown
            await session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert session is not None
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in _DROP]
        async with session.request(
            scope["method"], backend + scope["path"], data=body, headers=headers
        ) as answer:
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": [(k, v) for k, v in answer.raw_headers if k.lower() not in _DROP],
                }
            )
            async for piece in answer.content.iter_any():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.backend),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
