"""A TGI-protocol TEST SERVER (a test double, not a model): scripted tokens, logprobs, delays and
failures on loopback. Serves the OpenAI-compatible chat API that TGI, vLLM and llama.cpp share,
plus TGI's own /generate, /generate_stream, POST /, /health and /info. Product code never
imports it; tests and the router benchmark start it and stop it.

Run standalone (for benchmarks): python -m tests.support.fake_tgi --port N [--tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from onion_lab.sockets import serve_on_loopback

Failure = Literal["refuse", "die", "hang", "error_event", "garbage"] | None


@dataclass
class Script:
    """What the fake model answers: tokens with their logprobs, pacing and an optional failure."""

    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    logprob: float | list[float] = -0.1
    first_delay: float = 0.0  # before the status line (prefill)
    token_delay: float = 0.0
    fail: Failure = None  # refuse: 503 at once; die: drop the connection after `fail_after`;
    # garbage: 200 with a body that is not JSON (an HTML error page from a proxy in between),
    # or in a stream an event that is not JSON after `fail_after` tokens
    fail_after: int = 2  # tokens sent before `die` / `error_event` / `garbage`
    # Tool calls after the tokens, as (function name, JSON arguments), in the OpenAI chat
    # format TGI, vLLM and llama.cpp use: `message.tool_calls`, or streamed `delta.tool_calls`
    # pieces (the first names the function, the rest carry arguments).
    calls: list[tuple[str, str]] = field(default_factory=list)

    def logprobs(self) -> list[float]:
        if isinstance(self.logprob, list):
            return self.logprob
        return [self.logprob] * len(self.tokens)


@dataclass
class Stats:
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of every request, lowercased
    unauthorized: int = 0  # requests refused for a missing or wrong key
    streams_started: int = 0
    streams_finished: int = 0
    streams_abandoned: int = 0  # the client (the router) went away before the end
    calls_abandoned: int = 0  # same for non-streaming answers


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def _count(value: Any) -> int | None:
    """A token count the client sent, or None: this server accepts any value where a real
    engine would answer 4xx (the router's fuzz test wants an engine that accepts anything)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _finish(script: Script, limit: int | None, count: int) -> str:
    if script.calls:
        return "tool_calls"
    return "length" if limit and limit <= count else "stop"


class _Die(Exception):
    """Raised inside a streaming body to cut the connection mid-stream."""


class FakeTGI:
    """The test server; `script` is the default answer, `by_word` picks one by prompt word."""

    def __init__(
        self,
        script: Script | None = None,
        name: str = "fake",
        *,
        api_key: str | None = None,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """`api_key`: demand `Authorization: Bearer <api_key>` (401 otherwise), as a hosted
        API does. `tls`: (certificate chain file, key file) to serve https."""
        self.script = script or Script()
        self.by_word: dict[str, Script] = {}
        self.name = name
        self.api_key = api_key
        self.tls = tls
        # Status codes to answer before the scripts, one per request (e.g. a busy upstream's
        # 429 or 503), with the Retry-After header given.
        self.refusals: list[tuple[int, str | None]] = []
        self.stats = Stats()
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/generate", self.generate, methods=["POST"]),
                Route("/generate_stream", self.generate_stream, methods=["POST"]),
                Route("/", self.root, methods=["POST"]),
                Route("/health", self.health),
                Route("/info", self.info),
                Route("/v1/models", self.models),
            ]
        )

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = "localhost" if self.tls else "127.0.0.1"  # the name in the test certificate
        return f"{scheme}://{host}:{self.port}"

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeTGI:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        tls = {"ssl_certfile": self.tls[0], "ssl_keyfile": self.tls[1]} if self.tls else {}
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", timeout_keep_alive=30, **tls
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake TGI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # do not wait for hanging test streams
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> FakeTGI:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- helpers ---------------------------------------------------------------------------

    def _pick(self, prompt: str) -> Script:
        for word, script in self.by_word.items():
            if word in prompt:
                return script
        return self.script

    async def _tokens(
        self, script: Script, limit: int | None, request: Request | None = None
    ) -> AsyncIterator[tuple[str, float]]:
        pairs = list(zip(script.tokens, script.logprobs(), strict=False))[:limit]
        for index, pair in enumerate(pairs):
            if script.fail in ("die", "error_event", "garbage") and index == script.fail_after:
                raise _Die
            if script.token_delay:
                await asyncio.sleep(script.token_delay)
                if request is not None and await request.is_disconnected():
                    self.stats.calls_abandoned += 1
                    return
            yield pair

    def _refused(self, request: Request) -> Response | None:
        """Records the request's headers; a 401 without the key, or a scripted refusal."""
        self.stats.headers.append({k.lower(): v for k, v in request.headers.items()})
        wanted = f"Bearer {self.api_key}"
        if self.api_key is not None and request.headers.get("authorization") != wanted:
            self.stats.unauthorized += 1
            error = {"message": "Incorrect API key provided", "code": "invalid_api_key"}
            return JSONResponse({"error": error}, 401)
        if self.refusals:
            status, retry_after = self.refusals.pop(0)
            headers = {"Retry-After": retry_after} if retry_after is not None else None
            return JSONResponse({"error": {"message": "busy"}}, status, headers=headers)
        return None

    async def _prefill(self, script: Script) -> Response | None:
        if script.first_delay:
            await asyncio.sleep(script.first_delay)
        if script.fail == "hang":
            await asyncio.sleep(3600)
        if script.fail == "refuse":
            return JSONResponse({"error": "model overloaded", "error_type": "overloaded"}, 503)
        return None

    def _stream(self, script: Script, events: AsyncIterator[bytes]) -> StreamingResponse:
        stats = self.stats

        async def body() -> AsyncIterator[bytes]:
            stats.streams_started += 1
            finished = False
            try:
                async for event in events:
                    yield event
                finished = True
            except _Die:
                finished = True
                if script.fail == "error_event":
                    yield b'data: {"error": "CUDA out of memory", "error_type": "generation"}\n\n'
                    return
                if script.fail == "garbage":
                    yield b"data: <html>502 Bad Gateway</html>\n\n"
                    return
                raise RuntimeError("fake TGI server dies mid-stream (scripted)") from None
            finally:
                if finished:
                    stats.streams_finished += 1
                else:
                    stats.streams_abandoned += 1

        return StreamingResponse(body(), media_type="text/event-stream")

    # --- OpenAI-compatible chat --------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await request.json()
        self.stats.requests.append(body)
        messages = body.get("messages")
        script = self._pick(_last_user_text(messages if isinstance(messages, list) else []))
        refused = await self._prefill(script)
        if refused is not None:
            return refused
        if script.fail == "garbage" and not body.get("stream"):
            return Response("<html>502 Bad Gateway</html>", 200, media_type="text/html")
        want_logprobs = bool(body.get("logprobs"))
        limit = _count(body.get("max_tokens"))
        ident = f"chatcmpl-{self.name}-{next(self._ids)}"
        model = body.get("model") or self.name
        created = int(time.time())

        def entry(token: str, lp: float) -> dict[str, Any]:
            top = [{"token": token, "logprob": lp}] * min(_count(body.get("top_logprobs")) or 0, 20)
            return {"token": token, "logprob": lp, "top_logprobs": top}

        def logprobs(token: str, lp: float) -> dict[str, Any] | None:
            return {"content": [entry(token, lp)]} if want_logprobs else None

        if not body.get("stream"):
            pairs = [pair async for pair in self._tokens(script, limit, request)]
            content = [entry(t, lp) for t, lp in pairs]
            message: dict[str, Any] = {"role": "assistant", "content": "".join(t for t, _ in pairs)}
            if script.calls:
                message["content"] = message["content"] or None
                message["tool_calls"] = [
                    {
                        "id": f"call-{ident}-{i}",
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                    for i, (name, arguments) in enumerate(script.calls)
                ]
            return JSONResponse(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "logprobs": {"content": content} if want_logprobs else None,
                            "finish_reason": _finish(script, limit, len(pairs)),
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 5,
                        "completion_tokens": len(pairs),
                        "total_tokens": 5 + len(pairs),
                    },
                }
            )

        async def events() -> AsyncIterator[bytes]:
            def chunk(
                delta: dict[str, Any], lp: dict[str, Any] | None, finish: str | None
            ) -> bytes:
                data = {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [
                        {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}
                    ],
                }
                return b"data: " + json.dumps(data).encode() + b"\n\n"

            yield chunk({"role": "assistant", "content": ""}, None, None)
            count = 0
            async for token, lp in self._tokens(script, limit):
                count += 1
                yield chunk({"content": token}, logprobs(token, lp), None)
            for i, (name, arguments) in enumerate(script.calls):
                function = {"name": name, "arguments": ""}
                call = {"index": i, "id": f"call-{ident}-{i}", "type": "function"}
                yield chunk({"tool_calls": [{**call, "function": function}]}, None, None)
                half = len(arguments) // 2
                for part in (arguments[:half], arguments[half:]):
                    piece = {"index": i, "function": {"arguments": part}}
                    yield chunk({"tool_calls": [piece]}, None, None)
            yield chunk({}, None, _finish(script, limit, count))
            yield b"data: [DONE]\n\n"

        return self._stream(script, events())

    # --- TGI's own API ----------------------------------------------------------------------

    async def _tgi(self, request: Request, stream: bool) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await request.json()
        self.stats.requests.append(body)
        script = self._pick(str(body.get("inputs", "")))
        refused = await self._prefill(script)
        if refused is not None:
            return refused
        params = body.get("parameters") or {}
        limit = _count(params.get("max_new_tokens"))
        if not stream:
            pairs = [pair async for pair in self._tokens(script, limit, request)]
            out: dict[str, Any] = {"generated_text": "".join(t for t, _ in pairs)}
            if params.get("details"):
                out["details"] = {
                    "finish_reason": "length" if limit and limit <= len(pairs) else "eos_token",
                    "generated_tokens": len(pairs),
                    "seed": None,
                    "prefill": [],
                    "tokens": [
                        {"id": i, "text": t, "logprob": lp, "special": False}
                        for i, (t, lp) in enumerate(pairs)
                    ],
                }
            return JSONResponse(out)

        async def events() -> AsyncIterator[bytes]:
            text = ""
            index = 0
            async for token, lp in self._tokens(script, limit):
                text += token
                index += 1
                event = {
                    "index": index,
                    "token": {"id": index, "text": token, "logprob": lp, "special": False},
                    "generated_text": None,
                    "details": None,
                }
                yield b"data:" + json.dumps(event).encode() + b"\n\n"
            final = {
                "index": index + 1,
                "token": {"id": 0, "text": "", "logprob": 0.0, "special": True},
                "generated_text": text,
                "details": {"finish_reason": "eos_token", "generated_tokens": index, "seed": None},
            }
            yield b"data:" + json.dumps(final).encode() + b"\n\n"

        return self._stream(script, events())

    async def generate(self, request: Request) -> Response:
        return await self._tgi(request, stream=False)

    async def generate_stream(self, request: Request) -> Response:
        return await self._tgi(request, stream=True)

    async def root(self, request: Request) -> Response:
        body = json.loads(await request.body())
        return await self._tgi(request, stream=bool(body.get("stream")))

    async def health(self, _: Request) -> Response:
        return Response(status_code=200)

    async def info(self, _: Request) -> Response:
        return JSONResponse({"model_id": self.name, "version": "fake-tgi-test-server"})

    async def models(self, _: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": self.name, "object": "model"}]})


def main() -> None:
    parser = argparse.ArgumentParser(description="TGI-protocol test server (a test double)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument(
        "--paced",
        type=float,
        nargs=2,
        metavar=("PREFILL", "PER_TOKEN"),
        help="prompts containing 'paced' wait PREFILL seconds, then PER_TOKEN between tokens",
    )
    parser.add_argument("--long", type=int, help="prompts containing 'long' get this many tokens")
    args = parser.parse_args()
    tokens = [f" t{i}" for i in range(args.tokens)]
    server = FakeTGI(Script(tokens=tokens), name="bench")
    if args.paced:
        prefill, per_token = args.paced
        server.by_word["paced"] = Script(tokens=tokens, first_delay=prefill, token_delay=per_token)
    if args.long:
        server.by_word["long"] = Script(tokens=[f" t{i}" for i in range(args.long)])
    serve_on_loopback(server.app, args.port)


if __name__ == "__main__":
    main()
