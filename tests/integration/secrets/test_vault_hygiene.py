"""Vault hygiene: nothing left behind by expired or revoked grants; a sealed, unreachable or
forgetful Vault gives UNAVAILABLE with a clear message and the service recovers by itself."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import hvac
import hvac.exceptions
import pytest
from sqlalchemy import select, update

from deploy.embedded import EmbeddedOpenBao, free_port_pair, provision_vault
from doorward_kit.net import free_port
from services.secrets.models import Grant
from tests.integration.secrets.conftest import SecretsHarness, error_code, running_secrets

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _accessor_alive(root: hvac.Client, accessor: str) -> bool:
    try:
        root.adapter.post("/v1/auth/token/lookup-accessor", json={"accessor": accessor})
    except hvac.exceptions.InvalidRequest:
        return False
    return True


async def _accessors(h: SecretsHarness, grant_ids: list[str]) -> dict[str, tuple[str, bool]]:
    async with h.service.db.unit_of_work() as session:
        rows = (
            await session.execute(
                select(Grant.id, Grant.wrap_accessor, Grant.vault_clean).where(
                    Grant.id.in_(grant_ids)
                )
            )
        ).all()
    return {r[0]: (r[1], r[2]) for r in rows}


async def test_expired_grants_leave_no_tokens_in_vault(
    secrets_svc: SecretsHarness, org_id: str, openbao
) -> None:
    h = secrets_svc
    root = openbao.client()
    ref_id, site_id = await h.new_secret(org_id, "sweep-canary")
    job = await h.job(org_id, ref_id, site_id)
    end = datetime.now(UTC) + timedelta(seconds=2)
    grants = [await h.grant(job, ref_id, window_end=end) for _ in range(5)]
    ids = [g.id for g in grants]
    before = await _accessors(h, ids)
    assert all(_accessor_alive(root, accessor) for accessor, _ in before.values())
    await asyncio.sleep(2.5)
    for _ in range(100):  # the sweeper runs every 0.5 s in tests
        state = await _accessors(h, ids)
        if all(clean for _, clean in state.values()):
            break
        await asyncio.sleep(0.1)
    assert all(clean for _, clean in state.values())
    assert not any(_accessor_alive(root, accessor) for accessor, _ in state.values())


async def test_sweeper_finishes_revocations_vault_missed(
    secrets_svc: SecretsHarness, org_id: str, openbao
) -> None:
    """A grant revoked in the database while Vault was unreachable: the sweeper revokes it."""
    h = secrets_svc
    root = openbao.client()
    ref_id, site_id = await h.new_secret(org_id, "missed-canary")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)
    async with h.service.db.unit_of_work() as session:
        await session.execute(
            update(Grant)
            .where(Grant.id == grant.id)
            .values(revoked_at=datetime.now(UTC), revoke_reason="test")
        )
    accessor = (await _accessors(h, [grant.id]))[grant.id][0]
    for _ in range(100):
        if (await _accessors(h, [grant.id]))[grant.id][1]:
            break
        await asyncio.sleep(0.1)
    assert not _accessor_alive(root, accessor)
    assert (await h.reveal(grant, job.token)).status_code == 410


class Proxy:
    """A TCP relay in front of Vault that the test can cut and restore (same port)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
async def proxied(postgres, openbao) -> AsyncIterator[tuple[SecretsHarness, Proxy]]:
    host, port = openbao.addr.removeprefix("http://").split(":")
    proxy = Proxy(host, int(port))
    await proxy.start()
    try:
        async with running_secrets(
            db_url=postgres.fresh_database("secrets_proxy"),
            vault_addr=f"http://127.0.0.1:{proxy.port}",
            role_id=openbao.role_id,
            secret_id=openbao.secret_id,
            vault_timeout=1.0,
        ) as harness:
            yield harness, proxy
    finally:
        await proxy.stop()


async def test_unreachable_vault_is_unavailable_then_recovers(
    proxied: tuple[SecretsHarness, Proxy], org_id: str
) -> None:
    h, proxy = proxied
    ref_id, site_id = await h.new_secret(org_id, "proxy-canary")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)

    await proxy.stop()
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await h.grant(job, ref_id)
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert down.value.details() == "the vault is sealed or unreachable"
    response = await h.reveal(grant, job.token)
    assert response.status_code == 503
    assert response.json()["error"]["message"] == "the vault is sealed or unreachable"
    assert (await h.http.get(f"{h.base_url}/readyz")).status_code == 503

    # Vault was unreachable before the audit step: no ALLOWED event, nothing burnt.
    assert h.audit.of(org_id, "secret.reveal") == []

    await proxy.start()
    ok = await h.reveal(grant, job.token)
    assert ok.status_code == 200, ok.text
    assert ok.json()["value"] == "proxy-canary"
    assert (await h.grant(job, ref_id)).id
    assert (await h.http.get(f"{h.base_url}/readyz")).status_code == 200
    assert len(h.audit.of(org_id, "secret.reveal")) == 1


