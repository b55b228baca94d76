"""The fixed cost of a subgraph request, cut without changing what is decided: the signed
target read from the scope is what `request.url` gave; the trace context read from the few
headers the propagator asks for is what `propagate.extract(request.headers)` gave; a
remembered client address is the address cleaned afresh."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.baggage import get_all as all_baggage
from starlette.requests import Request

from doorward_kit.gateway_signature import clean_address
from doorward_kit.graphql import _signed_target
from doorward_kit.net import canonical_ip
from doorward_kit.subgraph_edge import _trace_carrier

pytestmark = pytest.mark.unit

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _scope(path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "path": path,
        "root_path": "",
        "query_string": query,
        "headers": headers if headers is not None else [(b"host", b"127.0.0.1:8000")],
    }


def _by_url(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


@pytest.mark.parametrize(
    ("path", "query", "host"),
    [
        ("/graphql", b"", b"127.0.0.1:8000"),
        ("/graphql", b"x=1", b"127.0.0.1:8000"),
        ("/graph%3Fql", b"", b"h"),
        ("/graph?ql", b"", b"h"),
        ("/graph#ql", b"", b"h"),
        ("//graphql", b"", b"h"),
        ("/graph ql", b"", b"h"),
        ("/gr\\aph", b"", b"h"),
        ("/graphql", b"", b"evil/x?y"),
        ("/caf\u00e9", b"a=%20b", b"h"),
    ],
)
def test_the_signed_target_is_what_the_url_gave(path: str, query: bytes, host: bytes) -> None:
    request = Request(_scope(path, query, [(b"host", host)]))
    assert _signed_target(request) == _by_url(request)


@settings(max_examples=300, deadline=None)
@given(
    path=st.text(min_size=1, max_size=20).map(lambda p: "/" + p),
    query=st.binary(max_size=8).filter(lambda b: b.isascii()),
    host=st.sampled_from([b"127.0.0.1:8000", b"h", b"[::1]:9", b"a/b", b""]),
)
def test_the_signed_target_is_what_the_url_gave_for_any_path(
    path: str, query: bytes, host: bytes
) -> None:
    request = Request(_scope(path, query, [(b"host", host)]))
    assert _signed_target(request) == _by_url(request)


HEADER_SETS = [
    [],
    [(b"traceparent", TRACEPARENT.encode())],
    [(b"traceparent", TRACEPARENT.encode()), (b"tracestate", b"a=1,b=2")],
    # Two of a kind: the first counts, as Headers.get gives it.
    [
        (b"traceparent", TRACEPARENT.encode()),
        (b"traceparent", b"00-11111111111111111111111111111111-2222222222222222-01"),
    ],
    [(b"traceparent", b"junk"), (b"baggage", b"k=v")],
    [(b"baggage", b"user=me,team=ops"), (b"traceparent", TRACEPARENT.encode())],
    # A name in capitals is not what an ASGI server hands over; neither side reads it.
    [(b"Traceparent", TRACEPARENT.encode())],
    [(b"x-other", b"1"), (b"traceparent", TRACEPARENT.upper().encode())],
]


@pytest.mark.parametrize("headers", HEADER_SETS)
def test_the_trace_context_is_what_the_headers_gave(headers: list[tuple[bytes, bytes]]) -> None:
    scope = _scope("/graphql", headers=[(b"host", b"h"), *headers])
    ours = propagate.extract(_trace_carrier(scope))
    theirs = propagate.extract(Request(scope).headers)
    assert trace.get_current_span(ours).get_span_context() == (
        trace.get_current_span(theirs).get_span_context()
    )
    assert all_baggage(ours) == all_baggage(theirs)


@pytest.mark.parametrize(
    "value", ["203.0.113.9", " 203.0.113.9 ", "::FFFF:1.2.3.4", "2001:DB8::1", "", "name", "1.2.3"]
)
def test_the_gateways_address_header_is_cleaned_by_the_one_address_check(value: str) -> None:
    # doorward_kit.net.canonical_ip is tested in tests/unit/kit/test_canonical_ip.py.
    assert clean_address(value) == canonical_ip(value)
