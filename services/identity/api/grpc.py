"""Identity's internal gRPC API: CheckSession, WatchSessions, GetUsers, GetOrgPolicy.
The kit's interceptor has already checked the caller against ALLOWED_CALLERS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from doorward.identity.v1 import identity_pb2, identity_pb2_grpc

from doorward_kit.acting import acting_user
from doorward_kit.errors import bad_input, unavailable
from doorward_kit.grpc import GrpcServer, allow_list, grpc_errors
from services.identity.runtime import Identity
from services.identity.service.step_up import StepUps
from services.identity.session_hub import SessionHub, Watcher

HEARTBEAT_SECONDS = 1.0

# Who may call what (deny by default; the caller is its verified certificate). Every process
# that verifies access tokens checks sessions; only workorders looks users and regions up.
_SESSION_CHECKERS = {"gateway", "workorders", "secrets", "audit", "traces"}
ALLOWED_CALLERS = allow_list(
    identity_pb2.DESCRIPTOR.services_by_name["Identity"],
    {
        "CheckSession": _SESSION_CHECKERS,
        "WatchSessions": _SESSION_CHECKERS,
        "GetUsers": {"workorders"},
        "GetRegions": {"workorders"},
        "GetOrgPolicy": set(),  # no caller today
        "VerifyStepUp": {"workorders"},  # break-glass: workorders proves the admin's code
    },
)

_STATUS = {"ACTIVE": identity_pb2.ACTIVE, "DEACTIVATED": identity_pb2.DEACTIVATED}


class IdentityServicer(identity_pb2_grpc.IdentityServicer):
    def __init__(self, identity: Identity) -> None:
        self._identity = identity
        self._step_ups = StepUps(identity.service)

    @grpc_errors
    async def CheckSession(
        self, request: identity_pb2.CheckSessionRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.CheckSessionResponse:
        if not (request.user_id and request.org_id and request.session_id):
            raise bad_input("user_id, org_id and session_id are required")
        # One statement: read without a transaction (every uncached check of every process).
        async with self._identity.db.raw_reads() as conn:
            state = await self._identity.service.check_session(
                conn,
                org_id=request.org_id,
                user_id=request.user_id,
                epoch=request.epoch,
                session_id=request.session_id,
            )
        return identity_pb2.CheckSessionResponse(
            valid=state.valid, current_epoch=state.current_epoch, reason=state.reason
        )

    async def WatchSessions(
        self,
        request_iterator: AsyncIterator[identity_pb2.SessionAck],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[identity_pb2.SessionEvent]:
        hub = self._identity.hub
        if not self._identity.accepts_watchers:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "session changes cannot reach this replica now"
            )
        name = dict(context.invocation_metadata() or ()).get("x-doorward-watcher", "")
        watcher = hub.register(str(name) or context.peer())
        acks = asyncio.create_task(_read_acks(hub, watcher, request_iterator))
        try:
            yield identity_pb2.SessionEvent(hello=True)
            while not acks.done():
                try:
                    async with asyncio.timeout(HEARTBEAT_SECONDS):
                        item = await watcher.queue.get()
                except TimeoutError:
                    yield identity_pb2.SessionEvent(heartbeat=True)
                    continue
                if item is None:
                    return
                event_id, change = item
                yield identity_pb2.SessionEvent(
                    event_id=event_id,
                    user_id=change.user_id,
                    org_id=change.org_id,
                    epoch=change.epoch,
                    deactivated=change.deactivated,
                    session_id=change.session_id,
                )
        finally:
            hub.unregister(watcher)
            acks.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acks

    @grpc_errors
    async def GetUsers(
        self, request: identity_pb2.GetUsersRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.GetUsersResponse:
        if not request.org_id:
            raise bad_input("org_id is required")
        async with self._identity.db.unit_of_work() as session:
            views = await self._identity.service.get_users(
                session, request.org_id, list(request.user_ids)
            )
        return identity_pb2.GetUsersResponse(
            users=[
                identity_pb2.User(
                    id=v.id,
                    org_id=v.org_id,
                    display_name=v.display_name,
                    roles=list(v.roles),
                    region_ids=list(v.region_ids),
                    status=_STATUS.get(v.status, identity_pb2.USER_STATUS_UNSPECIFIED),
                )
                for v in views
            ]
        )

    @grpc_errors
    async def GetOrgPolicy(
        self, request: identity_pb2.GetOrgPolicyRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.OrgPolicy:
        if not request.org_id:
            raise bad_input("org_id is required")
        async with self._identity.db.unit_of_work() as session:
            roles = await self._identity.service.mfa_required_roles(session, request.org_id)
        return identity_pb2.OrgPolicy(org_id=request.org_id, mfa_required_roles=sorted(roles))

    @grpc_errors
    async def GetRegions(
        self, request: identity_pb2.GetRegionsRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.GetRegionsResponse:
        if not request.org_id:
            raise bad_input("org_id is required")
        async with self._identity.db.unit_of_work() as session:
            ids = await self._identity.service.existing_region_ids(
                session, request.org_id, list(request.region_ids)
            )
        return identity_pb2.GetRegionsResponse(
            regions=[identity_pb2.Region(id=i, org_id=request.org_id) for i in ids]
        )

    @grpc_errors
    async def VerifyStepUp(
        self, request: identity_pb2.VerifyStepUpRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.StepUp:
        # The user is the one of the access token the call carries; never a request field.
        if self._identity.verifier is None:
            raise unavailable("identity cannot verify tokens yet")
        principal = await acting_user(context, self._identity.verifier)
        async with self._identity.db.unit_of_work() as session:
            outcome = await self._step_ups.verify(
                session, principal, request.otp, request.purpose, request.binding
            )
        result = outcome.unwrap()  # a refusal's audit event is committed first
        return identity_pb2.StepUp(assertion=result.assertion, expires_at=result.expires_at)


async def _read_acks(
    hub: SessionHub, watcher: Watcher, requests: AsyncIterator[identity_pb2.SessionAck]
) -> None:
    async for ack in requests:
        hub.ack(watcher, ack.event_id)


def add_to_server(server: GrpcServer, identity: Identity) -> None:
    identity_pb2_grpc.add_IdentityServicer_to_server(IdentityServicer(identity), server.server)
    server.allow(ALLOWED_CALLERS)
