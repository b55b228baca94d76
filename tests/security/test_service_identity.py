"""Issue 10, finding 3 (first half): every internal gRPC call is made as one named service,
proven by a certificate from the Doorward CA, and each server answers a method only for the
services its allow-list names. One process's own credentials must not let it speak for another.

Each attack is shown failing beside the honest call that still works.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import hvac
import pytest
import pytest_asyncio
from cryptography import x509
from doorward.audit.v1 import audit_pb2, audit_pb2_grpc
from doorward.identity.v1 import identity_pb2, identity_pb2_grpc
from doorward.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from doorward.traces.v1 import traces_pb2, traces_pb2_grpc
from doorward.workorders.v1 import workorders_pb2, workorders_pb2_grpc

from deploy.pki import CertificateIssuer, CertificateRenewer, provision_pki
from doorward_kit.grpc import (
    GrpcServer,
    InternalAuth,
    ServiceChannel,
    caller_service,
)
from doorward_kit.net import free_port
from doorward_kit.settings import StackSettings
from doorward_kit.tls import SERVICES, CredentialFolder
from services.audit.api.grpc import ALLOWED_CALLERS as AUDIT_CALLERS
from services.audit.api.grpc import AuditServicer
from services.identity.api.grpc import ALLOWED_CALLERS as IDENTITY_CALLERS
from services.identity.api.grpc import IdentityServicer
from services.secrets.api.grpc import ALLOWED_CALLERS as SECRETS_CALLERS
from services.secrets.api.grpc import SecretsServicer
from services.traces.api.grpc import ALLOWED_CALLERS as TRACES_CALLERS
from services.traces.api.grpc import TracesServicer
from services.workorders.api.grpc import ALLOWED_CALLERS as WORKORDERS_CALLERS
from services.workorders.api.grpc import WorkOrdersServicer
from tests.fixtures.pki import ServicePki, TestCA
from tests.integration.audit.harness import record, running_audit
from tests.integration.secrets.conftest import running_secrets

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

DENIED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _channel(target: str, auth: InternalAuth, server: str) -> ServiceChannel:
    return ServiceChannel(target, auth, 3.0, server=server)


# --------------------------------------------------------------------------- audit


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def audit_svc(postgres: Any) -> AsyncIterator[Any]:
    async with running_audit(postgres) as harness:
        yield harness


async def _services_of(audit: Any, org_id: str) -> list[str]:
    conn = await audit.superuser()
    try:
        rows = await conn.fetch(
            "SELECT service FROM audit_events WHERE org_id = $1 ORDER BY seq", org_id
        )
    finally:
        await conn.close()
    return [r["service"] for r in rows]


async def test_no_audit_event_is_accepted_under_another_services_name(audit_svc: Any) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    channel = _channel(audit_svc.grpc_target, audit_svc.pki.auth("workorders"), "audit")
    stub = audit_pb2_grpc.AuditStub(channel.channel)
    try:
        # The attack: workorders' own certificate, events that say "secrets" / "identity".
        for claimed in ("secrets", "identity"):
            forged = record(org, action="secret.reveal").to_proto(claimed)
            code = await _code(stub.AppendEvents(audit_pb2.AppendEventsRequest(events=[forged])))
            assert code is grpc.StatusCode.PERMISSION_DENIED
        # One forged event spoils its whole batch: nothing of it is stored.
        mixed = [record(org).to_proto("workorders"), record(org).to_proto("secrets")]
        code = await _code(stub.AppendEvents(audit_pb2.AppendEventsRequest(events=mixed)))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert await _services_of(audit_svc, org) == []
        # Honest: its own name, or no name at all, is stored as the authenticated caller.
        honest = [record(org).to_proto("workorders"), record(org).to_proto("")]
        reply = await stub.AppendEvents(audit_pb2.AppendEventsRequest(events=honest))
        assert reply.accepted == 2
        assert await _services_of(audit_svc, org) == ["workorders", "workorders"]
    finally:
        await channel.close()


async def test_the_gateway_writes_no_audit_events(audit_svc: Any) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    gateway = _channel(audit_svc.grpc_target, audit_svc.pki.auth("gateway"), "audit")
    try:
        event = record(org).to_proto("gateway")
        stub = audit_pb2_grpc.AuditStub(gateway.channel)
        code = await _code(stub.AppendEvents(audit_pb2.AppendEventsRequest(events=[event])))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert await _services_of(audit_svc, org) == []
    finally:
        await gateway.close()


# --------------------------------------------------------------------------- secrets


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def secrets_svc(postgres: Any, openbao: Any, service_pki: ServicePki) -> AsyncIterator[Any]:
    async with running_secrets(
        db_url=postgres.fresh_database("secrets_identity"),
        vault_addr=openbao.addr,
        role_id=openbao.role_id,
        secret_id=openbao.secret_id,
        pki=service_pki,
    ) as harness:
        yield harness


async def test_the_gateways_certificate_cannot_ask_secrets_for_anything(
    secrets_svc: Any,
) -> None:
    h = secrets_svc
    org, customer = str(uuid.uuid4()), str(uuid.uuid4())
    # Fields as an honest workorders would send them; the user's token is beside the point:
    # the gateway's certificate is refused before anyone looks at the request.
    attacks: list[tuple[str, Any]] = [
        ("IssueGrant", secrets_pb2.IssueGrantRequest(
            work_order_id="w", secret_ref_id="s", reason="attack")),
        ("PrepareUpload", secrets_pb2.PrepareUploadRequest(
            site_id="s", region_id="r", kind="DOOR_CODE", label="x")),
        ("CreateDataKey", secrets_pb2.CreateDataKeyRequest(org_id=org, customer_id=customer)),
        ("DecryptDataKey", secrets_pb2.DecryptDataKeyRequest(
            org_id=org, customer_id=customer, ciphertext=b"vault:v1:AAAA")),
        ("DestroyCustomerKey", secrets_pb2.DestroyCustomerKeyRequest(customer_id=customer)),
        ("RevokeGrants", secrets_pb2.RevokeGrantsRequest(org_id=org, user_id="u", reason="x")),
        ("GetSecretRefs", secrets_pb2.GetSecretRefsRequest(org_id=org, site_ids=["s"])),
        ("DeleteSiteSecrets", secrets_pb2.DeleteSiteSecretsRequest(site_id="s")),
        ("PruneGrants", secrets_pb2.PruneGrantsRequest(org_id=org)),
        ("RetireSiteSecrets", secrets_pb2.RetireSiteSecretsRequest(org_id=org, site_ids=["s"])),
    ]  # fmt: skip
    for method, request in attacks:
        for caller in ("gateway", "audit"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await h.call(method, request, caller=caller)
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED, (method, caller)
    # Honest: workorders gets its customer's data key.
    key = await h.call(
        "CreateDataKey", secrets_pb2.CreateDataKeyRequest(org_id=org, customer_id=customer)
    )
    assert key.plaintext and key.ciphertext


async def test_only_identity_revokes_by_user_and_only_workorders_by_job(secrets_svc: Any) -> None:
    h = secrets_svc
    org = str(uuid.uuid4())
    by_user = secrets_pb2.RevokeGrantsRequest(org_id=org, user_id=str(uuid.uuid4()), reason="x")
    by_job = secrets_pb2.RevokeGrantsRequest(
        org_id=org, work_order_id=str(uuid.uuid4()), reason="completed"
    )
    for request, wrong in ((by_user, "workorders"), (by_job, "identity")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await h.call("RevokeGrants", request, caller=wrong)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # Honest: each revokes what it owns (nothing to revoke here, but the call is answered).
    assert (await h.call("RevokeGrants", by_user, caller="identity")).revoked == 0
    assert (await h.call("RevokeGrants", by_job, caller="workorders")).revoked == 0
    # identity may not mint grants either.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.call(
            "IssueGrant", secrets_pb2.IssueGrantRequest(work_order_id="w"), caller="identity"
        )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


# --------------------------------------------------------------------------- the whole table


def _servicers() -> dict[str, tuple[Any, Any]]:
    # Real servicers over nothing: an allowed call gets past the allow-list and fails inside
    # (bad input, no user token, or a masked internal error), a refused one never reaches the
    # servicer.
    return {
        "identity": (IDENTITY_CALLERS, IdentityServicer(SimpleNamespace(service=None))),  # type: ignore[arg-type]
        "secrets": (SECRETS_CALLERS, SecretsServicer(None, None)),  # type: ignore[arg-type]
        "workorders": (WORKORDERS_CALLERS, WorkOrdersServicer(None, None)),  # type: ignore[arg-type]
        "audit": (AUDIT_CALLERS, AuditServicer(None, None)),  # type: ignore[arg-type]
        "traces": (TRACES_CALLERS, TracesServicer(None, None, None)),  # type: ignore[arg-type]
    }


_ADD = {
    "identity": identity_pb2_grpc.add_IdentityServicer_to_server,
    "secrets": secrets_pb2_grpc.add_SecretsServicer_to_server,
    "workorders": workorders_pb2_grpc.add_WorkOrdersServicer_to_server,
    "audit": audit_pb2_grpc.add_AuditServicer_to_server,
    "traces": traces_pb2_grpc.add_TracesServicer_to_server,
}
_STUB = {
    "identity": identity_pb2_grpc.IdentityStub,
    "secrets": secrets_pb2_grpc.SecretsStub,
    "workorders": workorders_pb2_grpc.WorkOrdersStub,
    "audit": audit_pb2_grpc.AuditStub,
    "traces": traces_pb2_grpc.TracesStub,
}
_PB = {
    "identity": identity_pb2,
    "secrets": secrets_pb2,
    "workorders": workorders_pb2,
    "audit": audit_pb2,
    "traces": traces_pb2,
}


@pytest.mark.parametrize("server_name", ["identity", "secrets", "workorders", "audit", "traces"])
async def test_every_method_answers_exactly_the_services_its_allow_list_names(
    server_name: str, service_pki: ServicePki, caplog: pytest.LogCaptureFixture
) -> None:
    table, servicer = _servicers()[server_name]
    port = free_port()
    server = GrpcServer("127.0.0.1", port, service_pki.auth(server_name))
    _ADD[server_name](servicer, server.server)
    server.allow(table)
    await server.start()
    pb = _PB[server_name]
    descriptor = pb.DESCRIPTOR.services_by_name[next(iter(pb.DESCRIPTOR.services_by_name))]
    channels = {
        svc: _channel(f"127.0.0.1:{port}", service_pki.auth(svc), server_name) for svc in SERVICES
    }
    caplog.set_level(logging.WARNING, logger="doorward_kit.grpc")
    try:
        for method in descriptor.methods:
            allowed = table[f"/{descriptor.full_name}/{method.name}"]
            for svc, channel in channels.items():
                stub = _STUB[server_name](channel.channel)
                request = getattr(pb, method.input_type.name)()
                if method.client_streaming:
                    call = getattr(stub, method.name)(timeout=2)
                    code = await _code(call.read())
                    call.cancel()
                else:
                    code = await _code(getattr(stub, method.name)(request, timeout=2))
                if svc in allowed:  # past the allow-list (the servicer may still refuse)
                    assert code is not grpc.StatusCode.PERMISSION_DENIED, (method.name, svc)
                else:
                    assert code is grpc.StatusCode.PERMISSION_DENIED, (method.name, svc, code)
        # The gateway, facing the internet, may only check and watch sessions.
        gateway_may = {path for path, who in table.items() if "gateway" in who}
        assert {p.rsplit("/", 1)[1] for p in gateway_may} <= {"CheckSession", "WatchSessions"}
        # Refusals are logged with method and caller: no request content.
        refusals = [r for r in caplog.records if "allow-list" in r.getMessage()]
        assert refusals and all(r.fields["caller"] in SERVICES for r in refusals)  # type: ignore[attr-defined]
    finally:
        for channel in channels.values():
            await channel.close()
        await server.stop(0)


# --------------------------------------------------------------------------- certificates


class _Echo(identity_pb2_grpc.IdentityServicer):
    """Answers CheckSession with who called and the serial of the certificate it presented."""

    async def CheckSession(self, request: Any, context: Any) -> Any:
        pem = context.auth_context()["x509_pem_cert"][0]
        serial = x509.load_pem_x509_certificate(pem).serial_number
        return identity_pb2.CheckSessionResponse(
            valid=True, reason=f"{caller_service(context)}:{serial}"
        )


async def _echo_server(port: int, auth: InternalAuth) -> GrpcServer:
    server = GrpcServer("127.0.0.1", port, auth)
    identity_pb2_grpc.add_IdentityServicer_to_server(_Echo(), server.server)
    server.allow(IDENTITY_CALLERS)
    await server.start()
    return server


async def _ask(channel: ServiceChannel) -> str:
    stub = identity_pb2_grpc.IdentityStub(channel.channel)
    reply = await stub.CheckSession(identity_pb2.CheckSessionRequest(), timeout=3)
    return str(reply.reason)


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="doorward-test-certs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_certificates_from_another_ca_expired_or_absent_are_refused(
    service_pki: ServicePki, scratch: Path
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    server = await _echo_server(port, service_pki.auth("identity"))
    rogue_ca = TestCA("Rogue CA")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    attempts = {
        # Same names, same shape, signed by another CA.
        "another CA": rogue_ca.install(scratch / "rogue", "gateway"),
        # The Doorward CA, but expired an hour ago.
        "expired": service_pki.ca.install(scratch / "old", "gateway", not_before=past, ttl=3600),
    }
    try:
        for why, folder in attempts.items():
            # A client trusting the Doorward CA (so only the server's check can refuse it).
            material = folder.load()
            CredentialFolder(scratch / why).write(
                material.key_pem, material.chain_pem, service_pki.ca.ca_pem
            )
            channel = _channel(target, InternalAuth("gateway", scratch / why), "identity")
            try:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await _ask(channel)
                assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, why
            finally:
                await channel.close()
        # No client certificate at all, and plain TCP.
        no_cert = grpc.ssl_channel_credentials(root_certificates=service_pki.ca.ca_pem)
        options = (("grpc.ssl_target_name_override", "identity.doorward.internal"),)
        for plain in (
            grpc.aio.secure_channel(target, no_cert, options=options),
            grpc.aio.insecure_channel(target),
        ):
            async with plain:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await identity_pb2_grpc.IdentityStub(plain).CheckSession(
                        identity_pb2.CheckSessionRequest(), timeout=3
                    )
                assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        # Honest: the gateway's own certificate.
        channel = _channel(target, service_pki.auth("gateway"), "identity")
        try:
            assert (await _ask(channel)).startswith("gateway:")
        finally:
            await channel.close()
    finally:
        await server.stop(0)


async def test_a_process_cannot_pose_as_another_server(
    service_pki: ServicePki, scratch: Path
) -> None:
    """workorders' valid certificate on identity's port: clients dialling identity refuse it."""
    port = free_port()
    impostor = await _echo_server(port, service_pki.auth("workorders"))
    channel = _channel(f"127.0.0.1:{port}", service_pki.auth("gateway"), "identity")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _ask(channel)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()
        await impostor.stop(0)


async def test_renewed_certificates_are_used_without_restarting(
    service_pki: ServicePki, scratch: Path
) -> None:
    """Server and client start with certificates that expire in seconds; both are renewed on
    disk while serving; once the old ones have expired, the same server and the same
    ServiceChannel object still talk, with the new certificate (its serial)."""
    ca = service_pki.ca
    server_folder = ca.install(scratch / "identity", "identity", ttl=4)
    client_folder = ca.install(scratch / "gateway", "gateway", ttl=4)
    port = free_port()
    server = await _echo_server(port, InternalAuth("identity", server_folder.path))
    channel = _channel(f"127.0.0.1:{port}", InternalAuth("gateway", client_folder.path), "identity")
    try:
        first = await _ask(channel)
        old_serial = x509.load_pem_x509_certificate(client_folder.load().chain_pem).serial_number
        assert first == f"gateway:{old_serial}"
        ca.install(server_folder.path, "identity", ttl=3600)
        ca.install(client_folder.path, "gateway", ttl=3600)
        new_serial = x509.load_pem_x509_certificate(client_folder.load().chain_pem).serial_number
        await asyncio.sleep(5.5)  # the first certificates have expired now
        assert await _ask(channel) == f"gateway:{new_serial}"
        # A brand-new connection handshakes with the server's renewed certificate too.
        fresh = _channel(
            f"127.0.0.1:{port}", InternalAuth("gateway", client_folder.path), "identity"
        )
        try:
            assert await _ask(fresh) == f"gateway:{new_serial}"
        finally:
            await fresh.close()
    finally:
        await channel.close()
        await server.stop(0)


async def test_openbao_pki_issues_and_renews_while_services_run(
    openbao: Any, scratch: Path
) -> None:
    """What `doorward up` does: the issuer AppRole issues every process a certificate from
    OpenBao's PKI engine and renews them at 2/3 of their life; servers and clients follow."""
    creds = provision_pki(openbao.client(), ["127.0.0.1"])
    folders = {svc: scratch / svc for svc in SERVICES}
    renewer = CertificateRenewer(CertificateIssuer(openbao.addr, creds, ["127.0.0.1"], 6), folders)
    due = renewer.issue_now()
    first = x509.load_pem_x509_certificate(CredentialFolder(folders["gateway"]).load().chain_pem)
    renewer.start(due)
    port = free_port()
    server = await _echo_server(port, InternalAuth("identity", folders["identity"]))
    channel = _channel(f"127.0.0.1:{port}", InternalAuth("gateway", folders["gateway"]), "identity")
    try:
        assert await _ask(channel) == f"gateway:{first.serial_number}"
        # Past the first certificates' end (OpenBao back-dates them 30 s, lifetime 6 s).
        await asyncio.sleep(max(first.not_valid_after_utc.timestamp() - _now(), 0) + 1.5)
        assert renewer.rounds >= 2
        served = await _ask(channel)
        assert served.startswith("gateway:") and served != f"gateway:{first.serial_number}"
        # The issuer may issue nothing but Doorward service certificates.
        issuer = hvac.Client(url=openbao.addr)
        issuer.auth.approle.login(creds.role_id, creds.secret_id)
        with pytest.raises(hvac.exceptions.InvalidRequest):
            issuer.secrets.pki.generate_certificate(
                "identity",
                "gateway.doorward.internal",
                extra_params={"uri_sans": "spiffe://doorward/gateway"},
                mount_point="doorward-pki",
            )
    finally:
        renewer.stop()
        await channel.close()
        await server.stop(0)


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


