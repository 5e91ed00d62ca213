"""The wire under the router's upstream calls: an httpx2 transport for plain HTTP/1.1 on asyncio
and httptools (llhttp, the C parser uvicorn uses).

The router talks to model servers through huggingface_hub's AsyncInferenceClient, which sends
through an httpx2 client. httpx2's default transport (httpcore2 with the pure-Python h11 parser)
was the largest single cost on the router's hot path (see bench/router_overhead.py). This module
replaces the wire, and `Client` trims two costs of building each request (URL parsing, JSON
encoding); the client API, its exceptions and the hub code above stay as they are.

- Keep-alive connections per origin, at most `max_connections` in use at once (waiting for one
  is bounded by the pool timeout), at most `max_keepalive_connections` idle, each idle for at
  most `keepalive_expiry` seconds.
- A reused connection that the server closed while it sat idle is replaced once, transparently,
  when it fails before any byte of the answer came back (the server never saw the request).
- Closing a response before its end closes its connection: that is how a model server learns
  that the client went away and stops generating.
- Streamed bodies are handed over chunk by chunk; reading pauses while 256 KiB are unread.
- Anything else (https, proxies' CONNECT, methods other than GET and POST) goes to httpx2's
  default transport, which verifies https against the system's CA bundle (`SSL_CERT_FILE`
  and `SSL_CERT_DIR` if set) plus the CA file a tier names.
"""

from __future__ import annotations

import asyncio
import math
import os
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, cast

import httptools
import httpx2
import orjson

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_OWN_METHODS = frozenset({"GET", "POST"})


