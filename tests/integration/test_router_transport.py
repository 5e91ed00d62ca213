"""The router's upstream HTTP (an Upstream over the client its lifespan builds) against scripted
raw-socket servers on loopback: keep-alive, what goes on the wire, chunked streaming, bodies cut
off, timeouts, connections closed while idle, the pool limit, connections given back."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import pytest

from onion_contract.router_config import RouterLayer
from onion_lab.sockets import free_port
from onion_router.protocol.types import ChatRequest
from onion_router.upstream import Upstream, UpstreamError, chat_url, http_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedServer:
    """A TCP server on 127.0.0.1 whose every connection runs `handler`; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self.handler(reader, writer)
        except asyncio.CancelledError:
            pass  # the test is over
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request (head and Content-Length body), or None at the end of the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + (await reader.readexactly(length) if length else b"")
        self.requests.append(request)
        return request


def chat_body(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"content": text}}]}).encode()


def answer(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chat_answer(text: str) -> bytes:
    return answer(chat_body(text), b"content-type: application/json")


def event(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode() + b"\n\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def request(text: str = "hi", request_id: str = "") -> ChatRequest:
    messages = ({"role": "user", "content": text},)
    return ChatRequest("chat", "onion", messages, {}, stream=False, request_id=request_id)


def upstream(url: str, client: httpx2.AsyncClient) -> Upstream:
    return Upstream(RouterLayer(name="core", url=url, model="core-model"), client)


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with http_client(timeout=5) as c:  # as the router's lifespan builds it
        yield c


def one_connection() -> httpx2.AsyncClient:
    """A client with a pool of one connection, waited for at most 0.2 s: a connection the
    router failed to give back shows up as a pool timeout on the next request."""
    limits = httpx2.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(5, pool=0.2))


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://h:80", "http://h:80/v1/chat/completions"),
        ("http://h:80/v1", "http://h:80/v1/chat/completions"),
        ("https://h/openai/v1", "https://h/openai/v1/chat/completions"),
        ("http://h/x", "http://h/x/v1/chat/completions"),
        ("http://h/v1/chat/completions", "http://h/v1/chat/completions"),
        ("http://h/v1?api-version=2", "http://h/v1/chat/completions?api-version=2"),
    ],
)
def test_the_chat_url_of_a_model_server(base: str, url: str) -> None:
    assert chat_url(base) == url


