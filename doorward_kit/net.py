"""Small network helpers used by the supervisor and the tests."""

from __future__ import annotations

import functools
import ipaddress
import os
import random
import socket
from collections import deque
from pathlib import Path

# Ports are picked from here up to the kernel's ephemeral range (leaving room for the +50
# families `up` derives from a port).
_LOWEST_PICKED = 20000
_FAMILY_ROOM = 100
# The ports this process handed out last (bounded: old ones are bound or given up by now).
_handed_out: deque[int] = deque(maxlen=2000)


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


# The longest text an IP address can be written as (IPv6 with an embedded IPv4: 45), with room.
_MAX_ADDRESS_TEXT = 64


def canonical_ip(value: str) -> str:
    """An IP address in canonical form, or '' (never a name, a list, a port or an IPv6 zone
    id, which is free text). The answers for the last 4,096 values are remembered (parsing one
    was ~10 us and the same end users' addresses come again and again); only short values are:
    an address header nobody has verified yet can be megabytes, and must not be kept."""
    value = (value or "").strip()
    if not value or len(value) > _MAX_ADDRESS_TEXT:
        return ""
    return _canonical_ip(value)


@functools.lru_cache(maxsize=4096)
def _canonical_ip(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return ""
    return str(address)


PORT_RANGE_ENV = "DOORWARD_PORT_RANGE"


def _picked_range() -> tuple[int, int]:
    """[low, high) of the ports free_port picks: DOORWARD_PORT_RANGE ("LOW-HIGH") when set,
    else from 20000 up to the kernel's ephemeral range, less room for the families."""
    configured = os.environ.get(PORT_RANGE_ENV)
    if configured:
        low, _, high = configured.partition("-")
        return int(low), int(high)
    return _LOWEST_PICKED, _ephemeral_floor() - _FAMILY_ROOM


def worker_port_range(index: int, count: int) -> str:
    """The slice of the picked range for test worker `index` of `count`, as DOORWARD_PORT_RANGE
    takes it. Each process only knows the ports it handed out itself, so two workers picking
    from one range could pick the same port: one whose `doorward up` binds it seconds later
    found it taken by the other's server (a clean-clone run lost the e2e suite to that).
    Disjoint slices, each ending _FAMILY_ROOM below the next (the +50 ports `up` derives)."""
    low, high = _LOWEST_PICKED, _ephemeral_floor() - _FAMILY_ROOM
    width = (high - low) // max(count, 1)
    start = low + index * width
    return f"{start}-{start + width - _FAMILY_ROOM}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (tests never use fixed ports).

    Below the kernel's ephemeral range when there is room: a port the kernel hands out for
    bind(0) is one that any outgoing connection may take as its local port before our server
    binds it ("address already in use" in CI, with two test workers' many connections);
    outgoing connections never take a port below that range. Test workers each pick from a
    slice of their own (worker_port_range)."""
    low, top = _picked_range()
    if top > low + 1000:
        for _ in range(50):
            port = random.randrange(low, top)
            # Nothing listens on a port handed out a moment ago either: never hand it out twice
            # (a stack asks for a dozen before any of them is bound).
            if port not in _handed_out and not port_in_use(host, port):
                _handed_out.append(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False