class _Connection(asyncio.Protocol):
    """One TCP connection; carries one request at a time and parses its answer as it arrives."""

    def __init__(self, origin: tuple[str, int]) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.error: Exception | None = None
        self.chunks: deque[bytes] = deque()
        self._unread = 0
        self._paused = False
        self._got_bytes = False
        self._length_known = False
        self._keep_alive = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(httpx2.RemoteProtocolError(f"malformed answer from the server: {err}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and not self.complete and not self._length_known:
            self.complete = True  # a body delimited by the end of the connection
        elif not self.complete:
            what = f": {exc}" if exc else ""
            self._fail(
                httpx2.RemoteProtocolError(f"server disconnected before the answer ended{what}")
            )
        self._wake()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value
        ):
            self._length_known = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self.status >= 200 or self.status == 101:
            self.head_done = True
            self._keep_alive = self._parser.should_keep_alive()  # only valid until the end
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._unread += len(body)
        if self._unread > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:  # an informational (1xx) answer: the real one follows
            self.reason, self.headers, self._length_known = b"", [], False
            return
        self.complete = True
        self._wake()

    # -- used by the transport ---------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    @property
    def reusable(self) -> bool:
        return self.complete and self.usable and self._keep_alive

    @property
    def answered(self) -> bool:
        """Whether any byte of the current answer has arrived."""
        return self._got_bytes

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self.transport.write(data)  # never raises: a closed peer shows up as connection_lost

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self._unread -= len(chunk)
        self._resume_if_drained()
        return chunk

    def take_all(self) -> bytes:
        body = b"".join(self.chunks)
        self.chunks.clear()
        self._unread = 0
        self._resume_if_drained()
        return body

    def _resume_if_drained(self) -> None:
        if self._paused and self._unread < _LOW_WATER and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    async def wait(self, seconds: float | None) -> None:
        """Until the parser has news (head, body, end, error), at most `seconds`."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(seconds, _expire, waiter) if seconds is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx2.ReadTimeout("timed out waiting for the server's answer"))


class _Body(httpx2.AsyncByteStream):
    """A response body read from its connection; hands the connection back when done."""

    def __init__(self, pool: HTTP11Transport, conn: _Connection, timeout: float | None) -> None:
        self._pool = pool
        self._conn = conn
        self._timeout = timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        try:
            while True:
                if conn.chunks:
                    yield conn.take()
                elif conn.complete:
                    break
                elif conn.error is not None:
                    raise conn.error
                else:
                    await conn.wait(self._timeout)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release(self._conn)


class HTTP11Transport(httpx2.AsyncBaseTransport):
    """httpx2 transport: plain HTTP/1.1 with keep-alive on asyncio and httptools."""

    def __init__(
        self, limits: httpx2.Limits | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        limits = limits or httpx2.Limits(max_connections=100, max_keepalive_connections=20)
        self._max_idle = limits.max_keepalive_connections or 0
        self._expiry = limits.keepalive_expiry if limits.keepalive_expiry is not None else math.inf
        self._slots = asyncio.Semaphore(limits.max_connections or 1_000_000)
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._fallback = httpx2.AsyncHTTPTransport(limits=limits, verify=tls or True)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme != "http" or request.method not in _OWN_METHODS:
            return await self._fallback.handle_async_request(request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        message = _serialize(request, await request.aread())
        conn = await self._open(url, message, timeouts)
        if not conn.complete:
            body = _Body(self, conn, timeouts.get("read"))
            return httpx2.Response(
                conn.status, headers=conn.headers, stream=body, extensions=_extensions(conn)
            )
        # The whole answer came with its head (a short answer usually does): hand it over read,
        # which spares httpx2's chain of async iterators, and the connection back at once.
        return self._arrived(conn).response(request)

    async def post_whole(
        self,
        url: httpx2.URL,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeouts: dict[str, float | None],
    ) -> httpx2.Response:
        """POST `body` to a plain-http `url` and read the whole answer: `Client.post` without
        httpx2's request object and send steps. `headers` go as given, after Host and length."""
        head = [(b"Host", url.netloc), (b"Content-Length", b"%d" % len(body)), *headers]
        conn = await self._open(url, _message(b"POST", url.raw_path, head, body), timeouts)
        if conn.complete:
            answer = self._arrived(conn)
        else:  # the body hands the connection back at its end, or closes it on a failure
            answer = _Answer(conn)
            reading = _Body(self, conn, timeouts.get("read"))
            answer.body = b"".join([piece async for piece in reading])
        return answer.response(httpx2.Request("POST", url))

    def _arrived(self, conn: _Connection) -> _Answer:
        """An answer that came whole with its head; its connection goes back to the pool."""
        answer = _Answer(conn)
        answer.body = conn.take_all()
        self._release(conn)
        return answer

    async def _open(
        self, url: httpx2.URL, message: bytes, timeouts: dict[str, float | None]
    ) -> _Connection:
        """Take a slot and a connection, send, and wait for the answer's head."""
        await self._take_slot(timeouts.get("pool"))
        try:
            conn = await self._connection((url.host, url.port or 80), timeouts.get("connect"))
            return await self._exchange(conn, message, timeouts)
        except BaseException:
            self._slots.release()
            raise

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        await self._fallback.aclose()

    async def _take_slot(self, seconds: float | None) -> None:
        if not self._slots.locked():
            # A free slot is taken at once. wait_for would run acquire() as a task of its own
            # (on 3.11), two turns of the event loop on every request before it is sent.
            await self._slots.acquire()
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), seconds)
        except TimeoutError:
            raise httpx2.PoolTimeout("no free connection to the server in time") from None

    async def _connection(self, origin: tuple[str, int], seconds: float | None) -> _Connection:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable and now - conn.idle_since < self._expiry:
                conn.reused = True
                return conn
            conn.close()
        conn = _Connection(origin)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: conn, *origin), seconds)
        except TimeoutError:
            raise httpx2.ConnectTimeout(
                f"connecting to {origin[0]}:{origin[1]} timed out"
            ) from None
        except OSError as err:
            raise httpx2.ConnectError(f"cannot connect to {origin[0]}:{origin[1]}: {err}") from err
        return conn

    async def _exchange(
        self, conn: _Connection, message: bytes, timeouts: dict[str, float | None]
    ) -> _Connection:
        """Send the request and wait for the answer's head; one retry on a stale reused one."""
        try:
            conn.send(message)
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(timeouts.get("read"))
        except httpx2.RemoteProtocolError:
            conn.close()
            if not conn.reused or conn.answered:
                raise
            fresh = await self._connection(conn.origin, timeouts.get("connect"))
            return await self._exchange(fresh, message, timeouts)
        except BaseException:
            conn.close()
            raise
        return conn

    def _release(self, conn: _Connection) -> None:
        self._slots.release()
        if not conn.reusable:
            conn.close()
            return
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """httpx2's default verification (the system's CA bundle), trusting `ca_file` as well."""
    context = httpx2.create_ssl_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=os.path.expanduser(ca_file))
        except (OSError, ssl.SSLError) as err:
            raise ValueError(f"cannot load the CA file {ca_file}: {err}") from None
    return context


