"""An answer's headers and body go out in one socket send (doorward_kit.http coalescing_protocol):
uvicorn writes them as two writes in one turn of the loop, which were two sends and two wake-ups
of the reader. What must hold: every byte goes out, in order, and none later than the end of the
turn it was written in; close() sends what is held first; abort() drops it; a streamed answer
still streams. Through a real uvicorn server too, on asyncio's loop and on uvloop's."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from doorward_kit.http import _CoalescingTransport, coalescing_protocol
from doorward_kit.net import free_port

pytestmark = pytest.mark.unit


class Recording:
    """A transport that records what it is asked to do."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closing = False
        self.aborted = False
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = True
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1234)}.get(name, default)


async def test_two_writes_of_one_turn_are_one_send() -> None:
    inner = Recording()
    transport = _CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert inner.sent == []  # held for the rest of the turn
    transport.write(b"{}")
    assert inner.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    await asyncio.sleep(0)
    assert len(inner.sent) == 1  # nothing sent twice


async def test_a_lone_write_goes_out_at_the_end_of_its_turn() -> None:
    inner = Recording()
    transport = _CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 100 Continue\r\n\r\n")
    await asyncio.sleep(0)
    assert inner.sent == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    # Later turns: each write its own send, in order (a streamed answer still streams).
    for chunk in (b"a", b"b"):
        transport.write(chunk)
        await asyncio.sleep(0)
    transport.writelines([b"c", b"d"])
    await asyncio.sleep(0)
    assert inner.sent[1:] == [b"a", b"b", b"cd"]


async def test_close_sends_what_is_held_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    inner = Recording()
    transport = _CoalescingTransport(inner, loop)  # type: ignore[arg-type]
    transport.write(b"last words")
    transport.close()
    assert inner.sent == [b"last words"] and inner.closing
    await asyncio.sleep(0)
    assert inner.sent == [b"last words"]

    other = Recording()
    aborted = _CoalescingTransport(other, loop)  # type: ignore[arg-type]
    aborted.write(b"never")
    aborted.abort()
    await asyncio.sleep(0)
    assert other.sent == [] and other.aborted
    # Everything else is the transport's own.
    assert aborted.get_extra_info("peername") == ("127.0.0.1", 1234)
    assert aborted.is_closing()


async def test_nothing_is_written_to_a_transport_already_closing() -> None:
    inner = Recording()
    transport = _CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"held")
    inner.closing = True  # the peer went away meanwhile
    await asyncio.sleep(0)
    assert inner.sent == []


async def test_what_is_held_goes_out_before_asyncio_closes_on_the_clients_end() -> None:
    # A client that shuts its sending side after the request: uvicorn's eof_received answers
    # None and asyncio closes the transport itself (not through the wrapper), so an answer
    # written in the turn the end arrived would have been dropped.
    class Plain(asyncio.Protocol):
        def eof_received(self) -> bool | None:
            return None

    inner = Recording()
    protocol = coalescing_protocol(Plain)()
    protocol.connection_made(inner)  # type: ignore[arg-type]
    protocol._coalescing.write(b"the answer")  # type: ignore[attr-defined]
    assert protocol.eof_received() is None
    assert inner.sent == [b"the answer"]
    await asyncio.sleep(0)
    assert inner.sent == [b"the answer"]


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    answer = b"echo:" + body
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(params=["asyncio", "uvloop"])
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    port = free_port()
    config = uvicorn.Config(
        _app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        loop=request.param,
        http=coalescing_protocol(),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_real_server_answers_whole_and_keeps_the_connection(server: str) -> None:
    with httpx.Client() as client:
        for index in range(5):  # one keep-alive connection, five answers
            answer = client.post(f"{server}/echo", content=f"n={index}".encode())
            assert answer.status_code == 200 and answer.content == f"echo:n={index}".encode()
        streamed = client.get(f"{server}/stream")
        assert streamed.status_code == 200 and streamed.content == b"one,two,three"


def test_headers_and_body_arrive_in_one_piece(server: str) -> None:
    # A raw client: the whole small answer is there at the first read (one send, one segment).
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        assert first.endswith(b"\r\n\r\necho:hi"), first


async def test_a_service_process_answers_in_one_piece() -> None:
    # What every service's HTTP server is (doorward_kit.runner.serving): its answers whole in
    # the first read too.
    from doorward_kit.http import create_app
    from doorward_kit.runner import ServiceParts, serving

    port = free_port()
    parts = ServiceParts(app=create_app("coalescing-test"), host="127.0.0.1", http_port=port)
    async with serving(parts, "coalescing-test"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            first = await asyncio.wait_for(reader.read(65536), 5)
        finally:
            writer.close()
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        assert first.endswith(b'\r\n\r\n{"status":"ok"}'), first

