"""The gateway's lean subgraph connections (gateway/transport.py) against a real socket server:
keep-alive reuse, the gateway signature on what is actually sent, answers framed by length or
by chunks, a connection the subgraph closes, and, above all, a request that times out never
leaves its connection in the pool (its late answer must not become the next caller's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from doorward_kit.gateway_signature import (
    CLIENT_ADDRESS_HEADER,
    GatewaySigner,
    GatewayVerifier,
    SignatureRefused,
)
from gateway.transport import SubgraphConnectionError, SubgraphTransport

pytestmark = pytest.mark.unit


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Answer = Callable[[Seen, int], Awaitable[bytes]]


@dataclass
class Server:
    """A tiny HTTP/1.1 server: parses each request, lets `answer` write the raw reply."""

    answer: Answer
    # Bodies after whose answer the server closes the connection without saying so.
    hang_up_after: frozenset[bytes] = frozenset()
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> httpx.URL:
        return httpx.URL(f"http://127.0.0.1:{self.port}/graphql")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = h.decode("latin-1").partition(":")
                    assert name.lower() not in headers, f"header {name} sent twice"
                    headers[name.lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(method, target, headers, body)
                self.requests.append(seen)
                reply = await self.answer(seen, conn)
                if not reply:
                    writer.close()
                    return
                writer.write(reply)
                await writer.drain()
                if seen.body in self.hang_up_after:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def framed(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return (f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{head}"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


async def echo(seen: Seen, conn: int) -> bytes:
    return framed(b'{"data":{"got":%s,"conn":%d}}' % (seen.body, conn))


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    running = Server(echo)
    await running.start()
    yield running
    await running.stop()


async def test_requests_share_one_kept_alive_connection(server: Server) -> None:
    transport = SubgraphTransport(server.url)
    try:
        answers = [await transport.post(server.url, b"%d" % n, {"content-type": "application/json"})
                   for n in range(3)]
    finally:
        await transport.aclose()
    assert [a[0] for a in answers] == [200, 200, 200]
    assert [a[1] for a in answers] == [b'{"data":{"got":%d,"conn":1}}' % n for n in range(3)]
    assert server.connections == 1
    assert server.requests[0].method == "POST" and server.requests[0].target == "/graphql"
    assert server.requests[0].headers["host"] == f"127.0.0.1:{server.port}"


async def test_what_is_sent_carries_a_signature_the_subgraph_accepts(server: Server) -> None:
    key = Ed25519PrivateKey.generate()
    verifier = GatewayVerifier(key.public_key())
    transport = SubgraphTransport(server.url, signer=GatewaySigner(key))
    headers = {"content-type": "application/json", "authorization": "Bearer t",
               CLIENT_ADDRESS_HEADER: " 203.0.113.9 "}
    try:
        await transport.post(server.url, b'{"query":"{a}"}', headers)
    finally:
        await transport.aclose()
    seen = server.requests[0]
    # The cleaned client address, once, and signed with the exact target and body sent.
    assert seen.headers[CLIENT_ADDRESS_HEADER] == "203.0.113.9"
    assert seen.headers["authorization"] == "Bearer t"
    assert verifier.verify("POST", seen.target, seen.body, seen.headers) == "203.0.113.9"
    # The other side: the same signature over another body is refused.
    with pytest.raises(SignatureRefused):
        GatewayVerifier(key.public_key()).verify("POST", seen.target, b"{}", seen.headers)


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(
    server: Server,
) -> None:
    transport = SubgraphTransport(server.url)
    try:
        with pytest.raises(ValueError):
            await transport.post(server.url, b"{}", {"authorization": "Bearer x\r\nx-evil: 1"})
    finally:
        await transport.aclose()
    assert server.requests == []


async def test_a_chunked_answer_is_read_whole() -> None:
    async def chunked(seen: Seen, conn: int) -> bytes:
        return (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\n{\"a\":\r\n3\r\n42}\r\n0\r\n\r\n")

    running = Server(chunked)
    await running.start()
    transport = SubgraphTransport(running.url)
    try:
        assert await transport.post(running.url, b"{}", {}) == (200, b'{"a":42}')
        assert await transport.post(running.url, b"{}", {}) == (200, b'{"a":42}')
        assert running.connections == 1
    finally:
        await transport.aclose()
        await running.stop()


async def test_connection_close_is_honoured_and_a_closed_connection_is_not_reused() -> None:
    async def closing(seen: Seen, conn: int) -> bytes:
        if seen.body == b"close":
            return framed(b'{"n":%d}' % conn, "connection: close")
        return framed(b'{"n":%d}' % conn)

    running = Server(closing, hang_up_after=frozenset({b"bye"}))
    await running.start()
    transport = SubgraphTransport(running.url)
    try:
        assert (await transport.post(running.url, b"close", {}))[1] == b'{"n":1}'
        assert (await transport.post(running.url, b"x", {}))[1] == b'{"n":2}'
        # The server answers, then drops the idle connection on its side (as uvicorn does
        # after its keep-alive time): the next request opens another.
        assert (await transport.post(running.url, b"bye", {}))[1] == b'{"n":2}'
        await asyncio.sleep(0.05)
        assert (await transport.post(running.url, b"x", {}))[1] == b'{"n":3}'
    finally:
        await transport.aclose()
        await running.stop()


async def test_an_answer_cut_short_is_an_error_not_a_result() -> None:
    async def hang_up(seen: Seen, conn: int) -> bytes:
        return b""  # the server closes without answering

    running = Server(hang_up)
    await running.start()
    transport = SubgraphTransport(running.url)
    try:
        with pytest.raises(SubgraphConnectionError):
            await transport.post(running.url, b"{}", {})
        assert transport.idle_connections == 0
    finally:
        await transport.aclose()
        await running.stop()


async def test_a_timed_out_request_never_hands_its_late_answer_to_the_next_one() -> None:
    async def slow_first(seen: Seen, conn: int) -> bytes:
        if seen.body == b"slow":
            await asyncio.sleep(0.3)
            return framed(b'{"data":"for the slow caller"}')
        return framed(b'{"data":"for the next caller"}')

    running = Server(slow_first)
    await running.start()
    transport = SubgraphTransport(running.url, max_connections=1)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await transport.post(running.url, b"slow", {})
        assert transport.idle_connections == 0
        await asyncio.sleep(0.4)  # the late answer arrives (on a connection now closed)
        status, body = await transport.post(running.url, b"next", {})
        assert status == 200
        assert body == b'{"data":"for the next caller"}'
        assert running.connections == 2
    finally:
        await transport.aclose()
        await running.stop()


async def test_connections_are_bounded_per_origin() -> None:
    busy = 0
    most = 0

    async def slow(seen: Seen, conn: int) -> bytes:
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        await asyncio.sleep(0.02)
        busy -= 1
        return framed(b"{}")

    running = Server(slow)
    await running.start()
    transport = SubgraphTransport(running.url, max_connections=2)
    try:
        await asyncio.gather(*(transport.post(running.url, b"{}", {}) for _ in range(8)))
    finally:
        await transport.aclose()
        await running.stop()
    assert most == 2 and running.connections == 2


async def test_a_refused_connection_is_a_transport_error() -> None:
    running = Server(echo)
    await running.start()
    url = running.url
    await running.stop()
    transport = SubgraphTransport(url)
    try:
        with pytest.raises(httpx.TransportError):
            await transport.post(url, b"{}", {})
    finally:
        await transport.aclose()


async def test_httpx_requests_through_it_are_signed_too(server: Server) -> None:
    key = Ed25519PrivateKey.generate()
    transport = SubgraphTransport(server.url, signer=GatewaySigner(key))
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            answer = await client.post(server.url, content=b"7")
    finally:
        await transport.aclose()
    assert answer.status_code == 200
    seen = server.requests[0]
    assert GatewayVerifier(key.public_key()).verify("POST", seen.target, seen.body, seen.headers)\
        == ""


async def test_an_idle_connection_is_dropped_before_the_subgraph_would_drop_it(
    server: Server,
) -> None:
    # uvicorn closes a keep-alive connection idle for 5 s; the gateway lets go of it first.
    transport = SubgraphTransport(server.url, keepalive=0.05)
    try:
        await transport.post(server.url, b"1", {})
        await asyncio.sleep(0.1)
        assert (await transport.post(server.url, b"2", {}))[1] == b'{"data":{"got":2,"conn":2}}'
    finally:
        await transport.aclose()
    assert server.connections == 2


def test_it_runs_on_uvloop_as_the_gateway_does() -> None:
    # uvicorn runs the gateway on uvloop, whose transports are not asyncio.Transport subclasses.
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[list[bytes], int]:
        running = Server(echo)
        await running.start()
        transport = SubgraphTransport(running.url)
        try:
            bodies = [(await transport.post(running.url, b"%d" % n, {}))[1] for n in range(2)]
        finally:
            await transport.aclose()
            await running.stop()
        return bodies, running.connections

    bodies, connections = uvloop.run(scenario())
    assert bodies == [b'{"data":{"got":0,"conn":1}}', b'{"data":{"got":1,"conn":1}}']
    assert connections == 1
