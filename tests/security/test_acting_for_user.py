"""Issue 10, finding 3 (second half): a process's own credentials never stand for a user.

Before the fix, secrets' gRPC took org_id, user_id and break_glass from request fields: any
process holding the internal credential could mint a grant for any code and destroy any
customer key. Now every call that acts for a user carries that user's access token and secrets
takes the principal from the verified token only (signature, expiry, session epoch, scope,
organisation). Each attack below is shown failing, beside the honest call that still works.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from doorward.secrets.v1 import secrets_pb2

from doorward_kit.auth import Principal, Role
from doorward_kit.errors import unauthenticated
from tests.fixtures.tokens import TestTokenIssuer
from tests.integration.secrets.conftest import SecretsHarness, error_code, running_secrets

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


class DeactivationGuard:
    """Stands in for identity's session guard: the users in `dead` were deactivated."""

    def __init__(self) -> None:
        self.dead: set[str] = set()

    async def check(self, principal: Principal) -> None:
        if principal.user_id in self.dead:
            raise unauthenticated("this session has ended; log in again")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def guarded(
    postgres: Any, openbao: Any
) -> AsyncIterator[tuple[SecretsHarness, DeactivationGuard]]:
    guard = DeactivationGuard()
    async with running_secrets(
        db_url=postgres.fresh_database("secrets_acting"),
        vault_addr=openbao.addr,
        role_id=openbao.role_id,
        secret_id=openbao.secret_id,
        guard=guard,
    ) as harness:
        yield harness, guard


@pytest.fixture
def org_id() -> str:
    return str(uuid.uuid4())


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value


def _grants_for(h: SecretsHarness, org_id: str) -> list[Any]:
    return h.audit.of(org_id, "secret.access.grant") + h.audit.of(org_id, "secret.break_glass")