def _extensions(conn: _Connection) -> dict[str, Any]:
    return {"http_version": b"HTTP/1.1", "reason_phrase": conn.reason}


class _Answer:
    """An answer read whole; its head is kept apart from the connection, which may serve the
    next request as soon as it is back in the pool."""

    def __init__(self, conn: _Connection) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self.extensions = _extensions(conn)
        self.body = b""

    def response(self, request: httpx2.Request) -> httpx2.Response:
        response = httpx2.Response(
            self.status,
            headers=self.headers,
            stream=httpx2.ByteStream(self.body),
            request=request,
            extensions=self.extensions,
        )
        response.read()  # decodes a compressed body, as httpx2 would
        return response


def _serialize(request: httpx2.Request, body: bytes) -> bytes:
    headers = request.headers.raw
    chunked = any(k.lower() == b"transfer-encoding" and b"chunked" in v.lower() for k, v in headers)
    if chunked:  # httpx2 streams bodies of unknown length; by now it is read whole
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    return _message(request.method.encode(), request.url.raw_path, headers, body)


def _message(
    method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]], body: bytes
) -> bytes:
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines += (b"\r\n", body)
    return b"".join(lines)


class Client(httpx2.AsyncClient):
    """httpx2's client, for the hub to send through, with what the router's calls to model
    servers do not use taken off their path:
    - each model server's URL is parsed once, not on every request, and JSON bodies are encoded
      by orjson;
    - a JSON POST to a plain-http server goes straight to `HTTP11Transport.post_whole`, without
      httpx2's request object, auth and redirect steps, event hooks or cookies, when the client
      has none of those configured. The answer is a real, read httpx2 Response, so the hub checks
      its status as ever; the wire carries the same request httpx2 would send.
    Everything else (streams, other methods, https) is httpx2's own."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._urls: dict[str, httpx2.URL] = {}

    def _parsed(self, url: httpx2.URL | str) -> httpx2.URL:
        if not isinstance(url, str):
            return url
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx2.URL(url)
            if len(self._urls) > 1024:  # one per model server endpoint; never grows big
                self._urls.clear()
        return parsed

    def build_request(
        self,
        method: str,
        url: httpx2.URL | str,
        *,
        json: Any = None,
        content: Any = None,
        headers: Any = None,
        **kwargs: Any,
    ) -> httpx2.Request:
        if json is not None and content is None and not kwargs.get("data"):
            content = orjson.dumps(json)
            headers = dict(headers or {})
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        return super().build_request(
            method, self._parsed(url), content=content, headers=headers, **kwargs
        )

    async def post(self, url: httpx2.URL | str, **kwargs: Any) -> httpx2.Response:
        parsed = self._parsed(url)
        json, given = kwargs.get("json"), kwargs.get("headers") or {}
        plain = (
            json is not None
            and isinstance(given, Mapping)
            and all(v is None for k, v in kwargs.items() if k not in _FAST_POST_ARGS)
            and parsed.scheme == "http"
            and not (self.auth or self.follow_redirects or self.cookies or self.params)
            and not any(self.event_hooks.values())
        )
        transport = self._transport_for_url(parsed)  # a proxy from the environment may apply
        if not plain or not isinstance(transport, HTTP11Transport):
            return await super().post(parsed, **kwargs)
        timeout = kwargs.get("timeout", httpx2.USE_CLIENT_DEFAULT)
        timeouts = self.timeout if timeout is httpx2.USE_CLIENT_DEFAULT else httpx2.Timeout(timeout)
        ours = {name.lower(): str(value) for name, value in given.items()}
        ours.setdefault("content-type", "application/json")
        headers = [(k, v) for k, v in self.headers.raw if k.decode().lower() not in ours]
        headers += [(k.encode(), v.encode("latin-1")) for k, v in ours.items()]
        if any(b"\r" in v or b"\n" in v for _, v in headers):
            raise httpx2.LocalProtocolError("a header value holds a line break")
        return await transport.post_whole(parsed, headers, orjson.dumps(json), timeouts.as_dict())


# The only arguments of Client.post that may be set on the direct path.
_FAST_POST_ARGS = frozenset({"json", "headers", "timeout"})
