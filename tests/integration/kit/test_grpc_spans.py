"""The kit's own gRPC spans (doorward_kit.grpc_spans), over real grpc.aio with mutual TLS: a
call is a CLIENT span in the caller's trace and a SERVER span under it in the callee, both
named `/package.Service/Method` with the rpc.* attributes; a failed call says so with its code
and status; refused calls are traced too; a stream keeps its spans. These replaced
opentelemetry-instrumentation-grpc (issue 11), so they are what keeps a request one trace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from doorward.audit.v1 import audit_pb2, audit_pb2_grpc
from doorward.identity.v1 import identity_pb2, identity_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.grpc import GrpcServer, ServiceChannel, grpc_errors
from doorward_kit.net import free_port
from doorward_kit.span_policy import filter_attributes
from services.audit.api.grpc import ALLOWED_CALLERS as AUDIT_CALLERS
from services.identity.api.grpc import ALLOWED_CALLERS as IDENTITY_CALLERS
from tests.fixtures.spans import memory_spans

pytestmark = pytest.mark.integration

APPEND = "/doorward.audit.v1.Audit/AppendEvents"
WATCH = "/doorward.identity.v1.Identity/WatchSessions"
TOKEN = "bearer-canary-5150"


class FakeAudit(audit_pb2_grpc.AuditServicer):
    """AppendEvents answers, fails as told, and notes the trace it ran in."""

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.ran_in: list[trace.SpanContext] = []

    @grpc_errors
    async def AppendEvents(self, request: Any, context: Any) -> Any:
        self.ran_in.append(trace.get_current_span().get_span_context())
        if self.fail is not None:
            raise self.fail
        return audit_pb2.AppendEventsResponse(accepted=len(request.events))


class FakeIdentity(identity_pb2_grpc.IdentityServicer):
    def __init__(self) -> None:
        self.ran_in: list[trace.SpanContext] = []

    async def WatchSessions(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        self.ran_in.append(trace.get_current_span().get_span_context())
        yield identity_pb2.SessionEvent(hello=True)
        async for ack in request_iterator:
            yield identity_pb2.SessionEvent(event_id=ack.event_id)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return memory_spans("grpc-span-tests")


@asynccontextmanager
async def serving(service_pki: Any, caller: str = "workorders") -> AsyncIterator[Any]:
    """Audit and identity stand-ins on one mutual-TLS server, and `caller`'s channel to it."""
    port = free_port()
    server = GrpcServer("127.0.0.1", port, service_pki.auth("audit"))
    audit = FakeAudit()
    audit_pb2_grpc.add_AuditServicer_to_server(audit, server.server)
    identity = FakeIdentity()
    identity_pb2_grpc.add_IdentityServicer_to_server(identity, server.server)
    server.allow(AUDIT_CALLERS)
    server.allow(IDENTITY_CALLERS)
    await server.start()
    channel = ServiceChannel(f"127.0.0.1:{port}", service_pki.auth(caller), server="audit")
    try:
        yield audit, identity, channel
    finally:
        await channel.close()
        await server.stop(0)


def _append(channel: ServiceChannel) -> Any:
    stub = audit_pb2_grpc.AuditStub(channel.channel)
    request = audit_pb2.AppendEventsRequest(events=[audit_pb2.AuditEvent(id="e-1")])
    return channel.call(stub.AppendEvents, request, bearer_token=TOKEN, what="audit")


# The async tests of a worker share one event loop (pyproject.toml), and the exporter is the
# process's: spans of work other tests left running can arrive during a test. So a test finds
# its own spans by what it knows of them (the span its handler ran in, or its own trace), never
# as "the only span of that name".


