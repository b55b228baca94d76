"""The TCP balancer `up --replicas` puts in front of the gateway, the secrets door and OpenBao:
each connection to a live backend in turn, a dead backend skipped."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from deploy.balancer import TcpBalancer
from doorward_kit.net import free_port

pytestmark = pytest.mark.unit


class _Named(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(16)
        self.request.sendall(self.server.name)  # type: ignore[attr-defined]


@pytest.fixture
def backends() -> Iterator[list[tuple[socketserver.TCPServer, int]]]:
    servers = []
    for name in (b"a", b"b"):
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Named)
        server.name = name  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, server.server_address[1]))
    yield servers
    for server, _ in servers:
        server.shutdown()
        server.server_close()


def _ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"hi")
        return sock.recv(16)


def test_connections_go_round_robin_and_skip_a_dead_backend(backends) -> None:
    dead = free_port()  # nobody listens there: a killed replica
    ports = [("127.0.0.1", p) for _, p in backends] + [("127.0.0.1", dead)]
    balancer = TcpBalancer("test", "127.0.0.1", free_port(), ports)
    balancer.start()
    try:
        answers = [_ask(balancer.port) for _ in range(6)]
        assert set(answers) == {b"a", b"b"}
        assert answers.count(b"a") >= 2 and answers.count(b"b") >= 2
    finally:
        balancer.stop()
