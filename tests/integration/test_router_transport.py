"""The router's HTTP/1.1 transport against scripted raw-socket servers on loopback: keep-alive,
chunked streaming, bodies cut off, timeouts, stale connections, the pool limit."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import pytest

from onion_lab.sockets import free_port
from onion_router.transport import Client, HTTP11Transport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedServer:
    """A TCP server on 127.0.0.1 whose every connection runs `handler`; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_peer = asyncio.Event()
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


def answer(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with Client(transport=HTTP11Transport(), timeout=5) as c:  # as the router's
        yield c


async def test_keep_alive_serves_many_requests_on_one_connection(
    client: httpx2.AsyncClient,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(answer(b'{"n": %d}' % len(server.requests)))

    async with ScriptedServer(handler) as server:
        bodies = [
            (await client.post(f"{server.url}/x?q=1", json={"i": i})).json() for i in range(3)
        ]
    assert bodies == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /x?q=1 HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in first and first.endswith(b'{"i":0}')


async def test_json_bodies_go_compact_in_utf8_with_one_content_type(
    client: httpx2.AsyncClient,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(answer(b"ok"))

    async with ScriptedServer(handler) as server:
        # huggingface_hub sends its own lower-case content-type along with the JSON
        hub_headers = {"content-type": "application/json"}
        await client.post(server.url, json={"text": "héllo ✓", "n": [1, 2]}, headers=hub_headers)
        await client.post(server.url, json={"a": 1})
    for request in server.requests:
        assert request.lower().count(b"\r\ncontent-type: application/json\r\n") == 1
    assert server.requests[0].endswith('{"text":"héllo ✓","n":[1,2]}'.encode())
    assert server.requests[1].endswith(b'{"a":1}')


async def test_a_json_post_goes_on_the_wire_as_httpx2_would_send_it() -> None:
    """Client.post sends JSON straight to the transport; the request is the same as through
    httpx2's own steps (header order aside), and the answer a real, read httpx2 Response."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(answer(b'{"ok": true}', b"content-type: application/json"))

    def lines(raw: bytes) -> tuple[set[bytes], bytes]:
        head, _, body = raw.partition(b"\r\n\r\n")
        return set(head.lower().split(b"\r\n")), body

    hub_headers = {"authorization": "Bearer EMPTY", "x-request-id": "r1"}
    async with (
        ScriptedServer(handler) as server,
        Client(transport=HTTP11Transport(), timeout=5) as ours,
        httpx2.AsyncClient(transport=HTTP11Transport(), timeout=5) as theirs,
    ):
        url = f"{server.url}/v1/chat/completions"
        for client in (ours, theirs):
            response = await client.post(url, json={"text": "héllo"}, headers=hub_headers)
            assert response.status_code == 200 and response.json() == {"ok": True}
            assert response.request.url == url and response.is_closed
            response.raise_for_status()  # what the hub calls: needs the request
    direct, standard = server.requests
    assert lines(direct) == lines(standard)
    assert direct.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")


async def test_a_chunked_body_arrives_chunk_by_chunk(client: httpx2.AsyncClient) -> None:
    more = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"data: one\n\n"))
        await more.wait()  # the client must see the first chunk before the second exists
        writer.write(chunk(b"data: two\n\n") + b"0\r\n\r\n")
        await server.read_request(reader)

    async with (
        ScriptedServer(handler) as server,
        client.stream("POST", server.url, json={}) as response,
    ):
        pieces = response.aiter_raw()
        assert await anext(pieces) == b"data: one\n\n"
        more.set()
        assert [p async for p in pieces] == [b"data: two\n\n"]


async def test_a_compressed_body_is_decoded(client: httpx2.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(answer(gzip.compress(b'{"ok": true}'), b"content-encoding: gzip"))

    async with ScriptedServer(handler) as server:
        assert (await client.get(server.url)).json() == {"ok": True}
        assert (await client.post(server.url, json={})).json() == {"ok": True}  # direct path


async def test_a_body_cut_off_raises_and_its_connection_is_not_reused(
    client: httpx2.AsyncClient,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if server.connections == 1:
            writer.write(CHUNKED_HEAD + chunk(b"data: one\n\n"))
            await writer.drain()
            return  # dies mid-stream
        writer.write(answer(b"fine"))
        await server.read_request(reader)

    async with ScriptedServer(handler) as server:
        with pytest.raises(httpx2.RemoteProtocolError):
            async with client.stream("POST", server.url, json={}) as response:
                async for _ in response.aiter_raw():
                    pass
        assert (await client.post(server.url, json={})).text == "fine"
    assert server.connections == 2


async def test_a_whole_answer_cut_off_raises_and_frees_its_slot() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if server.connections == 1:
            writer.write(CHUNKED_HEAD + chunk(b"part of it"))
            await writer.drain()
            return  # dies before the end
        writer.write(answer(b"fine"))
        await server.read_request(reader)

    async with ScriptedServer(handler) as server, one_connection() as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.post(server.url, json={})
        assert (await client.post(server.url, json={})).text == "fine"  # the one slot is back
    assert server.connections == 2


async def test_a_silent_server_gives_a_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await asyncio.sleep(30)

    async with (
        ScriptedServer(handler) as server,
        Client(transport=HTTP11Transport(), timeout=0.2) as client,
    ):
        with pytest.raises(httpx2.ReadTimeout):
            await client.post(server.url, json={})
        with pytest.raises(httpx2.ReadTimeout):
            await client.get(server.url)


async def test_nobody_listening_gives_a_connect_error(client: httpx2.AsyncClient) -> None:
    with pytest.raises(httpx2.ConnectError):
        await client.post(f"http://127.0.0.1:{free_port()}/", json={})


async def test_closing_a_stream_early_closes_its_connection(client: httpx2.AsyncClient) -> None:
    gone = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"data: one\n\n"))
        if await reader.read() == b"":  # what a model server sees when the router walks away
            gone.set()

    async with ScriptedServer(handler) as server:
        async with client.stream("POST", server.url, json={}) as response:
            assert await anext(response.aiter_raw()) == b"data: one\n\n"
        await asyncio.wait_for(gone.wait(), 5)


async def test_a_connection_closed_while_idle_is_replaced_transparently(
    client: httpx2.AsyncClient,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if server.connections == 1:
            writer.write(answer(b"first"))
            await server.read_request(reader)  # the server times the connection out just now
            return
        writer.write(answer(b"second"))
        await server.read_request(reader)

    async with ScriptedServer(handler) as server:
        assert (await client.post(server.url, json={})).text == "first"
        assert (await client.post(server.url, json={})).text == "second"
    assert server.connections == 2


async def test_a_body_delimited_by_the_end_of_the_connection(client: httpx2.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")

    async with ScriptedServer(handler) as server:
        assert (await client.get(server.url)).text == "all of it"
        assert (await client.post(server.url, json={})).text == "all of it"


async def test_an_informational_answer_is_skipped(client: httpx2.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"done"))
        await server.read_request(reader)

    async with ScriptedServer(handler) as server:
        response = await client.post(server.url, json={})
    assert (response.status_code, response.text) == (200, "done")


def one_connection() -> httpx2.AsyncClient:
    """A client over the transport with a pool of one connection, waited for at most 0.2 s."""
    limits = httpx2.Limits(max_connections=1, max_keepalive_connections=1)
    return Client(transport=HTTP11Transport(limits), timeout=httpx2.Timeout(5, pool=0.2))


async def test_the_pool_limit_makes_callers_wait_then_time_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(CHUNKED_HEAD + chunk(b"x"))
            await asyncio.sleep(0.4)  # the answer is still coming: its connection is in use
            writer.write(b"0\r\n\r\n")

    async with ScriptedServer(handler) as server, one_connection() as client:
        async with client.stream("POST", server.url, json={}) as response:
            with pytest.raises(httpx2.PoolTimeout):
                await client.post(server.url, json={})
            assert await response.aread() == b"x"
        assert (await client.post(server.url, json={})).text == "x"  # the slot came back
    assert server.connections == 1


async def test_an_answer_that_came_whole_frees_its_connection_at_once() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(answer(b"whole"))

    async with (
        ScriptedServer(handler) as server,
        one_connection() as client,
        client.stream("POST", server.url, json={}) as response,
    ):
        # Not read yet, but all here: the one connection is free for the next request.
        assert (await client.post(server.url, json={})).text == "whole"
        assert await response.aread() == b"whole"
    assert server.connections == 1


async def test_other_methods_go_through_httpx2s_own_transport(client: httpx2.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(answer(b"put ok"))
        await server.read_request(reader)

    async with ScriptedServer(handler) as server:
        assert (await client.put(server.url, content=b"x")).text == "put ok"
    assert server.requests[0].startswith(b"PUT / HTTP/1.1")


async def test_an_unread_body_pushes_back_on_the_server(client: httpx2.AsyncClient) -> None:
    body = b"x" * (64 * 1024)
    pieces = 512  # 32 MiB: more than the kernel's socket buffers on both sides hold
    backlog: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(CHUNKED_HEAD)
        for _ in range(pieces):
            writer.write(chunk(body))
        await asyncio.sleep(1.0)  # meanwhile the client reads nothing
        backlog.append(writer.transport.get_write_buffer_size())
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await server.read_request(reader)

    async with (
        ScriptedServer(handler) as server,
        client.stream("POST", server.url, json={}) as response,
    ):
        raw = response.aiter_raw()
        received = len(await anext(raw))
        await asyncio.sleep(1.5)
        received += sum([len(piece) async for piece in raw])
    assert received == len(body) * pieces
    # The transport stopped reading at its high-water mark, so most of the body waited on
    # the server's side instead of piling up in the router's memory.
    assert backlog and backlog[0] > len(body) * pieces // 2