async def test_keep_alive_serves_many_requests_on_one_connection(
    client: httpx2.AsyncClient,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (asked := await server.read_request(reader)) is not None:
            n = len(server.requests)
            if b'"stream":true' not in asked:
                writer.write(chat_answer(f"n{n}"))
                continue
            writer.write(CHUNKED_HEAD + chunk(event(f"s{n}") + b"data: [DONE]\n\n"))
            await writer.drain()
            await asyncio.sleep(0.01)  # the end of the body comes apart, as uvicorn sends it
            writer.write(b"0\r\n\r\n")

    async with ScriptedServer(handler) as server:
        core = upstream(server.url, client)
        texts = [(await core.complete(request(), logprobs=False)).text for _ in range(3)]
        for _ in range(2):
            texts += [c.text async for c in await core.open_stream(request(), logprobs=False)]
    assert texts == ["n1", "n2", "n3", "s4", "s5"]
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in first or b"\r\nhost: 127.0.0.1:" in first


async def test_what_goes_on_the_wire(client: httpx2.AsyncClient) -> None:
    """Compact JSON in UTF-8 with one content type, the bearer key (EMPTY for a keyless
    server), the request id, the served model's name, and the router's own user agent."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(chat_answer("ok"))

    async with ScriptedServer(handler) as server:
        core = upstream(server.url, client)
        await core.complete(request("héllo ✓", request_id="r-1"), logprobs=True)
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines.count(b"content-type: application/json") == 1
    assert b"authorization: bearer empty" in lines and b"x-request-id: r-1" in lines
    assert any(line.startswith(b"user-agent: onion-router") for line in lines)
    assert (
        body
        == (
            '{"model":"core-model","messages":[{"role":"user","content":"héllo ✓"}],'
            '"logprobs":true,"stream":false}'
        ).encode()
    )


async def test_a_chunked_body_arrives_chunk_by_chunk(client: httpx2.AsyncClient) -> None:
    more = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(event("one")))
        await more.wait()  # the router must see the first chunk before the second exists
        writer.write(chunk(event("two") + b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await server.read_request(reader)

    async with ScriptedServer(handler) as server:
        stream = await upstream(server.url, client).open_stream(request(), logprobs=False)
        assert (await anext(stream)).text == "one"
        more.set()
        assert [c.text async for c in stream] == ["two"]


async def test_a_compressed_body_is_decoded(client: httpx2.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(answer(gzip.compress(chat_body("unzipped")), b"content-encoding: gzip"))

    async with ScriptedServer(handler) as server:
        core = upstream(server.url, client)
        assert (await core.complete(request(), logprobs=False)).text == "unzipped"


async def test_a_body_cut_off_is_an_error_and_its_connection_is_not_reused(
    client: httpx2.AsyncClient,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if server.connections == 1:
            writer.write(CHUNKED_HEAD + chunk(event("one")))
            await writer.drain()
            return  # dies mid-stream
        writer.write(chat_answer("fine"))
        await server.read_request(reader)

    async with ScriptedServer(handler) as server:
        core = upstream(server.url, client)
        stream = await core.open_stream(request(), logprobs=False)
        assert (await anext(stream)).text == "one"
        with pytest.raises(UpstreamError) as err:
            await anext(stream)
        assert (err.value.status, err.value.code) == (502, "upstream_broken")
        assert "mid-stream" in err.value.message
        assert (await core.complete(request(), logprobs=False)).text == "fine"
    assert server.connections == 2


async def test_a_whole_answer_cut_off_is_an_error_and_frees_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if server.connections == 1:
            writer.write(CHUNKED_HEAD + chunk(b"part of it"))
            await writer.drain()
            return  # dies before the end
        writer.write(chat_answer("fine"))
        await server.read_request(reader)

    async with ScriptedServer(handler) as server, one_connection() as client:
        core = upstream(server.url, client)
        with pytest.raises(UpstreamError) as err:
            await core.complete(request(), logprobs=False)
        assert err.value.status == 502
        assert (await core.complete(request(), logprobs=False)).text == "fine"  # it is back
    assert server.connections == 2


async def test_a_silent_server_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await asyncio.sleep(30)

    async with ScriptedServer(handler) as server, http_client(timeout=0.2) as client:
        core = upstream(server.url, client)
        for ask in (core.complete, core.open_stream):
            with pytest.raises(UpstreamError) as err:
                await ask(request(), logprobs=False)
            assert (err.value.status, err.value.code) == (504, "upstream_timeout")


async def test_nobody_listening_is_unreachable(client: httpx2.AsyncClient) -> None:
    core = upstream(f"http://127.0.0.1:{free_port()}", client)
    with pytest.raises(UpstreamError) as err:
        await core.complete(request(), logprobs=False)
    assert (err.value.status, err.value.code) == (502, "upstream_unreachable")
    assert not await core.reachable()


async def test_closing_a_stream_early_closes_its_connection(client: httpx2.AsyncClient) -> None:
    gone = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(event("one")))
        if await reader.read() == b"":  # what a model server sees when the router walks away
            gone.set()

    async with ScriptedServer(handler) as server:
        stream = await upstream(server.url, client).open_stream(request(), logprobs=False)
        assert (await anext(stream)).text == "one"
        await stream.aclose()
        await asyncio.wait_for(gone.wait(), 5)


async def test_a_connection_the_server_closed_while_idle_is_replaced(
    client: httpx2.AsyncClient,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if server.connections == 1:
            writer.write(chat_answer("first"))
            await writer.drain()
            return  # the server's keep-alive timeout: it closes the idle connection
        writer.write(chat_answer("second"))
        await server.read_request(reader)

    async with ScriptedServer(handler) as server:
        core = upstream(server.url, client)
        assert (await core.complete(request(), logprobs=False)).text == "first"
        await asyncio.sleep(0.1)  # the close reaches the router while the connection is idle
        assert (await core.complete(request(), logprobs=False)).text == "second"
    assert server.connections == 2


async def test_a_body_delimited_by_the_end_of_the_connection(client: httpx2.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + chat_body("all of it"))

    async with ScriptedServer(handler) as server:
        core = upstream(server.url, client)
        assert (await core.complete(request(), logprobs=False)).text == "all of it"


async def test_an_informational_answer_is_skipped(client: httpx2.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + chat_answer("done"))
        await server.read_request(reader)

    async with ScriptedServer(handler) as server:
        core = upstream(server.url, client)
        assert (await core.complete(request(), logprobs=False)).text == "done"


async def test_the_pool_limit_makes_callers_wait_then_time_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(CHUNKED_HEAD + chunk(event("x")))
            await asyncio.sleep(0.4)  # the answer is still coming: its connection is in use
            writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    async with ScriptedServer(handler) as server, one_connection() as client:
        core = upstream(server.url, client)
        stream = await core.open_stream(request(), logprobs=False)
        with pytest.raises(UpstreamError) as err:
            await core.complete(request(), logprobs=False)
        assert err.value.status == 504
        assert [c.text async for c in stream] == ["x"]
        stream = await core.open_stream(request(), logprobs=False)  # the connection came back
        assert [c.text async for c in stream] == ["x"]
    assert server.connections == 1


async def test_every_way_a_request_ends_gives_its_connection_back() -> None:
    """An answer read whole, a refusal (whole or streamed), a stream read to its end, one left
    early, one that sent an error event: after each, the next request gets the one connection."""
    refusal = b'{"error": {"message": "busy"}}'
    answers = [
        chat_answer("whole"),
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n%s"
        % (len(refusal), refusal),
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\nretry-after: 3\r\n\r\n" + chunk(refusal) + b"0\r\n\r\n",
        CHUNKED_HEAD + chunk(event("a") + b"data: [DONE]\n\n") + b"0\r\n\r\n",
        CHUNKED_HEAD + chunk(event("b") + event("c")) + b"0\r\n\r\n",
        CHUNKED_HEAD + chunk(b'data: {"error": "overloaded"}\n\n') + b"0\r\n\r\n",
        chat_answer("last"),
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(answers[len(server.requests) - 1])

    async with ScriptedServer(handler) as server, one_connection() as client:
        core = upstream(server.url, client)
        assert (await core.complete(request(), logprobs=False)).text == "whole"
        with pytest.raises(UpstreamError) as err:
            await core.complete(request(), logprobs=False)
        assert err.value.status == 503 and err.value.message.endswith("HTTP 503: busy")
        with pytest.raises(UpstreamError) as err:
            await core.open_stream(request(), logprobs=False)
        assert (err.value.status, err.value.retry_after) == (429, 3)
        assert err.value.message.endswith("HTTP 429: busy")
        assert [c.text async for c in await core.open_stream(request(), logprobs=False)] == ["a"]
        left = await core.open_stream(request(), logprobs=False)
        assert (await anext(left)).text == "b"
        await left.aclose()
        with pytest.raises(UpstreamError, match="overloaded"):
            async for _ in await core.open_stream(request(), logprobs=False):
                pass
        assert (await core.complete(request(), logprobs=False)).text == "last"


async def test_an_unread_body_pushes_back_on_the_server(client: httpx2.AsyncClient) -> None:
    piece = event("x" * (64 * 1024))
    pieces = 512  # 32 MiB: more than the kernel's socket buffers on both sides hold
    backlog: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(CHUNKED_HEAD)
        for _ in range(pieces):
            writer.write(chunk(piece))
        await asyncio.sleep(1.0)  # meanwhile the router reads nothing
        backlog.append(writer.transport.get_write_buffer_size())
        writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        await server.read_request(reader)

    async with ScriptedServer(handler) as server:
        stream = await upstream(server.url, client).open_stream(request(), logprobs=False)
        received = len((await anext(stream)).text)
        await asyncio.sleep(1.5)
        received += sum([len(c.text) async for c in stream])
    assert received == 64 * 1024 * pieces
    # The router stopped reading while it had not used what it read, so most of the body
    # waited on the server's side instead of piling up in the router's memory.
    assert backlog and backlog[0] > len(piece) * pieces // 2
