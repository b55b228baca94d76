"""Upload tokens and rotation: single use, bound to the uploader, versions kept in KV v2."""

from __future__ import annotations

import uuid

import grpc
import pytest
from doorward.secrets.v1 import secrets_pb2

from doorward_kit.auth import Role
from tests.integration.secrets.conftest import SecretsHarness, error_code

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def _prepare(
    h: SecretsHarness, org_id: str, user_id: str, **kwargs
) -> secrets_pb2.UploadSlot:
    fields = {
        "site_id": str(uuid.uuid4()),
        "region_id": "region-1",
        "kind": "ALARM_CODE",
        "label": "Alarm panel",
    }
    fields.update(kwargs)
    token = h.token(user_id, org_id, (Role.DISPATCHER,))
    return await h.call("PrepareUpload", secrets_pb2.PrepareUploadRequest(**fields), token)


async def test_upload_token_is_single_use_and_bound_to_its_user(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    dispatcher = str(uuid.uuid4())
    token = h.token(dispatcher, org_id, (Role.DISPATCHER,))
    slot = await _prepare(h, org_id, dispatcher)
    assert slot.secret_ref.version == 0
    assert slot.upload_url.startswith(f"{h.base_url}/v1/uploads/")
    assert slot.secret_ref.id not in slot.upload_url  # slot ids, not secret ids, in URLs
    body = {"uploadToken": slot.upload_token, "value": "upload-canary"}

    other = await h.http.put(
        slot.upload_url,
        headers={"Authorization": f"Bearer {h.token(str(uuid.uuid4()), org_id)}"},
        json=body,
    )
    assert other.status_code == 403
    await h.audit.wait_for(org_id, "secret.upload.denied", reason="wrong_user")
    anonymous = await h.http.put(slot.upload_url, json=body)
    assert anonymous.status_code == 401
    tampered = await h.http.put(
        slot.upload_url,
        headers={"Authorization": f"Bearer {token}"},
        json={**body, "uploadToken": slot.upload_token[:-2] + "xx"},
    )
    assert tampered.status_code == 403

    first = await h.http.put(
        slot.upload_url, headers={"Authorization": f"Bearer {token}"}, json=body
    )
    assert first.status_code == 201
    assert first.headers["cache-control"] == "no-store"
    assert first.json() == {"secretRefId": slot.secret_ref.id, "version": 1}
    second = await h.http.put(
        slot.upload_url, headers={"Authorization": f"Bearer {token}"}, json=body
    )
    assert second.status_code == 410
    await h.audit.wait_for(org_id, "secret.upload.denied", reason="used")
    await h.audit.wait_for(org_id, "secret.upload")


async def test_rotation_writes_a_new_version_and_grants_name_theirs(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site_id = await h.new_secret(org_id, "version-one")
    job = await h.job(org_id, ref_id, site_id)
    old_grant = await h.grant(job, ref_id)
    assert old_grant.secret_ref.version == 1

    dispatcher = str(uuid.uuid4())
    slot = await _prepare(h, org_id, dispatcher, secret_ref_id=ref_id, kind="", label="")
    assert slot.secret_ref.id == ref_id
    assert slot.secret_ref.kind == "DOOR_CODE"
    response = await h.http.put(
        slot.upload_url,
        headers={"Authorization": f"Bearer {h.token(dispatcher, org_id, (Role.DISPATCHER,))}"},
        json={"uploadToken": slot.upload_token, "value": "version-two"},
    )
    assert response.status_code == 201
    assert response.json()["version"] == 2
    await h.audit.wait_for(org_id, "secret.rotate")

    new_grant = await h.grant(job, ref_id)
    assert new_grant.secret_ref.version == 2
    old = await h.reveal(old_grant, job.token)
    assert old.json()["value"] == "version-one"
    assert old.json()["version"] == 1
    new = await h.reveal(new_grant, job.token)
    assert new.json() == {**new.json(), "value": "version-two", "version": 2}

    refs = await h.call(
        "GetSecretRefs", secrets_pb2.GetSecretRefsRequest(org_id=org_id, secret_ref_ids=[ref_id])
    )
    assert refs.secret_refs[0].version == 2


async def test_concurrent_rotation_loses_cleanly(secrets_svc: SecretsHarness, org_id: str) -> None:
    h = secrets_svc
    ref_id, _ = await h.new_secret(org_id, "base")
    dispatcher = str(uuid.uuid4())
    auth = {"Authorization": f"Bearer {h.token(dispatcher, org_id, (Role.DISPATCHER,))}"}
    a = await _prepare(h, org_id, dispatcher, secret_ref_id=ref_id)
    b = await _prepare(h, org_id, dispatcher, secret_ref_id=ref_id)
    ok = await h.http.put(
        a.upload_url, headers=auth, json={"uploadToken": a.upload_token, "value": "a"}
    )
    assert ok.status_code == 201
    late = await h.http.put(
        b.upload_url, headers=auth, json={"uploadToken": b.upload_token, "value": "b"}
    )
    assert late.status_code == 409
    await h.audit.wait_for(org_id, "secret.upload.denied", reason="version_changed")


async def test_prepare_validates_input_and_never_grants_without_a_value(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    user = str(uuid.uuid4())
    for bad in (
        {"kind": "PASSWORD"},
        {"label": ""},
        {"site_id": "../../etc"},
        {"secret_ref_id": str(uuid.uuid4())},
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _prepare(h, org_id, user, **bad)
        assert refused.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    slot = await _prepare(h, org_id, user)
    job = await h.job(org_id, slot.secret_ref.id, slot.secret_ref.site_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.grant(job, slot.secret_ref.id)
    assert error_code(refused.value) == "CONFLICT"


async def test_deactivation_revokes_open_upload_slots(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    dispatcher = str(uuid.uuid4())
    slot = await _prepare(h, org_id, dispatcher)
    revoked = await h.call(
        "RevokeGrants",
        secrets_pb2.RevokeGrantsRequest(org_id=org_id, user_id=dispatcher, reason="deactivated"),
        caller="identity",  # only identity revokes by user (a deactivation)
    )
    assert revoked.revoked == 1
    response = await h.http.put(
        slot.upload_url,
        headers={"Authorization": f"Bearer {h.token(dispatcher, org_id, (Role.DISPATCHER,))}"},
        json={"uploadToken": slot.upload_token, "value": "never-stored"},
    )
    assert response.status_code == 410
    await h.audit.wait_for(org_id, "secret.upload.denied", reason="revoked")
