"""The client's address from a TCP balancer in front of the gateway: PROXY protocol v1.

A balancer that copies bytes (`doorward up --replicas N`, deploy/balancer.py; HAProxy; a cloud
load balancer in TCP mode) hides the client: the gateway sees the balancer's address, so rate
limits and audit `sourceIp` would see one client. Such a balancer can send one line first,

    PROXY TCP4 <client address> <balancer address> <client port> <balancer port>\\r\\n

(haproxy.org/download/2.9/doc/proxy-protocol.txt, version 1). The gateway reads it only on a
port of its own (DOORWARD_GATEWAY_PROXY_PROTOCOL_PORT) and only from peers named in
DOORWARD_GATEWAY_PROXY_PROTOCOL_FROM; there the line is required (a connection without it, or
from anyone else, is closed before any byte reaches HTTP). On every other port nothing is read
from it: the line is the balancer's word, which only the balancer may speak. The address it
names then stands where the TCP peer stood (X-Forwarded-For rules apply after it as usual).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from typing import Any

from gateway.client_address import Network

# The longest v1 line the specification allows, CRLF included.
MAX_LINE = 107


class BadProxyLine(ValueError):
    """Not a PROXY protocol v1 line."""


def parse_v1(line: bytes) -> tuple[str, int] | None:
    """(client address, client port) of a v1 line without its CRLF; None for `PROXY UNKNOWN`
    (the balancer does not know: the peer stays the client). BadProxyLine otherwise."""
    try:
        parts = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise BadProxyLine("not ASCII") from None
    if len(parts) >= 2 and parts[:2] == ["PROXY", "UNKNOWN"]:
        return None
    if len(parts) != 6 or parts[0] != "PROXY" or parts[1] not in ("TCP4", "TCP6"):
        raise BadProxyLine("not a PROXY v1 line")
    _, family, source, _destination, source_port, _destination_port = parts
    try:
        address = ipaddress.ip_address(source)
        port = int(source_port)
    except ValueError:
        raise BadProxyLine("bad address or port") from None
    if (family == "TCP4") != (address.version == 4) or not 0 <= port <= 65535:
        raise BadProxyLine("address does not match its family")
    return str(address), port


def v1_line(client: tuple[str, int], local: tuple[str, int]) -> bytes:
    """The line a balancer sends first for a connection from `client` to it at `local`."""
    source, destination = ipaddress.ip_address(client[0]), ipaddress.ip_address(local[0])
    if source.version != destination.version:
        return b"PROXY UNKNOWN\r\n"
    family = "TCP4" if source.version == 4 else "TCP6"
    return f"PROXY {family} {source} {destination} {client[1]} {local[1]}\r\n".encode()


def _trusted(peer: Any, networks: Sequence[Network]) -> bool:
    if not peer:
        return False
    try:
        ip = ipaddress.ip_address(peer[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def with_proxy_protocol(
    base: type[asyncio.Protocol], port: int, allowed: Sequence[Network]
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class `base`, reading a PROXY v1 line first on connections that
    arrive on `port` (from `allowed` peers only; others are closed)."""

    class ProxyProtocolHttp(base):  # type: ignore[misc, valid-type]
        _proxy_pending = False
        _proxy_buffer = b""

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            local: Any = getattr(self, "server", None)
            self._proxy_pending = bool(local) and local[1] == port
            if self._proxy_pending and not _trusted(getattr(self, "client", None), allowed):
                transport.close()

        def data_received(self, data: bytes) -> None:
            if not self._proxy_pending:
                super().data_received(data)
                return
            buffer = self._proxy_buffer + data
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) >= MAX_LINE:
                    self.transport.close()
                else:
                    self._proxy_buffer = buffer
                return
            try:
                client = parse_v1(buffer[:end])
            except BadProxyLine:
                self.transport.close()
                return
            if client is not None:
                self.client = client
            self._proxy_pending, self._proxy_buffer = False, b""
            if rest := buffer[end + 2 :]:
                super().data_received(rest)

    return ProxyProtocolHttp
