"""Immediate deactivation, from both sides: before deactivateUser returns every process that
verifies tokens with the kit's guard refuses the user's still-valid access token."""

import asyncio
import contextlib
import time
import uuid

import grpc
import httpx
import pytest
import uvicorn
from doorward.identity.v1 import identity_pb2, identity_pb2_grpc
from fastapi import Request

from doorward_kit.auth import HttpJwksSource, TokenVerifier, bearer_token
from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.grpc import ServiceChannel
from doorward_kit.http import create_app
from doorward_kit.net import free_port
from doorward_kit.session_guard import IdentitySessionGuard, build_token_verifier
from tests.integration.identity.conftest import create_staff, error_code, eventually

pytestmark = pytest.mark.integration

DEACTIVATE = (
    'mutation($id: ID!) { deactivateUser(id: $id, reason: "left the company") { id status } }'
)


async def deactivate(running, org, user_id):
    body = await running.gql(DEACTIVATE, {"id": user_id}, token=org.admin_token)
    assert body["data"]["deactivateUser"] == {"id": user_id, "status": "DEACTIVATED"}, body


@contextlib.asynccontextmanager
async def other_service(stack, auth):
    """A stand-in for any other Doorward process: FastAPI + build_token_verifier(stack)."""
    verifier, guard = build_token_verifier(stack, auth)
    app = create_app("other")

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, str]:
        principal = await verifier.verify(bearer_token(request.headers.get("authorization")))
        return {"user_id": principal.user_id}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", guard
    finally:
        server.should_exit = True
        await task
        await guard.close()


