"""Reveal rules of the contract, from both sides, through the real gRPC + REST on real OpenBao."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import hvac.exceptions
import pytest
from doorward.secrets.v1 import secrets_pb2

from tests.integration.secrets.conftest import SecretsHarness, error_code

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_assignee_reveals_once_in_window(secrets_svc: SecretsHarness, org_id: str) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "4711-door")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)
    assert grant.reveal_url == f"{h.base_url}/v1/reveals/{grant.id}"
    assert grant.secret_ref.version == 1

    response = await h.reveal(grant, job.token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "secretRefId": ref_id,
        "kind": "DOOR_CODE",
        "label": "Back door",
        "version": 1,
        "value": "4711-door",
    }
    # Synchronous: the ALLOWED event was on the trail before the response left.
    allowed = h.audit.of(org_id, "secret.reveal")
    assert len(allowed) == 1
    assert allowed[0].actor_id == job.user_id
    assert allowed[0].work_order_id == job.work_order_id
    assert allowed[0].details["grant_id"] == grant.id

    again = await h.reveal(grant, job.token)
    assert again.status_code == 410
    assert again.headers["cache-control"] == "no-store"
    assert "4711-door" not in again.text
    await h.audit.wait_for(org_id, "secret.reveal.denied", reason="used")


async def test_another_users_token_is_refused_and_does_not_burn_the_grant(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "other-user-canary")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)

    intruder = h.token(str(uuid.uuid4()), org_id)
    refused = await h.reveal(grant, intruder)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "FORBIDDEN"
    assert "other-user-canary" not in refused.text
    await h.audit.wait_for(org_id, "secret.reveal.denied", reason="wrong_user")

    # Another organisation's user does not even learn that the grant exists.
    foreign = await h.reveal(grant, h.token(job.user_id, str(uuid.uuid4())))
    assert foreign.status_code == 404

    # No access token at all: 401 (and still no value).
    anonymous = await h.reveal(grant, None)
    assert anonymous.status_code == 401
    assert anonymous.headers["cache-control"] == "no-store"

    # The rightful user still gets it: refusals burnt nothing.
    ok = await h.reveal(grant, job.token)
    assert ok.status_code == 200
    assert ok.json()["value"] == "other-user-canary"


async def test_tampered_or_foreign_reveal_token_is_refused(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "tamper-canary")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)
    other = await h.grant(job, ref_id)

    tampered = grant.reveal_token[:-3] + (
        "AAA" if not grant.reveal_token.endswith("AAA") else "BBB"
    )
    for token in (tampered, other.reveal_token, "dwr_", "not-a-token"):
        response = await h.reveal(grant, job.token, token)
        assert response.status_code == 403, token
        assert "tamper-canary" not in response.text
    await h.audit.wait_for(org_id, "secret.reveal.denied", reason="invalid_token")

    assert (await h.reveal(grant, job.token)).status_code == 200
    assert (await h.reveal(other, job.token)).status_code == 200


async def test_expired_grant_is_gone_in_doorward_and_in_vault(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "expiry-canary")
    job = await h.job(org_id, ref_id, site_id)
    # The window closes in 2 s: the grant cannot outlive it.
    grant = await h.grant(job, ref_id, window_end=datetime.now(UTC) + timedelta(seconds=2))
    expires = grant.expires_at.ToDatetime(tzinfo=UTC)
    assert expires <= datetime.now(UTC) + timedelta(seconds=2)
    await asyncio.sleep(2.2)
    response = await h.reveal(grant, job.token)
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "GONE"
    await h.audit.wait_for(org_id, "secret.reveal.denied", reason="expired")


async def test_outside_the_window_no_grant_is_issued(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "window-canary")
    now = datetime.now(UTC)
    # Tomorrow's job: the window (start - 15 min lead) has not opened.
    later = await h.job(
        org_id, ref_id, site_id, start=now + timedelta(days=1), end=now + timedelta(days=1, hours=1)
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.grant(later, ref_id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_code(refused.value) == "OUTSIDE_ACCESS_WINDOW"
    await h.audit.wait_for(org_id, "secret.access.denied", reason="outside_window")

    # Yesterday's job, grace time over.
    earlier = await h.job(
        org_id, ref_id, site_id, start=now - timedelta(days=1), end=now - timedelta(hours=23)
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.grant(earlier, ref_id)
    assert error_code(refused.value) == "OUTSIDE_ACCESS_WINDOW"

    # A caller's window wider than the job's own does not widen it (secrets re-checks).
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.grant(
            later, ref_id, window_start=now - timedelta(hours=1), window_end=now + timedelta(days=2)
        )
    assert error_code(refused.value) == "OUTSIDE_ACCESS_WINDOW"

    # Inside the window (lead time counts): allowed.
    soon = await h.job(
        org_id, ref_id, site_id, start=now + timedelta(minutes=10), end=now + timedelta(hours=1)
    )
    grant = await h.grant(soon, ref_id)
    assert grant.expires_at.ToDatetime(tzinfo=UTC) <= now + timedelta(minutes=16)


async def test_before_dispatch_and_for_someone_else_no_grant(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "dispatch-canary")
    scheduled = await h.job(org_id, ref_id, site_id, status="SCHEDULED")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.grant(scheduled, ref_id)
    assert error_code(refused.value) == "OUTSIDE_ACCESS_WINDOW"
    await h.audit.wait_for(org_id, "secret.access.denied", reason="status_scheduled")

    job = await h.job(org_id, ref_id, site_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.grant(job, ref_id, token=h.token(str(uuid.uuid4()), org_id))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await h.audit.wait_for(org_id, "secret.access.denied", reason="not_assignee")

    # A secret of another site, not attached to the job.
    other_ref, _ = await h.new_secret(org_id, "elsewhere")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.grant(job, other_ref)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # Unknown secret: NOT_FOUND; the job's assignee in DISPATCHED: allowed.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.grant(job, str(uuid.uuid4()))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await h.grant(job, ref_id)).id


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("work_order_id", "completed"),
        ("work_order_id", "reassigned"),
        ("user_id", "deactivated"),
        ("site_id", "site_changed"),
    ],
)
async def test_revocation_invalidates_doorward_and_vault_tokens(
    secrets_svc: SecretsHarness, org_id: str, target: str, reason: str, openbao
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, f"revoke-canary-{reason}")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)
    accessor = await _accessor(h, grant.id)
    root = openbao.client()
    # Before: Vault holds the single-use wrapping token.
    root.adapter.post("/v1/auth/token/lookup-accessor", json={"accessor": accessor})
    value = {"work_order_id": job.work_order_id, "user_id": job.user_id, "site_id": site_id}[target]
    answer = await h.call(
        "RevokeGrants",
        secrets_pb2.RevokeGrantsRequest(org_id=org_id, reason=reason, **{target: value}),
        caller="identity" if target == "user_id" else "workorders",  # who revokes by what
    )
    assert answer.revoked == 1
    response = await h.reveal(grant, job.token)
    assert response.status_code == 410
    assert "revoke-canary" not in response.text
    await h.audit.wait_for(org_id, "secret.grant.revoke", reason=reason)
    await h.audit.wait_for(org_id, "secret.reveal.denied", reason="revoked")
    # Vault-side: the wrapping token is gone, not just refused by Doorward.
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.adapter.post("/v1/auth/token/lookup-accessor", json={"accessor": accessor})

    # Another org's revocation call touches nothing here.
    job2 = await h.job(org_id, ref_id, site_id)
    grant2 = await h.grant(job2, ref_id)
    other = await h.call(
        "RevokeGrants",
        secrets_pb2.RevokeGrantsRequest(
            org_id=str(uuid.uuid4()), reason=reason, work_order_id=job2.work_order_id
        ),
    )
    assert other.revoked == 0
    assert (await h.reveal(grant2, job2.token)).status_code == 200


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": "COMPLETED"}, "status_completed"),
        ({"status": "CANCELLED"}, "status_cancelled"),
        ({"assignee": True}, "not_assignee"),
    ],
)
async def test_reveal_rechecks_the_job_even_without_a_revocation_call(
    secrets_svc: SecretsHarness, org_id: str, change: dict, reason: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "recheck-canary")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)
    context = job.context
    if "status" in change:
        context.status = change["status"]
    else:
        context.assignee_id = str(uuid.uuid4())
    response = await h.reveal(grant, job.token)
    assert response.status_code == 410
    assert "recheck-canary" not in response.text
    await h.audit.wait_for(org_id, "secret.reveal.denied", reason=reason)
    # And it stays revoked even if the job comes back.
    h.workorders.put(
        org_id=org_id,
        work_order_id=job.work_order_id,
        site_id=site_id,
        assignee_id=job.user_id,
        secret_ref_ids=(ref_id,),
    )
    assert (await h.reveal(grant, job.token)).status_code == 410


async def test_audit_down_means_no_value_and_no_burnt_grant(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "audit-down-canary")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)
    await h.audit.wait_for(org_id, "secret.access.grant")
    h.audit.fail = True
    try:
        response = await h.reveal(grant, job.token)
    finally:
        h.audit.fail = False
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "UNAVAILABLE"
    assert "audit-down-canary" not in response.text
    assert not h.audit.of(org_id, "secret.reveal")

    ok = await h.reveal(grant, job.token)
    assert ok.status_code == 200
    assert ok.json()["value"] == "audit-down-canary"
    assert len(h.audit.of(org_id, "secret.reveal")) == 1


async def test_break_glass_is_audited_and_alerted(secrets_svc: SecretsHarness, org_id: str) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "break-glass-canary")
    job = await h.job(org_id, ref_id, site_id)
    admin = str(uuid.uuid4())
    reason = "technician locked out, fire alarm"
    admin_token, approval = h.break_glass(job, ref_id, admin, reason)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.grant(job, ref_id, token=admin_token, break_glass=approval)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    grant = await h.grant(job, ref_id, token=admin_token, break_glass=approval, reason=reason)
    await h.audit.wait_for(org_id, "secret.break_glass")
    alert = await h.audit.wait_for(org_id, "security.alert", reason="break_glass")
    assert alert.details["grant_id"] == grant.id
    assert "fire alarm" not in str(h.audit.of(org_id))

    # Only the admin it was issued to may use it; the assignee's token does not.
    assert (await h.reveal(grant, job.token)).status_code == 403
    ok = await h.reveal(grant, admin_token)
    assert ok.status_code == 200
    reveal = h.audit.of(org_id, "secret.reveal")[0]
    assert reveal.details["mode"] == "break_glass"


async def test_rate_limit_per_user(secrets_svc: SecretsHarness, org_id: str) -> None:
    from tests.integration.secrets.conftest import RATE_LIMIT

    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "rate-canary")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)
    statuses = [
        (await h.reveal(grant, job.token, "dwr_wrong")).status_code for _ in range(RATE_LIMIT + 1)
    ]
    assert statuses[:RATE_LIMIT] == [403] * RATE_LIMIT
    assert statuses[-1] == 429
    # Another user is not throttled by it.
    other = h.token(str(uuid.uuid4()), org_id)
    assert (await h.reveal(grant, other)).status_code == 403


async def test_malformed_body_is_422_and_never_echoed(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "body-canary")
    job = await h.job(org_id, ref_id, site_id)
    grant = await h.grant(job, ref_id)
    headers = {"Authorization": f"Bearer {job.token}"}
    for body in (b"{not json SECRETBODY", b'["SECRETBODY"]', b'{"revealToken": 12345678}'):
        response = await h.http.post(grant.reveal_url, headers=headers, content=body)
        assert response.status_code == 422
        assert response.headers["cache-control"] == "no-store"
        assert "SECRETBODY" not in response.text
        assert "12345678" not in response.text
    assert (await h.reveal(grant, job.token)).status_code == 200


async def _accessor(h: SecretsHarness, grant_id: str) -> str:
    from services.secrets.models import Grant

    async with h.service.db.unit_of_work() as session:
        grant = await session.get(Grant, grant_id)
        assert grant is not None
        return grant.wrap_accessor


async def test_junk_grant_ids_are_404_and_audited_without_them(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    token = h.token(str(uuid.uuid4()), org_id)
    for junk in ("01701234567", "x" * 70, "%2e%2e"):
        response = await h.http.post(
            f"{h.base_url}/v1/reveals/{junk}",
            headers={"Authorization": f"Bearer {token}"},
            json={"revealToken": "dwr_x"},
        )
        assert response.status_code == 404
        assert junk not in response.text
    event = await h.audit.wait_for(org_id, "secret.reveal.denied", reason="not_found")
    assert event.target_id == ""
