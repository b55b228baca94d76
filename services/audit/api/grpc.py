"""Audit's internal gRPC API: AppendEvents, answered only after the batch is committed;
PruneEvents for the retention purge.

An event's `service` is the authenticated caller (its verified certificate), never what the
message says: an event naming another service is refused, an unnamed one gets the caller's."""

from __future__ import annotations

from datetime import UTC

import grpc
from doorward.audit.v1 import audit_pb2, audit_pb2_grpc
from sqlalchemy.exc import IntegrityError

from doorward_kit.audit_client import AuditDetailsError, AuditRecord
from doorward_kit.db import Database
from doorward_kit.errors import bad_input, conflict, forbidden, unauthenticated
from doorward_kit.grpc import GrpcServer, allow_list, caller_service, grpc_errors
from services.audit.service import AuditService, Incoming

MAX_BATCH = 1000

# Deny by default: the services that write audit events (the gateway writes none).
ALLOWED_CALLERS = allow_list(
    audit_pb2.DESCRIPTOR.services_by_name["Audit"],
    {
        "AppendEvents": {"identity", "workorders", "secrets"},
        # Only the retention purge (workorders holds the organisations' retention policies).
        "PruneEvents": {"workorders"},
    },
)


def parse_events(request: audit_pb2.AppendEventsRequest, caller: str) -> list[Incoming]:
    if len(request.events) > MAX_BATCH:
        raise bad_input(f"at most {MAX_BATCH} events per call")
    items: list[Incoming] = []
    for index, message in enumerate(request.events):
        try:
            record = AuditRecord.from_proto(message)
        except (AuditDetailsError, ValueError) as error:
            # The validator's message names the field, never its value.
            raise bad_input(f"event {index}: {error}") from None
        if message.service and message.service != caller:
            raise forbidden(f"event {index}: a service may append events only under its own name")
        items.append(Incoming(record, caller))
    return items


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(self, db: Database, service: AuditService) -> None:
        self._db = db
        self._service = service

    @grpc_errors
    async def AppendEvents(
        self, request: audit_pb2.AppendEventsRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.AppendEventsResponse:
        caller = caller_service(context)
        if caller is None:  # the interceptor lets no such call through; never trust a field
            raise unauthenticated("no service identity")
        items = parse_events(request, caller)
        try:
            async with self._db.unit_of_work() as session:
                result = await self._service.append(session, items)
        except IntegrityError:
            # Two batches raced past the duplicate check? The head lock makes that impossible;
            # answer CONFLICT rather than a masked internal error if it ever happens.
            raise conflict("an event with this id is being stored concurrently") from None
        return audit_pb2.AppendEventsResponse(
            accepted=result.accepted, duplicates=result.duplicates
        )

    @grpc_errors
    async def PruneEvents(
        self, request: audit_pb2.PruneEventsRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.PruneEventsResponse:
        if not request.org_id or not request.HasField("before"):
            raise bad_input("org_id and before are required")
        before = request.before.ToDatetime(tzinfo=UTC)
        async with self._db.unit_of_work() as session:
            result = await self._service.prune_org(
                session, request.org_id, before, held_ids=list(request.held_ids)
            )
        return audit_pb2.PruneEventsResponse(pruned_through=result.through, deleted=result.deleted)


def add_to_server(server: GrpcServer, db: Database, service: AuditService) -> None:
    audit_pb2_grpc.add_AuditServicer_to_server(AuditServicer(db, service), server.server)
    server.allow(ALLOWED_CALLERS)
