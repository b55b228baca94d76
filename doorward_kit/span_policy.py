"""What a span may carry: an allow-list of attribute keys, everything else dropped.

Spans leave the process (to the embedded trace store or a collector) and security ops read
them, so they must never hold a value, token, password, name, email, phone, address or GraphQL
variable. Instead of hunting for bad values, only keys known to carry none survive: the
`doorward.*` decision convention, opaque ids, and the structural keys of the HTTP, gRPC and SQL
semantic conventions. URLs keep scheme, host and path: the query string (where a GraphQL GET
would carry variables) and any user-info are cut.

Used twice: by the exporter wrapper of every Doorward process and again by the trace store's
receiver, which cannot trust that a sender filtered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Doorward's own convention (CONTRACT.md "Telemetry") plus the ids every span may name.
DOORWARD_KEYS = frozenset(
    {
        "doorward.decision",
        "doorward.decision.reason",
        "doorward.work_order.id",
        "doorward.secret_ref.id",
        "doorward.grant.id",
        "doorward.audit.event_id",
        # how many events one outbox delivery carried (a count)
        "doorward.audit.events",
        # the policy action or mutation a doorward.access.decide span judged (a dotted word)
        "doorward.access.action",
        "doorward.org.id",
        "doorward.operation.name",
        "doorward.subgraph",
        "doorward.link.traceparent",
        "enduser.pseudo.id",
    }
)

# Structural keys of the OpenTelemetry semantic conventions (old and new names) that the
# instrumentations Doorward uses (FastAPI/ASGI, httpx, requests, grpc, SQLAlchemy) set.
SEMCONV_KEYS = frozenset(
    {
        "http.method",
        "http.request.method",
        "http.route",
        "http.scheme",
        "http.status_code",
        "http.response.status_code",
        "http.flavor",
        "network.protocol.version",
        "http.url",
        "url.full",
        "http.target",
        "url.path",
        "url.scheme",
        "server.address",
        "server.port",
        "net.host.name",
        "net.host.port",
        "net.peer.name",
        "net.peer.port",
        "rpc.system",
        "rpc.service",
        "rpc.method",
        "rpc.grpc.status_code",
        "db.system",
        "db.name",
        "db.operation",
        "db.sql.table",
        "error.type",
        "exception.type",
        "otel.status_code",
    }
)

ALLOWED_KEYS = DOORWARD_KEYS | SEMCONV_KEYS

# Keys whose value is a URL: kept without query string, fragment or user-info.
_URL_KEYS = frozenset({"http.url", "url.full", "http.target"})

# Event names worth keeping (an exception's type, never its message or stack: messages can
# quote input). Their attributes go through the same allow-list.
ALLOWED_EVENTS = frozenset({"exception", "doorward.decision"})


def clean_url(value: str) -> str:
    """`https://user:pw@host/path?q=1#f` -> `https://host/path`."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def filter_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Only allow-listed keys; URLs cut down to scheme, host and path."""
    if not attributes:
        return {}
    kept: dict[str, Any] = {}
    for key, value in attributes.items():
        if key not in ALLOWED_KEYS:
            continue
        if key in _URL_KEYS:
            if not isinstance(value, str):
                continue  # a list of URLs would keep its query strings
            value = clean_url(value)
        kept[key] = value
    return kept


def allowed_event(name: str) -> bool:
    return name in ALLOWED_EVENTS


def dropped_keys(attributes: Iterable[str]) -> list[str]:
    """The keys filter_attributes would drop (for tests and for the store's counters)."""
    return sorted(key for key in attributes if key not in ALLOWED_KEYS)
