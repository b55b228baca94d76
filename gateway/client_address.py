"""The end user's address, as far as the gateway can know it.

The TCP peer is the only address nobody can forge over TCP. When the peer is one of our own
reverse proxies (DOORWARD_GATEWAY_TRUSTED_PROXIES), that proxy appended the address it saw to
X-Forwarded-For, so the list is read from the right: each entry added by a trusted proxy is
skipped, and the first address a trusted proxy did not vouch for is the client. Whatever lies
left of it was written by the client itself and is ignored. From any other peer the header is
the caller's own word and is discarded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted_proxies(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs or single addresses ('10.0.0.0/8, 192.0.2.7'); ValueError if bad."""
    networks: list[Network] = []
    for item in text.split(","):
        item = item.strip()
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"not an address or CIDR: {item!r}") from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return ip


def _trusted(ip: Address, trusted: Sequence[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in trusted)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[Network]
) -> str:
    """The client's address: the peer, or (behind trusted proxies) the right-most untrusted
    X-Forwarded-For entry. `forwarded_for` is every X-Forwarded-For header, in order."""
    current = _address(peer or "")
    if current is None:
        return ""
    if not trusted or not _trusted(current, trusted):
        return str(current)
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    while hops and _trusted(current, trusted):
        previous = _address(hops.pop())
        if previous is None:
            break  # not an address: keep the last hop a trusted proxy vouched for
        current = previous
    return str(current)