async def test_no_grant_on_a_process_credential_alone(
    guarded: tuple[SecretsHarness, DeactivationGuard], org_id: str
) -> None:
    h, _ = guarded
    ref_id, site_id = await h.new_secret(org_id, "acting-canary-1")
    job = await h.job(org_id, ref_id, site_id)
    # The internal credential, but no user token: who would the grant be for?
    error = await _refused(h.grant(job, ref_id, token=None))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # A token that is not identity's (another signing key), naming the assignee.
    forged = TestTokenIssuer().token(user_id=job.user_id, org_id=org_id)
    error = await _refused(h.grant(job, ref_id, token=forged))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # An expired token of the assignee.
    expired = h.issuer.token(user_id=job.user_id, org_id=org_id, lifetime=-60)
    error = await _refused(h.grant(job, ref_id, token=expired))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # The assignee's id in another organisation's token (the org comes from the token).
    other_org = h.token(job.user_id, str(uuid.uuid4()))
    error = await _refused(h.grant(job, ref_id, token=other_org))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # A restricted token (password change pending) of the assignee.
    restricted = h.issuer.token(user_id=job.user_id, org_id=org_id, scope="restricted")
    error = await _refused(h.grant(job, ref_id, token=restricted))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    # Another technician of the org, and a dispatcher: not the job's assignee.
    for roles in ((Role.TECHNICIAN,), (Role.DISPATCHER,), (Role.ADMIN,)):
        error = await _refused(
            h.grant(job, ref_id, token=h.token(str(uuid.uuid4()), org_id, roles))
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _grants_for(h, org_id) == []

    # The honest call: the assignee's own token.
    grant = await h.grant(job, ref_id, token=job.token)
    assert (await h.reveal(grant, job.token)).json()["value"] == "acting-canary-1"


async def test_a_deactivated_users_token_gets_nothing(
    guarded: tuple[SecretsHarness, DeactivationGuard], org_id: str
) -> None:
    h, guard = guarded
    ref_id, site_id = await h.new_secret(org_id, "acting-canary-2")
    job = await h.job(org_id, ref_id, site_id)
    guard.dead.add(job.user_id)
    error = await _refused(h.grant(job, ref_id))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _grants_for(h, org_id) == []

    dispatcher = str(uuid.uuid4())
    guard.dead.add(dispatcher)
    upload = secrets_pb2.PrepareUploadRequest(
        site_id=site_id, region_id="region-1", kind="DOOR_CODE", label="Side door"
    )
    token = h.token(dispatcher, org_id, (Role.DISPATCHER,))
    error = await _refused(h.call("PrepareUpload", upload, token))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    guard.dead.discard(dispatcher)
    assert (await h.call("PrepareUpload", upload, token)).upload_token


async def test_upload_slots_only_for_a_verified_uploader(
    guarded: tuple[SecretsHarness, DeactivationGuard], org_id: str
) -> None:
    h, _ = guarded
    upload = secrets_pb2.PrepareUploadRequest(
        site_id=str(uuid.uuid4()), region_id="region-1", kind="ALARM_CODE", label="Panel"
    )
    error = await _refused(h.call("PrepareUpload", upload))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # A technician may not upload; a dispatcher of another region may not either.
    technician = h.token(str(uuid.uuid4()), org_id, (Role.TECHNICIAN,))
    error = await _refused(h.call("PrepareUpload", upload, technician))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    elsewhere = h.issuer.token(
        user_id=str(uuid.uuid4()), org_id=org_id, roles=(Role.DISPATCHER,), regions=("region-9",)
    )
    error = await _refused(h.call("PrepareUpload", upload, elsewhere))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert h.audit.of(org_id, "secret.upload.prepare") == []

    # The slot is bound to the user of the token, whoever a caller would like it to be.
    dispatcher = str(uuid.uuid4())
    token = h.token(dispatcher, org_id, (Role.DISPATCHER,))
    slot = await h.call("PrepareUpload", upload, token)
    event = await h.audit.wait_for(org_id, "secret.upload.prepare")
    assert event.actor_id == dispatcher
    put = await h.http.put(
        slot.upload_url,
        headers={"Authorization": f"Bearer {token}"},
        json={"uploadToken": slot.upload_token, "value": "panel-1234"},
    )
    assert put.status_code == 201


async def test_no_customer_key_destroyed_without_an_admin_acting(
    guarded: tuple[SecretsHarness, DeactivationGuard], org_id: str
) -> None:
    h, guard = guarded
    customer = str(uuid.uuid4())
    key = await h.call(
        "CreateDataKey", secrets_pb2.CreateDataKeyRequest(org_id=org_id, customer_id=customer)
    )
    destroy = secrets_pb2.DestroyCustomerKeyRequest(customer_id=customer)

    async def still_there() -> bool:
        again = await h.call(
            "DecryptDataKey",
            secrets_pb2.DecryptDataKeyRequest(
                org_id=org_id, customer_id=customer, ciphertext=key.ciphertext
            ),
        )
        return bool(again.plaintext == key.plaintext)

    error = await _refused(h.call("DestroyCustomerKey", destroy))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    for roles in ((Role.DISPATCHER,), (Role.TECHNICIAN,), (Role.AUDITOR,)):
        error = await _refused(
            h.call("DestroyCustomerKey", destroy, h.token(str(uuid.uuid4()), org_id, roles))
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    forged = TestTokenIssuer().token(org_id=org_id, roles=(Role.ADMIN,))
    error = await _refused(h.call("DestroyCustomerKey", destroy, forged))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    retired = str(uuid.uuid4())
    guard.dead.add(retired)
    error = await _refused(
        h.call("DestroyCustomerKey", destroy, h.token(retired, org_id, (Role.ADMIN,)))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # Another organisation's ADMIN names this customer: only their own org's key is meant.
    await h.call(
        "DestroyCustomerKey", destroy, h.token(str(uuid.uuid4()), str(uuid.uuid4()), (Role.ADMIN,))
    )
    assert await still_there()
    assert h.audit.of(org_id, "customer.key.destroy") == []

    # Same for deleting a site's secrets (the other half of an erasure).
    ref_id, site_id = await h.new_secret(org_id, "acting-canary-3")
    delete = secrets_pb2.DeleteSiteSecretsRequest(site_id=site_id)
    error = await _refused(h.call("DeleteSiteSecrets", delete))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    dispatcher = h.token(str(uuid.uuid4()), org_id, (Role.DISPATCHER,))
    error = await _refused(h.call("DeleteSiteSecrets", delete, dispatcher))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    refs = await h.call(
        "GetSecretRefs", secrets_pb2.GetSecretRefsRequest(org_id=org_id, site_ids=[site_id])
    )
    assert [r.id for r in refs.secret_refs] == [ref_id]

    # The honest erasure: an ADMIN of the org acting for it.
    admin_id = str(uuid.uuid4())
    admin = h.token(admin_id, org_id, (Role.ADMIN,))
    assert (await h.call("DeleteSiteSecrets", delete, admin)).deleted == 1
    await h.call("DestroyCustomerKey", destroy, admin)
    gone = await _refused(
        h.call(
            "DecryptDataKey",
            secrets_pb2.DecryptDataKeyRequest(
                org_id=org_id, customer_id=customer, ciphertext=key.ciphertext
            ),
        )
    )
    assert error_code(gone) == "NOT_FOUND"
    event = await h.audit.wait_for(org_id, "customer.key.destroy")
    assert event.actor_id == admin_id
