"""Issue 10, finding 7 (per-user limits): one user cannot stockpile grants or upload slots.

Before the fix, a user (or whoever holds their token) could ask for any number of grants and
upload slots. Now secrets keeps at most N unused grants and M unused upload slots per user and
refuses more than a set number of requests per minute, with RATE_LIMITED; other users are not
affected, and using (or losing) a grant frees its place.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from doorward.secrets.v1 import secrets_pb2

from doorward_kit.auth import Role
from tests.integration.secrets.conftest import SecretsHarness, error_code, running_secrets

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MAX_GRANTS = 3
GRANT_RATE = 8
MAX_UPLOADS = 2
UPLOAD_RATE = 6


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def limited(postgres: Any, openbao: Any) -> AsyncIterator[SecretsHarness]:
    async with running_secrets(
        db_url=postgres.fresh_database("secrets_limits"),
        vault_addr=openbao.addr,
        role_id=openbao.role_id,
        secret_id=openbao.secret_id,
        secrets_max_open_grants=MAX_GRANTS,
        secrets_grant_rate_limit=GRANT_RATE,
        secrets_max_open_uploads=MAX_UPLOADS,
        secrets_upload_rate_limit=UPLOAD_RATE,
    ) as harness:
        yield harness


async def _rate_limited(call: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_code(refused.value) == "RATE_LIMITED"


async def test_open_grants_per_user_are_capped(limited: SecretsHarness) -> None:
    h = limited
    org_id = str(uuid.uuid4())
    site_id = str(uuid.uuid4())
    refs = [(await h.new_secret(org_id, f"limit-{i}", site_id=site_id))[0] for i in range(5)]
    job = await h.job(org_id, refs[0], site_id)  # the job's site holds all five
    grants = [await h.grant(job, ref) for ref in refs[:MAX_GRANTS]]
    await _rate_limited(h.grant(job, refs[MAX_GRANTS]))
    denied = await h.audit.wait_for(org_id, "secret.access.denied", reason="too_many_grants")
    assert denied.actor_id == job.user_id

    # Another technician of the same org is not held back by this one's grants.
    colleague = await h.job(org_id, refs[4], site_id)
    assert (await h.grant(colleague, refs[4])).reveal_token

    # Using a grant frees its place.
    assert (await h.reveal(grants[0], job.token)).status_code == 200
    assert (await h.grant(job, refs[MAX_GRANTS])).reveal_token


async def test_grant_requests_per_minute_are_limited(limited: SecretsHarness) -> None:
    h = limited
    org_id = str(uuid.uuid4())
    job = await h.job(org_id, str(uuid.uuid4()), str(uuid.uuid4()))
    # Requests count even when refused (an unknown secret): probing is limited too.
    for _ in range(GRANT_RATE):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await h.grant(job, str(uuid.uuid4()))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    await _rate_limited(h.grant(job, str(uuid.uuid4())))

    # The honest use by someone else goes on.
    ref_id, site_id = await h.new_secret(org_id, "limit-honest")
    other = await h.job(org_id, ref_id, site_id)
    assert (await h.grant(other, ref_id)).reveal_token


async def test_open_upload_slots_per_user_are_capped(limited: SecretsHarness) -> None:
    h = limited
    org_id = str(uuid.uuid4())
    dispatcher = str(uuid.uuid4())
    token = h.token(dispatcher, org_id, (Role.DISPATCHER,))

    def request() -> secrets_pb2.PrepareUploadRequest:
        return secrets_pb2.PrepareUploadRequest(
            site_id=str(uuid.uuid4()), region_id="region-1", kind="GATE_CODE", label="Gate"
        )

    slots = [await h.call("PrepareUpload", request(), token) for _ in range(MAX_UPLOADS)]
    await _rate_limited(h.call("PrepareUpload", request(), token))
    # Another dispatcher is not affected.
    colleague = h.token(str(uuid.uuid4()), org_id, (Role.DISPATCHER,))
    assert (await h.call("PrepareUpload", request(), colleague)).upload_token
    # Using a slot frees its place.
    put = await h.http.put(
        slots[0].upload_url,
        headers={"Authorization": f"Bearer {token}"},
        json={"uploadToken": slots[0].upload_token, "value": "1357"},
    )
    assert put.status_code == 201
    assert (await h.call("PrepareUpload", request(), token)).upload_token


async def test_upload_slot_requests_per_minute_are_limited(limited: SecretsHarness) -> None:
    h = limited
    org_id = str(uuid.uuid4())
    token = h.token(str(uuid.uuid4()), org_id, (Role.DISPATCHER,))
    request = secrets_pb2.PrepareUploadRequest(
        site_id=str(uuid.uuid4()), region_id="region-1", kind="OTHER", label=""
    )
    for _ in range(UPLOAD_RATE):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await h.call("PrepareUpload", request, token)  # an empty label: refused
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await _rate_limited(h.call("PrepareUpload", request, token))