async def _call_spans(
    spans: InMemorySpanExporter, ran_in: list[trace.SpanContext], name: str
) -> tuple[ReadableSpan | None, ReadableSpan]:
    """(CLIENT, SERVER) spans of the one call whose handler noted `ran_in`: the server span it
    ran in, and the client span that is its parent (None when the call brought no context).
    The server ends its span a moment after the client has the answer."""
    for _ in range(200):
        finished = [s for s in spans.get_finished_spans() if s.name == name]
        if len(ran_in) == 1:
            server = [s for s in finished if s.kind is SpanKind.SERVER and s.context == ran_in[0]]
            if server:
                parent = server[0].parent
                client = [
                    s
                    for s in finished
                    if s.kind is SpanKind.CLIENT
                    and parent is not None
                    and s.context.trace_id == parent.trace_id
                    and s.context.span_id == parent.span_id
                ]
                if client or parent is None:
                    return (client[0] if client else None), server[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no server span {name} of this call ({len(ran_in)} handled)")


def _in_trace(spans: InMemorySpanExporter, trace_id: int, kind: SpanKind) -> list[ReadableSpan]:
    return [
        s
        for s in spans.get_finished_spans()
        if s.name == APPEND and s.kind is kind and s.context.trace_id == trace_id
    ]


def _rpc_attributes(span: ReadableSpan, code: int) -> None:
    assert dict(span.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "doorward.audit.v1.Audit",
        "rpc.method": "AppendEvents",
        "rpc.grpc.status_code": code,
    }
    # All of them survive the exporter's allow-list: what the trace store gets.
    assert filter_attributes(span.attributes) == dict(span.attributes or {})


async def test_a_call_is_a_client_span_and_a_server_span_in_the_callers_trace(
    service_pki: Any, spans: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("grpc-span-tests")
    async with serving(service_pki) as (audit, _, channel):
        with tracer.start_as_current_span("request") as request:
            answer = await _append(channel)
        assert answer.accepted == 1
        client, server = await _call_spans(spans, audit.ran_in, APPEND)
    caller = request.get_span_context()
    assert client is not None
    assert client.context.trace_id == server.context.trace_id == caller.trace_id
    assert client.parent is not None and client.parent.span_id == caller.span_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert server.parent.is_remote
    # The handler ran inside the server span (its SQL and calls hang under it).
    assert audit.ran_in == [server.context]
    assert len(_in_trace(spans, caller.trace_id, SpanKind.CLIENT)) == 1
    for span in (client, server):
        _rpc_attributes(span, 0)
        assert span.status.status_code is StatusCode.UNSET
    # The bearer token travels in the metadata, never into a span.
    assert TOKEN not in str([s.to_json() for s in spans.get_finished_spans()])


async def test_a_call_outside_any_trace_starts_one_that_crosses_to_the_server(
    service_pki: Any, spans: InMemorySpanExporter
) -> None:
    async with serving(service_pki) as (audit, _, channel):
        await _append(channel)
        client, server = await _call_spans(spans, audit.ran_in, APPEND)
    assert client is not None and client.parent is None
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id


async def test_a_failed_call_sets_the_error_status_and_the_code_on_both_sides(
    service_pki: Any, spans: InMemorySpanExporter
) -> None:
    async with serving(service_pki) as (audit, _, channel):
        audit.fail = RuntimeError("disk on fire, customer 555-0100")
        with pytest.raises(DoorwardError) as failed:
            await _append(channel)
        assert failed.value.code is ErrorCode.INTERNAL
        client, server = await _call_spans(spans, audit.ran_in, APPEND)
    assert client is not None
    internal = grpc.StatusCode.INTERNAL.value[0]
    for span in (client, server):
        _rpc_attributes(span, internal)
        assert span.status.status_code is StatusCode.ERROR
        assert not span.status.description  # a details string can quote input
    assert server.context.trace_id == client.context.trace_id
    assert "555-0100" not in str([s.to_json() for s in spans.get_finished_spans()])


async def test_an_answer_that_refuses_is_an_error_for_the_caller_not_for_the_server(
    service_pki: Any, spans: InMemorySpanExporter
) -> None:
    async with serving(service_pki) as (audit, _, channel):
        audit.fail = DoorwardError(ErrorCode.BAD_USER_INPUT, "no such event")
        with pytest.raises(DoorwardError):
            await _append(channel)
        client, server = await _call_spans(spans, audit.ran_in, APPEND)
    assert client is not None
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    _rpc_attributes(client, invalid)
    _rpc_attributes(server, invalid)
    assert client.status.status_code is StatusCode.ERROR
    # gRPC semantic conventions: a server span fails only for the server's own faults.
    assert server.status.status_code is StatusCode.UNSET


async def test_a_call_the_allow_list_refuses_is_traced_and_never_runs(
    service_pki: Any, spans: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("grpc-span-tests")
    async with serving(service_pki, caller="gateway") as (audit, _, channel):
        stub = audit_pb2_grpc.AuditStub(channel.channel)
        with tracer.start_as_current_span("refused calls") as calls:
            for _ in range(2):  # the second call goes through the wrapper built for the first
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.AppendEvents(audit_pb2.AppendEventsRequest(), timeout=5)
                assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        ours = calls.get_span_context().trace_id
        await _finished_twice(spans, ours)
    assert audit.ran_in == []
    denied = grpc.StatusCode.PERMISSION_DENIED.value[0]
    by_kind = {kind: _in_trace(spans, ours, kind) for kind in (SpanKind.CLIENT, SpanKind.SERVER)}
    for client, server in zip(by_kind[SpanKind.CLIENT], by_kind[SpanKind.SERVER], strict=True):
        assert server.context.trace_id == client.context.trace_id
        _rpc_attributes(client, denied)
        _rpc_attributes(server, denied)


async def _finished_twice(spans: InMemorySpanExporter, trace_id: int) -> None:
    for _ in range(200):
        kinds = (SpanKind.CLIENT, SpanKind.SERVER)
        if [len(_in_trace(spans, trace_id, kind)) for kind in kinds] == [2, 2]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not two client and two server spans")


async def test_the_allow_list_is_read_per_call_not_when_the_wrapper_was_built(
    service_pki: Any, spans: InMemorySpanExporter
) -> None:
    port = free_port()
    server = GrpcServer("127.0.0.1", port, service_pki.auth("audit"))
    audit = FakeAudit()
    audit_pb2_grpc.add_AuditServicer_to_server(audit, server.server)
    await server.start()
    channel = ServiceChannel(f"127.0.0.1:{port}", service_pki.auth("workorders"), server="audit")
    try:
        with pytest.raises(DoorwardError) as refused:  # nobody named yet: deny by default
            await _append(channel)
        assert refused.value.code is ErrorCode.FORBIDDEN
        server.allow(AUDIT_CALLERS)
        assert (await _append(channel)).accepted == 1
    finally:
        await channel.close()
        await server.stop(0)
    assert len(audit.ran_in) == 1


async def test_a_stream_is_a_span_on_each_side_for_as_long_as_it_lasts(
    service_pki: Any, spans: InMemorySpanExporter
) -> None:
    async with serving(service_pki) as (_, identity, channel):
        stub = identity_pb2_grpc.IdentityStub(channel.channel)
        call = stub.WatchSessions(metadata=channel.metadata())
        assert (await call.read()).hello
        await call.write(identity_pb2.SessionAck(event_id="ev-1"))
        assert (await call.read()).event_id == "ev-1"
        ours = identity.ran_in[0]
        open_spans = [s for s in spans.get_finished_spans() if s.context.trace_id == ours.trace_id]
        assert not open_spans  # still open
        call.cancel()  # a watcher ends its stream by cancelling it
        client, server = await _call_spans(spans, identity.ran_in, WATCH)
    assert client is not None
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert dict(client.attributes or {})["rpc.method"] == "WatchSessions"
    assert dict(server.attributes or {})["rpc.method"] == "WatchSessions"
    # Ending a stream is the watcher's choice, not a fault on either side.
    assert client.status.status_code is server.status.status_code is StatusCode.UNSET


async def test_a_call_without_trace_context_starts_a_trace_of_its_own_at_the_server(
    service_pki: Any, spans: InMemorySpanExporter
) -> None:
    """Whatever was current when the server started (here a span around the start) is never
    the parent of a call that brings no trace context: calls of different callers and
    organisations must not end up in one trace."""
    tracer = trace.get_tracer("grpc-span-tests")
    with tracer.start_as_current_span("process start-up") as startup:
        async with serving(service_pki) as (audit, _, channel):
            # The raw channel: no kit wrapper, so no traceparent in the metadata.
            stub = audit_pb2_grpc.AuditStub(channel.current())
            request = audit_pb2.AppendEventsRequest(events=[audit_pb2.AuditEvent(id="e-1")])
            await stub.AppendEvents(request, metadata=(("authorization", f"Bearer {TOKEN}"),))
            client, server = await _call_spans(spans, audit.ran_in, APPEND)
    assert client is None  # no kit wrapper, no client span
    assert server.parent is None
    assert server.context.trace_id != startup.get_span_context().trace_id
