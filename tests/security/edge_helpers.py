"""Raw-socket helpers for the edge tests: a body streamed in chunks (no Content-Length), so a
test sees how much of it the server read before answering."""

from __future__ import annotations

import json
import select
import socket
import time
from typing import Any

import httpx


def stream_body(
    url: str,
    total: int,
    *,
    method: str = "POST",
    extra_headers: str = "",
    chunk: int = 64 * 1024,
) -> tuple[int, bytes]:
    """Send a chunked body of up to `total` bytes, stopping as soon as the server answers or
    closes. Returns (bytes sent, what the server answered)."""
    u = httpx.URL(url)
    sock = socket.create_connection((u.host, u.port), timeout=10)
    try:
        head = (
            f"{method} {u.raw_path.decode()} HTTP/1.1\r\nHost: {u.host}:{u.port}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            f"{extra_headers}\r\n"
        )
        sock.sendall(head.encode())
        piece = b"[" * chunk  # never read as JSON: the size is refused first
        frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        sent = 0
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break  # the server answered (or closed) before the body ended
            try:
                sock.sendall(frame)
            except OSError:
                break
            sent += len(piece)
        else:
            sock.sendall(b"0\r\n\r\n")
        answer = b""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            answer += data
            if b"\r\n\r\n" in answer:
                head_part, _, body = answer.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head_part.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    None,
                )
                if length is not None and len(body) >= length:
                    break
        return sent, answer
    finally:
        sock.close()


def answer_json(answer: bytes) -> tuple[int, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def plain_request(method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """One request through http.client, which no OpenTelemetry instrumentation touches (the
    instrumented httpx would replace a test's own `traceparent` with its client span's)."""
    import http.client

    u = httpx.URL(url)
    conn = http.client.HTTPConnection(u.host, u.port, timeout=15)
    try:
        conn.request(method, u.raw_path.decode(), body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
