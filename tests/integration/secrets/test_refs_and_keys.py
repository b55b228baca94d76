"""Secret metadata (GetSecretRefs, DeleteSiteSecrets) and customer data keys (transit)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from doorward.secrets.v1 import secrets_pb2, secrets_pb2_grpc

from doorward_kit.auth import Role
from tests.integration.secrets.conftest import SecretsHarness

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_get_secret_refs_is_batched_and_per_org(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    site = str(uuid.uuid4())
    a, _ = await h.new_secret(org_id, "a", site_id=site)
    b, _ = await h.new_secret(org_id, "b", site_id=site)
    c, other_site = await h.new_secret(org_id, "c")
    by_site = await h.call(
        "GetSecretRefs", secrets_pb2.GetSecretRefsRequest(org_id=org_id, site_ids=[site])
    )
    assert {r.id for r in by_site.secret_refs} == {a, b}
    assert all(
        r.site_id == site and r.version == 1 and r.label == "Back door" for r in by_site.secret_refs
    )
    by_id = await h.call(
        "GetSecretRefs",
        secrets_pb2.GetSecretRefsRequest(
            org_id=org_id, secret_ref_ids=[a, c], site_ids=[other_site]
        ),
    )
    assert {r.id for r in by_id.secret_refs} == {a, c}
    foreign = await h.call(
        "GetSecretRefs",
        secrets_pb2.GetSecretRefsRequest(
            org_id=str(uuid.uuid4()), secret_ref_ids=[a, b, c], site_ids=[site]
        ),
    )
    assert list(foreign.secret_refs) == []


async def test_delete_site_secrets_destroys_every_version(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    ref_id, site = await h.new_secret(org_id, "doomed")
    job = await h.job(org_id, ref_id, site)
    grant = await h.grant(job, ref_id)
    admin = h.token(str(uuid.uuid4()), org_id, (Role.ADMIN,))
    deleted = await h.call(
        "DeleteSiteSecrets", secrets_pb2.DeleteSiteSecretsRequest(site_id=site), admin
    )
    assert deleted.deleted == 1
    assert (await h.reveal(grant, job.token)).status_code == 410
    refs = await h.call(
        "GetSecretRefs", secrets_pb2.GetSecretRefsRequest(org_id=org_id, site_ids=[site])
    )
    assert list(refs.secret_refs) == []
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.grant(job, ref_id)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    await h.audit.wait_for(org_id, "secret.delete")


async def test_data_keys_round_trip_and_crypto_shredding(
    secrets_svc: SecretsHarness, org_id: str
) -> None:
    h = secrets_svc
    customer = str(uuid.uuid4())
    key = await h.call(
        "CreateDataKey", secrets_pb2.CreateDataKeyRequest(org_id=org_id, customer_id=customer)
    )
    assert len(key.plaintext) == 32
    assert key.ciphertext.startswith(b"vault:v1:")
    again = await h.call(
        "DecryptDataKey",
        secrets_pb2.DecryptDataKeyRequest(
            org_id=org_id, customer_id=customer, ciphertext=key.ciphertext
        ),
    )
    assert again.plaintext == key.plaintext
    assert again.key_version == 1
    second = await h.call(
        "CreateDataKey", secrets_pb2.CreateDataKeyRequest(org_id=org_id, customer_id=customer)
    )
    assert second.plaintext != key.plaintext

    # Same customer id in another org: another key, cannot open this one's data.
    with pytest.raises(grpc.aio.AioRpcError):
        await h.call(
            "DecryptDataKey",
            secrets_pb2.DecryptDataKeyRequest(
                org_id=str(uuid.uuid4()), customer_id=customer, ciphertext=key.ciphertext
            ),
        )

    await h.call(
        "DestroyCustomerKey",
        secrets_pb2.DestroyCustomerKeyRequest(customer_id=customer),
        h.token(str(uuid.uuid4()), org_id, (Role.ADMIN,)),
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await h.call(
            "DecryptDataKey",
            secrets_pb2.DecryptDataKeyRequest(
                org_id=org_id, customer_id=customer, ciphertext=key.ciphertext
            ),
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    # Idempotent.
    await h.call(
        "DestroyCustomerKey",
        secrets_pb2.DestroyCustomerKeyRequest(customer_id=customer),
        h.token(str(uuid.uuid4()), org_id, (Role.ADMIN,)),
    )
    await h.audit.wait_for(org_id, "customer.key.destroy")


async def test_a_service_certificate_is_required(secrets_svc: SecretsHarness, org_id: str) -> None:
    h = secrets_svc
    async with grpc.aio.insecure_channel(h.target) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await secrets_pb2_grpc.SecretsStub(plain).CreateDataKey(
                secrets_pb2.CreateDataKeyRequest(org_id=org_id, customer_id="c"),
                metadata=(("x-doorward-internal", "a guess"),),
                timeout=2,
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # no TLS handshake at all
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await h.call(
            "CreateDataKey",
            secrets_pb2.CreateDataKeyRequest(org_id=org_id, customer_id="c"),
            caller="audit",
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