@pytest.fixture
async def own_bao(postgres) -> AsyncIterator[tuple[SecretsHarness, EmbeddedOpenBao]]:
    """A private dev OpenBao (this test seals it), stopped by its PID in the finalizer."""
    root_dir = Path(tempfile.mkdtemp(prefix="doorward-test-bao-seal-"))
    server = EmbeddedOpenBao(root_dir, free_port_pair(), dev=True)
    try:
        server.start()
        creds = provision_vault(server.client())
        async with running_secrets(
            db_url=postgres.fresh_database("secrets_seal"),
            vault_addr=server.addr,
            role_id=creds.role_id,
            secret_id=creds.secret_id,
        ) as harness:
            yield harness, server
    finally:
        server.stop()
        shutil.rmtree(root_dir, ignore_errors=True)


async def test_sealed_vault_is_unavailable_and_lost_tokens_are_replaced(
    own_bao: tuple[SecretsHarness, EmbeddedOpenBao], org_id: str
) -> None:
    h, server = own_bao
    root = server.client()
    ref_id, site_id = await h.new_secret(org_id, "seal-canary")
    job = await h.job(org_id, ref_id, site_id)

    root.sys.seal()
    with pytest.raises(grpc.aio.AioRpcError) as sealed:
        await h.grant(job, ref_id)
    assert sealed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_code(sealed.value) == "UNAVAILABLE"
    assert sealed.value.details() == "the vault is sealed or unreachable"

    match = re.search(r"Unseal Key: (\S+)", server.log_path.read_text())
    assert match is not None
    root.sys.submit_unseal_key(match.group(1))
    grant = await h.grant(job, ref_id)
    assert (await h.reveal(grant, job.token)).json()["value"] == "seal-canary"

    # Vault forgets the service's token (revoked, expired): the next call logs in again.
    for accessor in root.adapter.list("/v1/auth/token/accessors")["data"]["keys"]:
        info = root.adapter.post("/v1/auth/token/lookup-accessor", json={"accessor": accessor})
        if "doorward-secrets" in (info["data"].get("policies") or []):
            root.adapter.post("/v1/auth/token/revoke-accessor", json={"accessor": accessor})
    grant = await h.grant(job, ref_id)
    assert (await h.reveal(grant, job.token)).json()["value"] == "seal-canary"
    await h.service.vault.renew_once()


async def test_token_renewal_keeps_the_service_logged_in(
    secrets_svc: SecretsHarness,
) -> None:
    lease = await secrets_svc.service.vault.renew_once()
    assert lease > 0


async def test_a_doorward_bug_cannot_stretch_a_grant(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    """Simulate a bug: the database says the grant is good for another day after Vault's wrap
    TTL has ended. Vault refuses the unwrap; the value does not come out."""
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "stretch-canary")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id, window_end=datetime.now(UTC) + timedelta(seconds=2))
    await asyncio.sleep(2.5)
    async with h.service.db.unit_of_work() as session:
        await session.execute(
            update(Grant)
            .where(Grant.id == grant.id)
            .values(expires_at=datetime.now(UTC) + timedelta(days=1), vault_clean=False)
        )
    response = await h.reveal(grant, job.token)
    assert response.status_code == 410
    assert "stretch-canary" not in response.text
    # The ALLOWED record came first (audit before unwrap), then Vault said no: an ERROR event
    # and a refusal follow, so the trail tells the whole story.
    await h.audit.wait_for(org_id, "secret.reveal")
    await h.audit.wait_for(org_id, "secret.reveal", reason="vault_refused")
    await h.audit.wait_for(org_id, "secret.reveal.denied", reason="vault_refused")


async def test_the_service_token_cannot_read_values_unwrapped(openbao) -> None:
    """The policy itself: an AppRole token of the service reading KV without wrapping, or with
    a wrap TTL over an hour, is refused by Vault."""
    client = hvac.Client(url=openbao.addr)
    client.auth.approle.login(openbao.role_id, openbao.secret_id)
    root = openbao.client()
    root.secrets.kv.v2.create_or_update_secret(
        "orgs/policy-test/secrets/x", {"value": "v"}, mount_point="doorward-kv"
    )
    with pytest.raises(hvac.exceptions.Forbidden):
        client.adapter.get("/v1/doorward-kv/data/orgs/policy-test/secrets/x")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.adapter.get("/v1/doorward-kv/data/orgs/policy-test/secrets/x", wrap_ttl="2h")
    wrapped = client.adapter.get("/v1/doorward-kv/data/orgs/policy-test/secrets/x", wrap_ttl="60s")
    assert wrapped["wrap_info"]["ttl"] == 60
    for path in ("/v1/doorward-kv/data/other/x", "/v1/sys/policies/acl/doorward-secrets"):
        with pytest.raises(hvac.exceptions.Forbidden):
            client.adapter.get(path, wrap_ttl="60s")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.adapter.post("/v1/auth/token/create", json={})
    client.logout(revoke_token=True)
