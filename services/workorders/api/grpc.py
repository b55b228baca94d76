"""gRPC for the secrets service: GetAccessContext, its second opinion on a job."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from doorward.workorders.v1 import workorders_pb2, workorders_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from doorward_kit.db import Database
from doorward_kit.errors import bad_input
from doorward_kit.grpc import GrpcServer, allow_list, grpc_errors
from services.workorders.service import WorkOrdersService

# Deny by default; the caller is its verified certificate. Only secrets re-checks a job.
ALLOWED_CALLERS = allow_list(
    workorders_pb2.DESCRIPTOR.services_by_name["WorkOrders"], {"GetAccessContext": {"secrets"}}
)


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


class WorkOrdersServicer(workorders_pb2_grpc.WorkOrdersServicer):
    def __init__(self, db: Database, service: WorkOrdersService) -> None:
        self.db = db
        self.service = service

    @grpc_errors
    async def GetAccessContext(
        self, request: workorders_pb2.GetAccessContextRequest, context: grpc.aio.ServicerContext
    ) -> workorders_pb2.AccessContext:
        if not request.org_id or not request.work_order_id:
            raise bad_input("org_id and work_order_id are required")
        # A short read-only transaction: IssueGrant's caller may be waiting on us.
        async with self.db.unit_of_work() as session:
            view = await self.service.access_context(session, request.org_id, request.work_order_id)
        order = view.order
        reply = workorders_pb2.AccessContext(
            work_order_id=order.id,
            org_id=order.org_id,
            site_id=order.site_id,
            region_id=order.region_id,
            assignee_id=order.assignee_id or "",
            status=order.status,
            lead_seconds=int(view.policy.lead.total_seconds()),
            grace_seconds=int(view.policy.grace.total_seconds()),
            secret_ref_ids=view.secret_ref_ids,
        )
        if order.scheduled_start is not None:
            reply.scheduled_start.CopyFrom(_ts(order.scheduled_start))
        if order.scheduled_end is not None:
            reply.scheduled_end.CopyFrom(_ts(order.scheduled_end))
        return reply


def add_to_server(server: GrpcServer, db: Database, service: WorkOrdersService) -> None:
    workorders_pb2_grpc.add_WorkOrdersServicer_to_server(
        WorkOrdersServicer(db, service), server.server
    )
    server.allow(ALLOWED_CALLERS)
