"""The gateway's connections to its subgraphs: a lean HTTP/1.1 keep-alive client.

Every subgraph call is the same small request: POST one JSON body to one loopback origin,
read one JSON answer. httpx and httpcore did that through an httpx.Request, anyio streams,
h11's pure-Python state machine and two socket writes (headers, then body); that was about a
third of the gateway's own CPU per board (docs/performance.md). Here a request is one
`transport.write` of bytes built in one go, and the answer is parsed by httptools (the C parser
uvicorn uses) as it arrives on an asyncio Protocol.

What stays as it was:
- the gateway's Ed25519 signature on every request (doorward_kit/gateway_signature.py), over
  the exact method, target, body and client address sent;
- a bounded pool per subgraph origin (`max_connections`, waiting for a free connection);
- anything else (the SDL fetch at start, replica health checks) goes through httpx, signed
  by the same transport (`handle_async_request`).

A connection is reused only after a complete answer that did not ask to close it. One that
failed, timed out or was cancelled mid-answer is closed, never pooled: a late answer must never
be read as the answer to the next request (someone else's data). Idle connections are dropped
after KEEPALIVE_SECONDS, below uvicorn's own 5 s keep-alive, so the gateway does not write to a
connection the subgraph is closing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import httptools
import httpx

from doorward_kit.gateway_signature import (
    CLIENT_ADDRESS_HEADER,
    GatewaySigner,
    SigningTransport,
    request_target,
)

KEEPALIVE_SECONDS = 4.0
# Headers this client frames itself: a caller's copy would contradict the framing.
_FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_FRAMING_AND_ADDRESS = _FRAMING | {CLIENT_ADDRESS_HEADER}


class SubgraphConnectionError(httpx.TransportError):
    """The connection failed before a complete answer arrived (an httpx.TransportError, so the
    replica logic treats it like any transport failure)."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, answers parsed as they arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._chunks: list[bytes] = []
        self._close_after = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's or uvloop's (uvicorn runs the gateway on uvloop): not always a subclass of
        # asyncio.Transport, but with its write and close.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            # Bytes nobody asked for: the connection's framing cannot be trusted any more.
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(SubgraphConnectionError(f"malformed answer from the subgraph: {exc}"))

    def eof_received(self) -> bool:
        self.closed = True
        self._fail(SubgraphConnectionError("the subgraph closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(SubgraphConnectionError("the connection to the subgraph was lost"))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"connection" and b"close" in value.lower():
            self._close_after = True

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        answer = self._answer
        if answer is None or answer.done():
            return
        if not self.parser.should_keep_alive():
            self._close_after = True
        answer.set_result((self.parser.get_status_code(), b"".join(self._chunks)))

    # -- use
    def _fail(self, error: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    async def exchange(self, data: bytes) -> tuple[int, bytes]:
        """Send one request (already framed) and wait for its whole answer."""
        assert self.transport is not None
        self._chunks = []
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        try:
            return await self._answer
        finally:
            self._answer = None

    @property
    def reusable(self) -> bool:
        return not self.closed and not self._close_after

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _header_bytes(name: str, value: str) -> bytes:
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
        # A header value ends at CR/LF: one inside would let it write a header of its own.
        raise ValueError(f"header {name!r} has a line break")
    return f"{name}: {value}\r\n".encode("latin-1")


class SubgraphTransport(httpx.AsyncBaseTransport):
    """The connections to one subgraph origin (scheme http), signed when `signer` is set.

    `post` is the gateway's hot path; `handle_async_request` lets httpx (the SDL fetch, health
    checks, tests) use the same origin with the same signature through its own pool."""

    def __init__(
        self,
        url: str | httpx.URL,
        *,
        signer: GatewaySigner | None = None,
        max_connections: int = 32,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme != "http":
            raise ValueError(f"SubgraphTransport speaks plain HTTP to loopback or a mesh: {url}")
        self.host = parsed.host
        self.port = parsed.port or 80
        self._host_header = f"host: {self.host}:{self.port}\r\n".encode("latin-1")
        self.signer = signer
        self.keepalive = keepalive
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        inner = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections)
        )  # fmt: skip
        self._httpx: httpx.AsyncBaseTransport = (
            inner if signer is None else SigningTransport(inner, signer)
        )

    async def post(
        self, url: httpx.URL, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        """POST `body` to `url` (of this origin): (status, answer body). Raises
        SubgraphConnectionError (an httpx.TransportError) when no complete answer came."""
        lines = [b"POST ", url.raw_path, b" HTTP/1.1\r\n", self._host_header]
        # The signer writes the client address itself (cleaned, and signed with the rest).
        skip = _FRAMING if self.signer is None else _FRAMING_AND_ADDRESS
        for name, value in headers.items():
            if name.lower() not in skip:
                lines.append(_header_bytes(name, value))
        if self.signer is not None:
            address = headers.get(CLIENT_ADDRESS_HEADER, "")
            signed = self.signer.headers("POST", request_target(url), body, address)
            for name, value in signed.items():
                lines.append(_header_bytes(name, value))
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        lines.append(body)
        data = b"".join(lines)
        async with self._slots:
            conn = self._take_idle()
            if conn is None:
                conn = await self._connect()
            try:
                status, content = await conn.exchange(data)
            except BaseException:
                conn.close()  # an unfinished answer may still arrive: never reuse
                raise
            if conn.reusable:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
            return status, content

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: warm, least likely to expire
            if conn.reusable and now - conn.idle_since < self.keepalive:
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except OSError as exc:
            raise SubgraphConnectionError(f"cannot connect to the subgraph: {exc}") from None
        return conn

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._httpx.handle_async_request(request)

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()
        await self._httpx.aclose()


__all__ = ["KEEPALIVE_SECONDS", "SubgraphConnectionError", "SubgraphTransport"]