# --------------------------------------------------------------------------- insecure mode


async def test_plain_tcp_needs_the_development_flag_and_never_runs_in_production(
    scratch: Path,
) -> None:
    with pytest.raises(RuntimeError, match="DOORWARD_TLS_DIR"):
        InternalAuth.from_stack(StackSettings(), "identity")
    with pytest.raises(ValueError, match="DOORWARD_INSECURE_INTERNAL"):
        StackSettings(insecure_internal=True, env="production", internal_token="t")  # type: ignore[arg-type]
    dev = StackSettings(insecure_internal=True, internal_token="t")  # type: ignore[arg-type]
    assert InternalAuth.from_stack(dev, "identity").insecure
    assert not InternalAuth.from_stack(StackSettings(tls_dir=scratch), "identity").insecure


async def test_insecure_mode_still_applies_the_allow_lists(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "dev-token-" + uuid.uuid4().hex
    port = free_port()
    server = GrpcServer("127.0.0.1", port, InternalAuth("identity", None, token))
    identity_pb2_grpc.add_IdentityServicer_to_server(_Claimed(), server.server)
    server.allow(IDENTITY_CALLERS)
    await server.start()
    target = f"127.0.0.1:{port}"
    caplog.set_level(logging.WARNING, logger="doorward_kit.grpc")
    try:
        # Names are only claimed here (anyone with the token can claim any): the tables still
        # keep honest processes to their calls.
        gateway = _channel(target, InternalAuth("gateway", None, token), "identity")
        workorders = _channel(target, InternalAuth("workorders", None, token), "identity")
        try:
            for channel, users in ((gateway, "PERMISSION_DENIED"), (workorders, "OK")):
                stub = identity_pb2_grpc.IdentityStub(channel.channel)
                assert await _code(channel.call(stub.CheckSession, _CHECK)) is grpc.StatusCode.OK
                got = await _code(
                    stub.GetUsers(identity_pb2.GetUsersRequest(), metadata=channel.metadata())
                )
                assert got.name == users
        finally:
            await gateway.close()
            await workorders.close()
        wrong = _channel(target, InternalAuth("gateway", None, "a guess"), "identity")
        try:
            stub = identity_pb2_grpc.IdentityStub(wrong.channel)
            code = await _code(stub.CheckSession(_CHECK, metadata=wrong.metadata()))
            assert code is grpc.StatusCode.UNAUTHENTICATED
        finally:
            await wrong.close()
        assert token not in caplog.text and "a guess" not in caplog.text
    finally:
        await server.stop(0)


_CHECK = identity_pb2.CheckSessionRequest(user_id="u", org_id="o", session_id="s")


class _Claimed(identity_pb2_grpc.IdentityServicer):
    async def CheckSession(self, request: Any, context: Any) -> Any:
        return identity_pb2.CheckSessionResponse(valid=True, reason=str(caller_service(context)))

    async def GetUsers(self, request: Any, context: Any) -> Any:
        return identity_pb2.GetUsersResponse()