async def test_deactivated_users_token_is_refused_by_another_service_and_by_identity(
    running, org, service_pki
):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    async with (
        other_service(running.stack, service_pki.auth("workorders")) as (url, guard),
        httpx.AsyncClient() as client,
    ):
        headers = {"Authorization": f"Bearer {staff.token}"}
        assert (await client.get(url + "/whoami", headers=headers)).json() == {"user_id": staff.id}
        await eventually(lambda: guard.stream_live)
        # Cached now: the next answers come from the guard's cache, not from identity.
        for _ in range(3):
            assert (await client.get(url + "/whoami", headers=headers)).status_code == 200
        assert running.identity.hub.watcher_count >= 1

        await deactivate(running, org, staff.id)

        refused = await client.get(url + "/whoami", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "UNAUTHENTICATED"
        assert staff.token not in refused.text
    # The identity subgraph, called directly, refuses it too.
    assert error_code(await running.gql("{ me { id } }", token=staff.token)) == "UNAUTHENTICATED"
    # And nobody can log in as them any more (same answer as a wrong password).
    from tests.integration.identity.conftest import NEW_PASSWORD, login

    assert error_code(await login(running, staff.email, NEW_PASSWORD)) == "UNAUTHENTICATED"


async def test_token_verifier_with_the_real_guard(running, org, service_pki):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    other = await create_staff(running, org, ["TECHNICIAN"], [])
    guard = IdentitySessionGuard(
        ServiceChannel(running.grpc_target, service_pki.auth("gateway"), server="identity")
    )
    verifier = TokenVerifier(HttpJwksSource(running.http_url + "/.well-known/jwks.json"), guard)
    try:
        assert (await verifier.verify(staff.token)).user_id == staff.id
        await eventually(lambda: guard.stream_live)
        assert (await verifier.verify(staff.token)).user_id == staff.id
        # From the cache: identity is not asked again within the cache's lifetime.
        calls = []
        real = guard._stub.CheckSession

        def counting(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)

        guard._stub.CheckSession = counting
        for _ in range(5):
            await verifier.verify(staff.token)
        assert calls == []
        await deactivate(running, org, staff.id)
        with pytest.raises(DoorwardError) as refused:
            await verifier.verify(staff.token)
        assert refused.value.code is ErrorCode.UNAUTHENTICATED
        # Somebody else is not affected.
        assert (await verifier.verify(other.token)).user_id == other.id
        # Logout reaches the cache too.
        await running.gql("mutation { logout }", token=other.token)
        with pytest.raises(DoorwardError):
            await verifier.verify(other.token)
    finally:
        await guard.close()


async def test_without_the_stream_every_check_asks_identity(running, org, service_pki):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    guard = IdentitySessionGuard(
        ServiceChannel(running.grpc_target, service_pki.auth("gateway"), server="identity"),
        watch=False,
    )
    verifier = TokenVerifier(HttpJwksSource(running.http_url + "/.well-known/jwks.json"), guard)
    try:
        assert (await verifier.verify(staff.token)).user_id == staff.id
        assert not guard.stream_live
        await deactivate(running, org, staff.id)
        with pytest.raises(DoorwardError):
            await verifier.verify(staff.token)
    finally:
        await guard.close()


async def test_guard_fails_closed_when_identity_is_unreachable(running, org, service_pki):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    guard = IdentitySessionGuard(
        ServiceChannel(
            f"127.0.0.1:{free_port()}", service_pki.auth("gateway"), 1.0, server="identity"
        )
    )
    verifier = TokenVerifier(HttpJwksSource(running.http_url + "/.well-known/jwks.json"), guard)
    try:
        with pytest.raises(DoorwardError) as refused:
            await verifier.verify(staff.token)
        assert refused.value.code is ErrorCode.UNAVAILABLE
    finally:
        await guard.close()


async def test_deactivation_revokes_secret_grants_reliably(running, org):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    running.secrets.failures_left = 2  # secrets is down for a moment
    await deactivate(running, org, staff.id)
    await eventually(lambda: running.secrets.for_user(staff.id), timeout=10)
    request = running.secrets.for_user(staff.id)[0]
    assert request.org_id == org.id and request.reason == "deactivated"
    await eventually(lambda: running.audit.of("user.deactivate", org.id))
    event = running.audit.of("user.deactivate", org.id)[0]
    assert event.actor_id == org.admin_id and event.target_id == staff.id
    assert "left the company" not in str(event)


async def test_deactivate_waits_for_acks_and_drops_a_silent_watcher(running, org, service_pki):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    channel = ServiceChannel(running.grpc_target, service_pki.auth("secrets"), server="identity")
    stub = identity_pb2_grpc.IdentityStub(channel.channel)
    call = stub.WatchSessions()
    hello = await call.read()
    assert hello.hello
    try:
        started = time.monotonic()
        await deactivate(running, org, staff.id)
        waited = time.monotonic() - started
        # It waited for our ack (which never came), then gave up on us.
        assert waited >= running.settings.identity_watch_ack_timeout * 0.9
        events = []
        while True:
            event = await call.read()
            if event is grpc.aio.EOF:
                break
            if not event.heartbeat:
                events.append(event)
        assert events and events[0].user_id == staff.id and events[0].deactivated
    finally:
        call.cancel()
        await channel.close()


async def test_internal_grpc_needs_a_service_certificate(running, org, service_pki):
    async with grpc.aio.insecure_channel(running.grpc_target) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await identity_pb2_grpc.IdentityStub(plain).GetUsers(
                identity_pb2.GetUsersRequest(org_id=org.id, user_ids=[org.admin_id]), timeout=2
            )
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE  # no TLS handshake at all
    channel = ServiceChannel(running.grpc_target, service_pki.auth("workorders"), server="identity")
    try:
        stub = identity_pb2_grpc.IdentityStub(channel.channel)
        md = channel.metadata()
        users = await stub.GetUsers(
            identity_pb2.GetUsersRequest(org_id=org.id, user_ids=[org.admin_id, "nobody"]),
            metadata=md,
        )
        assert [u.id for u in users.users] == [org.admin_id]
        assert users.users[0].roles == ["ADMIN"] and users.users[0].status == identity_pb2.ACTIVE
        other = await stub.GetUsers(
            identity_pb2.GetUsersRequest(org_id="another-org", user_ids=[org.admin_id]), metadata=md
        )
        assert list(other.users) == []
        with pytest.raises(grpc.aio.AioRpcError) as nobody:
            await stub.GetOrgPolicy(identity_pb2.GetOrgPolicyRequest(org_id=org.id), metadata=md)
        assert nobody.value.code() is grpc.StatusCode.PERMISSION_DENIED  # no caller today
        check = await stub.CheckSession(
            identity_pb2.CheckSessionRequest(
                user_id=org.admin_id, org_id=org.id, epoch=0, session_id="nope"
            ),
            metadata=md,
        )
        assert not check.valid and check.reason == "revoked"
    finally:
        await channel.close()


async def test_the_guard_reconnects_and_distrusts_its_cache_meanwhile(running, org, service_pki):
    from doorward_kit.grpc import GrpcServer
    from services.identity.api.grpc import add_to_server

    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    port = free_port()

    async def serve():
        server = GrpcServer("127.0.0.1", port, service_pki.auth("identity"))
        add_to_server(server, running.identity)
        await server.start()
        return server

    server = await serve()
    guard = IdentitySessionGuard(
        ServiceChannel(f"127.0.0.1:{port}", service_pki.auth("audit"), 1.0, server="identity")
    )
    verifier = TokenVerifier(HttpJwksSource(running.http_url + "/.well-known/jwks.json"), guard)
    try:
        await verifier.verify(staff.token)
        await eventually(lambda: guard.stream_live)
        await server.stop(0)
        await eventually(lambda: not guard.stream_live)
        # identity unreachable: no cached answer is used, the check fails closed.
        with pytest.raises(DoorwardError) as refused:
            await verifier.verify(staff.token)
        assert refused.value.code is ErrorCode.UNAVAILABLE
        server = await serve()
        await eventually(lambda: guard.stream_live, timeout=10)
        assert (await verifier.verify(staff.token)).user_id == staff.id
    finally:
        await guard.close()
        await server.stop(0)


async def test_get_regions_answers_only_the_organisations_own(running, org, service_pki):
    from tests.integration.identity.conftest import create_region, new_org

    mine = await create_region(running, org, f"Leeds-{uuid.uuid4().hex[:6]}")
    other_org = await new_org(running)
    theirs = await create_region(running, other_org, f"Paris-{uuid.uuid4().hex[:6]}")
    channel = ServiceChannel(running.grpc_target, service_pki.auth("workorders"), server="identity")
    try:
        stub = identity_pb2_grpc.IdentityStub(channel.channel)
        reply = await stub.GetRegions(
            identity_pb2.GetRegionsRequest(
                org_id=org.id, region_ids=[mine, theirs, str(uuid.uuid4())]
            )
        )
    finally:
        await channel.close()
    assert [r.id for r in reply.regions] == [mine]
