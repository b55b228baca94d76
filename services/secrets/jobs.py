"""workorders' view of a job (gRPC GetAccessContext): the secrets service's second opinion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from doorward.workorders.v1 import workorders_pb2, workorders_pb2_grpc

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.grpc import ServiceChannel
from services.secrets.service.rules import JobContext


class WorkOrdersJobs:
    def __init__(self, channel: ServiceChannel) -> None:
        self._channel = channel
        self._stub = workorders_pb2_grpc.WorkOrdersStub(channel.channel)

    async def access_context(self, org_id: str, work_order_id: str) -> JobContext | None:
        try:
            reply = await self._channel.call(
                self._stub.GetAccessContext,
                workorders_pb2.GetAccessContextRequest(org_id=org_id, work_order_id=work_order_id),
                what="workorders",
            )
        except DoorwardError as error:
            if error.code in (ErrorCode.NOT_FOUND, ErrorCode.FORBIDDEN):
                return None
            raise
        return context_from_proto(reply)


def context_from_proto(reply: workorders_pb2.AccessContext) -> JobContext | None:
    if not reply.work_order_id:
        return None
    start = _time(reply, "scheduled_start")
    end = _time(reply, "scheduled_end")
    return JobContext(
        work_order_id=reply.work_order_id,
        org_id=reply.org_id,
        site_id=reply.site_id,
        region_id=reply.region_id,
        assignee_id=reply.assignee_id,
        status=reply.status,
        window_start=start - timedelta(seconds=max(0, reply.lead_seconds)) if start else None,
        window_end=end + timedelta(seconds=max(0, reply.grace_seconds)) if end else None,
        secret_ref_ids=frozenset(reply.secret_ref_ids),
    )


def _time(reply: workorders_pb2.AccessContext, name: str) -> datetime | None:
    if not reply.HasField(name):
        return None
    value: datetime = getattr(reply, name).ToDatetime(tzinfo=UTC)
    return value
