"""Issue 10, findings 1 and 7 at the secrets REST door (clients call it directly): a request
body is counted as it arrives, and a client's `traceparent` is only a link of a trace the door
starts, so a client cannot choose the traceId of the audit events its requests cause.

The real secrets service (PostgreSQL + OpenBao from the fixtures), over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from doorward_kit.auth import Role
from tests.integration.secrets.conftest import SecretsHarness, running_secrets
from tests.security.edge_helpers import answer_json, plain_request, stream_body

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(120),
]

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def secrets_svc(postgres: Any, openbao: Any) -> AsyncIterator[SecretsHarness]:
    async with running_secrets(
        db_url=postgres.fresh_database("secrets_edge"),
        vault_addr=openbao.addr,
        role_id=openbao.role_id,
        secret_id=openbao.secret_id,
    ) as harness:
        yield harness


@pytest.fixture
def org_id() -> str:
    return str(uuid.uuid4())


def _upload_url(h: SecretsHarness) -> str:
    return f"{h.base_url}/v1/uploads/{uuid.uuid4()}"  # no such slot: the body is read first


async def test_an_oversized_body_is_cut_off_as_it_arrives(
    secrets_svc: SecretsHarness,
    org_id: str,
) -> None:
    h = secrets_svc
    token = h.token(str(uuid.uuid4()), org_id, (Role.DISPATCHER,))
    # Before: the whole chunked body (here 64 MB) was read, then compared with the 16 KB limit.
    sent, answer = await asyncio.to_thread(
        stream_body,
        _upload_url(h),
        64 * 1024 * 1024,
        method="PUT",
        extra_headers=f"Authorization: Bearer {token}\r\n",
    )
    assert sent < 16 * 1024 * 1024, f"the door read {sent} bytes of a 16 KB-limited body"
    if answer:  # the refusal, unless the connection was reset before it could be read
        status, body = answer_json(answer)
        assert status == 413
        assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_a_large_body_answers_413_in_the_contract_shape(
    secrets_svc: SecretsHarness,
    org_id: str,
) -> None:
    h = secrets_svc
    token = h.token(str(uuid.uuid4()), org_id, (Role.DISPATCHER,))

    async def body() -> Any:  # no Content-Length: sent chunked
        yield b'{"uploadToken": "t", "value": "'
        for _ in range(8):
            yield b"x" * 8192
        yield b'"}'

    r = await h.http.put(
        _upload_url(h), headers={"Authorization": f"Bearer {token}"}, content=body()
    )
    assert r.status_code == 413
    assert r.json() == {
        "error": {"code": "PAYLOAD_TOO_LARGE", "message": "the request body is too large"}
    }
    assert r.headers["cache-control"] == "no-store"
    # Honest side: a body under the limit is read and goes on to the service (no such slot).
    r = await h.http.put(
        _upload_url(h),
        headers={"Authorization": f"Bearer {token}"},
        json={"uploadToken": "t", "value": "v" * 1000},
    )
    assert r.status_code == 404


class _ServerSpans(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.active = True

    def on_end(self, span: ReadableSpan) -> None:
        if self.active and span.kind is trace.SpanKind.SERVER:
            self.spans.append(span)


async def test_a_client_traceparent_is_only_a_link(
    secrets_svc: SecretsHarness,
    org_id: str,
) -> None:
    h = secrets_svc
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)  # the harness sets telemetry up
    catch = _ServerSpans()
    provider.add_span_processor(catch)
    try:
        user = str(uuid.uuid4())
        status, _ = await asyncio.to_thread(
            plain_request,
            "PUT",
            _upload_url(h),
            {
                "Authorization": f"Bearer {h.token(user, org_id, (Role.DISPATCHER,))}",
                "traceparent": CLIENT_TRACEPARENT,
                "Content-Type": "application/json",
            },
            json.dumps({"uploadToken": "t", "value": "v"}).encode(),
        )
        assert status == 404
        event = await h.audit.wait_for(org_id, "secret.upload.denied", reason="not_found")
        # Before: the client's trace id was the audit event's.
        assert event.trace_id and event.trace_id != CLIENT_TRACE
        assert int(event.trace_id, 16) != 0
        server = [
            s
            for s in catch.spans
            if s.context is not None and format(s.context.trace_id, "032x") == event.trace_id
        ]
        assert server and server[0].parent is None  # the door started this trace
        assert [format(link.context.trace_id, "032x") for link in server[0].links] == [CLIENT_TRACE]
    finally:
        catch.active = False
