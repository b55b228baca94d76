"""The TCP balancer `up --replicas` puts in front of the gateway, the secrets door and OpenBao:
each connection to a live backend in turn, a dead backend skipped."""

from __future__ import annotations

import gc
import socket
import socketserver
import threading
import time
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


def test_a_half_closed_client_still_gets_its_answer() -> None:
    """A client that sends its request and shuts down its sending side (HTTP/1.0 style, `nc -N`)
    waits for the answer. The balancer's connection task must live through a garbage
    collection meanwhile: it did not (nothing referenced it once asyncio stopped watching the
    half-closed socket), and the collector closed both sockets before the answer came."""
    listener = socket.create_server(("127.0.0.1", 0))
    answered = threading.Event()

    def slow_backend() -> None:
        conn, _ = listener.accept()
        with conn:
            while conn.recv(1024):  # the request, then the client's end of it
                pass
            answered.wait(5)  # the collection below runs while the answer is pending
            conn.sendall(b"answer")

    threading.Thread(target=slow_backend, daemon=True).start()
    balancer = TcpBalancer("test", "127.0.0.1", free_port(), [listener.getsockname()[:2]])
    balancer.start()
    try:
        with socket.create_connection(("127.0.0.1", balancer.port), timeout=5) as sock:
            sock.sendall(b"request")
            sock.shutdown(socket.SHUT_WR)
            time.sleep(0.3)  # the balancer has copied the request and its end
            gc.collect()
            answered.set()
            assert sock.recv(16) == b"answer"
    finally:
        balancer.stop()
        listener.close()
