"""CORS allow-lists for the public HTTP doors (the gateway and the secrets REST door).

Deny by default: only the origins listed answer preflights and get Access-Control-Allow-Origin,
and the default list is the console's own origin (the gateway's public origin). Credentials
(cookies) are never allowed: Doorward's browser clients send a bearer token they hold in memory.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of a URL, the form browsers send in `Origin`."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"not an absolute URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


def parse_origins(value: str | None, default: list[str]) -> list[str]:
    """A comma-separated list of origins; unset means `default`, an empty string means none.
    `*` is refused: a door that takes bearer tokens names the sites it trusts."""
    if value is None:
        return list(default)
    origins = [origin_of(part.strip()) for part in value.split(",") if part.strip()]
    if any(o.startswith("*") for o in origins):
        raise ValueError("a CORS origin must be named, never *")
    return origins


def add_cors(app: Starlette, origins: list[str], methods: list[str]) -> None:
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=methods,
        allow_headers=["authorization", "content-type", "traceparent"],
        allow_credentials=False,
        max_age=600,
    )
