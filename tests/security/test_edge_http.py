"""Issue 10, findings 1 and 7 at the gateway's HTTP edge: request bodies are counted as they
arrive, the plan cache never answers one document with another's plan, and a client's
`traceparent` is only a link of a trace the gateway starts.

Real HTTP against the real gateway app over the three test subgraphs (tests/integration/gateway);
the tracing test runs `python -m gateway serve` as a process that writes its spans to a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from doorward_kit.net import free_port
from tests.integration.gateway.conftest import (
    RunningGateway,
    gateway_settings,
    start_gateway,
)
from tests.integration.gateway.harness import RunningSubgraphs, start_subgraphs
from tests.security.edge_helpers import answer_json, plain_request, stream_body

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def subgraphs() -> Iterator[RunningSubgraphs]:
    running = start_subgraphs()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def gateway(subgraphs: RunningSubgraphs) -> Iterator[RunningGateway]:
    gw = start_gateway(gateway_settings(subgraphs.urls, rate_limit_per_second=0))
    try:
        yield gw
    finally:
        gw.stop()


# ---------------------------------------------------------------------------------------------
# Body limit (1 MB by default)


def test_a_chunked_body_is_cut_off_at_the_limit(gateway: RunningGateway) -> None:
    # Before: the whole body was read (here 64 MB) and only then compared with the limit.
    sent, answer = stream_body(gateway.url, 64 * 1024 * 1024)
    assert sent < 16 * 1024 * 1024, f"the gateway read {sent} bytes of a 1 MB-limited body"
    if answer:  # the refusal, unless the connection was reset before it could be read
        status, body = answer_json(answer)
        assert status == 413
        assert body["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


def test_a_lying_content_length_is_not_trusted(gateway: RunningGateway) -> None:
    sent, answer = stream_body(
        gateway.url, 64 * 1024 * 1024, extra_headers="Content-Length: 10\r\n"
    )
    assert sent < 16 * 1024 * 1024
    if answer:
        assert answer.split(b" ", 2)[1] in (b"400", b"413")


def test_a_large_body_answers_413_in_the_contract_shape(gateway: RunningGateway) -> None:
    def body() -> Iterator[bytes]:  # no Content-Length: httpx sends it chunked
        yield b'{"query": "{ me { id } }", "pad": "'
        for _ in range(24):
            yield b"x" * 65536
        yield b'"}'

    r = httpx.post(gateway.url, content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {
        "errors": [
            {
                "message": "The request body is too large.",
                "extensions": {"code": "PAYLOAD_TOO_LARGE"},
            }
        ]
    }


def test_an_honest_chunked_body_still_works(gateway: RunningGateway) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"query": "{ me { id } }", '
        yield b'"pad": "' + b" " * 200_000 + b'"}'

    r = httpx.post(gateway.url, content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert r.json() == {"data": {"me": {"id": "1"}}}


# ---------------------------------------------------------------------------------------------
# Plan cache keyed on the exact document


def test_whitespace_inside_a_literal_is_part_of_the_document(gateway: RunningGateway) -> None:
    # Before: the cache key collapsed whitespace, so the second login ran with the first one's
    # literal ("a  b"): one client's literal answered another client's request.
    first = gateway.post('mutation { login(username: "a  b") }').json()
    second = gateway.post('mutation { login(username: "a b") }').json()
    assert first == {"data": {"login": "token-for-a  b"}}
    assert second == {"data": {"login": "token-for-a b"}}
    # The same document again is still served (from the cache).
    assert gateway.post('mutation { login(username: "a b") }').json() == second


# ---------------------------------------------------------------------------------------------
# A client's traceparent is a link; the gateway starts the trace


CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"


@pytest.fixture(scope="module")
def traced_gateway(subgraphs: RunningSubgraphs, tmp_path_factory: Any) -> Iterator[Any]:
    from gateway.composition import compose

    folder = tmp_path_factory.mktemp("traced-gateway")
    supergraph = folder / "supergraph.graphql"
    supergraph.write_text(compose(subgraphs.sdls()))
    spans = folder / "spans.jsonl"
    port = free_port()
    env = dict(
        os.environ,
        DOORWARD_OTEL_FILE=str(spans),
        OTEL_TRACES_EXPORTER="none",
        DOORWARD_ENV="development",
    )
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--supergraph", str(supergraph),
         "--port", str(port), "--no-auth"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the gateway process did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/graphql", spans
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _spans(path: Path, name: str, trace_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = []
        if path.exists():
            for line in path.read_text().splitlines():
                span = json.loads(line)
                if span["name"] == name and span["context"]["trace_id"] == f"0x{trace_id}":
                    found.append(span)
        if found:
            return found
        time.sleep(0.1)
    return []


def test_a_client_traceparent_is_only_a_link(traced_gateway: Any) -> None:
    url, spans = traced_gateway
    # http.client, not httpx: an instrumented httpx (other tests may have set telemetry up in
    # this process) would put its own traceparent in place of the client's.
    _, raw = plain_request(
        "POST",
        url,
        {"content-type": "application/json", "traceparent": CLIENT_TRACEPARENT},
        b'{"query": "{ traceHeader }"}',
    )
    forwarded = json.loads(raw)["data"]["traceHeader"]
    # The subgraph (an internal hop) gets the gateway's own trace, not the client's.
    assert forwarded is not None
    trace_id = forwarded.split("-")[1]
    assert trace_id != CLIENT_TRACE and int(trace_id, 16) != 0
    (server,) = _spans(spans, "POST /graphql", trace_id)
    assert server["parent_id"] is None  # a new trace starts at the edge
    assert [link["context"]["trace_id"] for link in server["links"]] == [f"0x{CLIENT_TRACE}"]
    # Internal hops still propagate: the subgraph fetch is a child in the same trace.
    (fetch,) = _spans(spans, "gateway.fetch accounts", trace_id)
    assert fetch["parent_id"] == server["context"]["span_id"]
    # No span at all joins the client's trace (FastAPI's own request span did, until its
    # telemetry was turned off). Spans leave in the order they end: once a later request's
    # span is in the file, anything of this request's would be too.
    _, later = plain_request(
        "POST", url, {"content-type": "application/json"}, b'{"query": "{ traceHeader }"}'
    )
    later_trace = json.loads(later)["data"]["traceHeader"].split("-")[1]
    assert _spans(spans, "POST /graphql", later_trace)
    joined = [
        span["name"]
        for span in map(json.loads, spans.read_text().splitlines())
        if span["context"]["trace_id"] == f"0x{CLIENT_TRACE}"
    ]
    assert joined == []


def test_without_a_traceparent_the_gateway_still_traces(traced_gateway: Any) -> None:
    url, spans = traced_gateway
    _, raw = plain_request(
        "POST", url, {"content-type": "application/json"}, b'{"query": "{ traceHeader }"}'
    )
    forwarded = json.loads(raw)["data"]["traceHeader"]
    trace_id = forwarded.split("-")[1]
    (server,) = _spans(spans, "POST /graphql", trace_id)
    assert server["links"] == []
