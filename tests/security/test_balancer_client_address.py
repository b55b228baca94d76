"""Issue 15, finding P2: the `doorward up --replicas` balancer hid the client's address from the
gateway (rate limits and audit saw the balancer).

Now the balancer starts each connection to a gateway replica with a PROXY protocol v1 line
naming the client, on a port of the replica's own that believes it from the balancer's address
only. The gateway's real serving code (gateway.cli.edge_server) with a real TcpBalancer in
front; the app behind echoes the client address every request of the gateway starts from.
Clients use distinct loopback addresses (127.0.0.x, all of 127/8 is loopback on Linux) so the
client, the balancer and a forger can be told apart on one machine."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.balancer import TcpBalancer
from deploy.supervisor import balancer_source
from doorward_kit.net import free_port
from doorward_kit.settings import StackSettings
from gateway.cli import edge_server
from gateway.proxy_protocol import BadProxyLine, parse_v1, v1_line
from gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

CLIENT = "127.0.0.5"
FORGER = "127.0.0.7"


async def echo_client(scope: Any, receive: Any, send: Any) -> None:
    """What the gateway reads as the peer (request.client) of each request."""
    if scope["type"] != "http":
        return
    host, port = scope["client"]
    text = f"{host} {port}".encode()
    headers = [(b"content-length", str(len(text)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": text})


@pytest.fixture
def gateway() -> Iterator[tuple[int, int]]:
    """(API port, PROXY port) of a gateway server believing PROXY lines from 127.0.0.1."""
    api, proxied = free_port(), free_port()
    settings = GatewaySettings(
        stack=StackSettings(host="127.0.0.1"),
        port=api,
        proxy_protocol_port=proxied,
        proxy_protocol_from=balancer_source("127.0.0.1"),
        auth_enabled=False,
    )
    server, sockets = edge_server(echo_client, settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert server.started
        yield api, proxied
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        for sock in sockets:
            sock.close()


def exchange(port: int, payload: bytes, *, source: str = CLIENT) -> tuple[bytes, int]:
    """Send `payload` from `source` to 127.0.0.1:port; (what came back, our source port)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        own_port = s.getsockname()[1]
        chunks = []
        try:  # a refused connection is closed (or reset) by the server, maybe mid-send
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
        return b"".join(chunks), own_port


GET = b"GET /whoami HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n"


def body(answer: bytes) -> str:
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return answer.split(b"\r\n\r\n", 1)[1].decode()


def test_through_the_balancer_the_gateway_sees_the_client(gateway: tuple[int, int]) -> None:
    _, proxied = gateway
    balancer = TcpBalancer(
        "gateway", "127.0.0.1", free_port(), [("127.0.0.1", proxied)], proxy_protocol=True
    )
    balancer.start()
    try:
        for _ in range(3):  # every connection, each its own client port
            answer, own_port = exchange(balancer.port, GET)
            assert body(answer) == f"{CLIENT} {own_port}"
        # Keep-alive: a later request on one connection is the same client's.
        with socket.create_connection(
            ("127.0.0.1", balancer.port), timeout=5, source_address=(CLIENT, 0)
        ) as s:
            expected = f"{CLIENT} {s.getsockname()[1]}".encode()
            for _ in range(2):
                s.sendall(GET.replace(b"Connection: close", b"Connection: keep-alive"))
                answer = b""
                while not answer.endswith(expected):
                    chunk = s.recv(65536)
                    assert chunk, answer
                    answer += chunk
    finally:
        balancer.stop()


def test_without_proxy_protocol_the_balancer_hides_the_client(gateway: tuple[int, int]) -> None:
    api, _ = gateway
    balancer = TcpBalancer("gateway", "127.0.0.1", free_port(), [("127.0.0.1", api)])
    balancer.start()
    try:
        answer, _ = exchange(balancer.port, GET)
        assert body(answer).split()[0] == "127.0.0.1"  # what P2 was: the balancer
    finally:
        balancer.stop()


def test_nobody_but_the_balancer_may_name_a_client(gateway: tuple[int, int]) -> None:
    api, proxied = gateway
    forged = b"PROXY TCP4 203.0.113.9 127.0.0.1 4444 4000\r\n" + GET
    # A forger on the PROXY port, from an address that is not the balancer's: closed unanswered.
    answer, _ = exchange(proxied, forged, source=FORGER)
    assert answer == b""
    # The line on the API port is no PROXY line, just a bad request: never a client address.
    answer, own_port = exchange(api, forged, source=FORGER)
    assert b"203.0.113.9" not in answer and not answer.startswith(b"HTTP/1.1 200")
    # The honest direct client on the API port: its own address, as before.
    answer, own_port = exchange(api, GET, source=FORGER)
    assert body(answer) == f"{FORGER} {own_port}"
    # From the balancer's address, the PROXY port requires the line: plain HTTP is closed.
    answer, _ = exchange(proxied, GET, source="127.0.0.1")
    assert answer == b""
    # ... and a malformed line too.
    answer, _ = exchange(proxied, b"PROXY TCP4 not-an-address\r\n" + GET, source="127.0.0.1")
    assert answer == b""


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 203.0.113.9 127.0.0.1 70000 4000",
        b"PROXY TCP6 203.0.113.9 127.0.0.1 1 4000",
        b"PROXY TCP4 2001:db8::1 127.0.0.1 1 4000",
        b"PROXY UDP4 203.0.113.9 127.0.0.1 1 4000",
        b"PROXY TCP4 203.0.113.9, 10.0.0.1 127.0.0.1 1 4000",
        b"GET / HTTP/1.1",
        "PROXY TCP4 203.0.113.9 127.0.0.1 1 4000 é".encode(),
    ],
)
def test_only_well_formed_v1_lines_parse(line: bytes) -> None:
    with pytest.raises(BadProxyLine):
        parse_v1(line)


def test_the_balancer_line_round_trips() -> None:
    line = v1_line(("203.0.113.9", 51234), ("127.0.0.1", 4000))
    assert line == b"PROXY TCP4 203.0.113.9 127.0.0.1 51234 4000\r\n"
    assert parse_v1(line[:-2]) == ("203.0.113.9", 51234)
    assert parse_v1(v1_line(("2001:db8::1", 1), ("::1", 4000))[:-2]) == ("2001:db8::1", 1)
    assert parse_v1(v1_line(("2001:db8::1", 1), ("127.0.0.1", 4000))[:-2]) is None
