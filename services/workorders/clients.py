"""gRPC adapters for the services work orders calls: secrets (refs, upload slots, grants, data
keys) and identity (user facts). The bearer token of the user we act for is propagated."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from doorward.audit.v1 import audit_pb2, audit_pb2_grpc
from doorward.identity.v1 import identity_pb2, identity_pb2_grpc
from doorward.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from doorward.traces.v1 import traces_pb2, traces_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from doorward_kit.grpc import ServiceChannel
from services.workorders.crypto import DataKey
from services.workorders.ports import (
    BreakGlassProof,
    GrantView,
    SecretRefView,
    UploadSlotView,
    UserFacts,
)


def _time(message: object, name: str) -> datetime | None:
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    value: datetime = getattr(message, name).ToDatetime(tzinfo=UTC)
    return value


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def ref_from_proto(ref: secrets_pb2.SecretRef) -> SecretRefView:
    return SecretRefView(
        id=ref.id,
        site_id=ref.site_id,
        region_id=ref.region_id,
        kind=ref.kind,
        label=ref.label,
        version=ref.version,
        updated_at=_time(ref, "updated_at"),
    )


class GrpcAuditPruner:
    """Asks audit to prune an organisation's trail past its retention (the purge's last step)."""

    def __init__(self, channel: ServiceChannel) -> None:
        self._channel = channel
        self._stub = audit_pb2_grpc.AuditStub(channel.channel)

    async def prune(self, org_id: str, before: datetime, held_ids: Sequence[str] = ()) -> int:
        reply = await self._channel.call(
            self._stub.PruneEvents,
            audit_pb2.PruneEventsRequest(org_id=org_id, before=_ts(before), held_ids=held_ids),
            deadline=300.0,
            what="audit",
        )
        return int(reply.deleted)


class GrpcTraceStore:
    """Hands an organisation's traceDays to the embedded trace store (the purge; our own
    certificate, no user token). Answers the days the store actually keeps."""

    def __init__(self, channel: ServiceChannel) -> None:
        self._channel = channel
        self._stub = traces_pb2_grpc.TracesStub(channel.channel)

    async def set_org_retention(self, org_id: str, days: int) -> float:
        reply = await self._channel.call(
            self._stub.SetOrgRetention,
            traces_pb2.SetOrgRetentionRequest(org_id=org_id, days=days),
            what="the trace store",
        )
        return float(reply.effective_days)


class GrpcSecrets:
    def __init__(self, channel: ServiceChannel) -> None:
        self._channel = channel
        self._stub = secrets_pb2_grpc.SecretsStub(channel.channel)

    async def retire_site_secrets(
        self, org_id: str, before: datetime, site_ids: Collection[str]
    ) -> int:
        """Site secrets' retention (the purge; our own certificate, no user token)."""
        reply = await self._channel.call(
            self._stub.RetireSiteSecrets,
            secrets_pb2.RetireSiteSecretsRequest(
                org_id=org_id, before=_ts(before), site_ids=list(site_ids)
            ),
            deadline=300.0,
            what="secrets",
        )
        return int(reply.destroyed)

    async def shred_retained_customers(
        self, org_id: str, before: datetime, customer_ids: Collection[str]
    ) -> list[str]:
        """Contact data's retention (the purge; our own certificate, no user token): the
        customers' keys crypto-shredded with a shred-ledger entry; the ids whose key is gone."""
        reply = await self._channel.call(
            self._stub.ShredRetainedCustomers,
            secrets_pb2.ShredRetainedCustomersRequest(
                org_id=org_id, before=_ts(before), customer_ids=list(customer_ids)
            ),
            deadline=120.0,
            what="secrets",
        )
        return list(reply.shredded_customer_ids)

    async def prune_grants(
        self,
        org_id: str,
        before: datetime,
        held_site_ids: Collection[str],
        held_work_order_ids: Collection[str],
    ) -> int:
        """The grant registry's retention (the purge; our own certificate, no user token)."""
        reply = await self._channel.call(
            self._stub.PruneGrants,
            secrets_pb2.PruneGrantsRequest(
                org_id=org_id,
                before=_ts(before),
                held_site_ids=list(held_site_ids),
                held_work_order_ids=list(held_work_order_ids),
            ),
            deadline=300.0,
            what="secrets",
        )
        return int(reply.deleted)

    async def prepare_upload(
        self,
        *,
        site_id: str,
        region_id: str,
        kind: str,
        label: str,
        secret_ref_id: str,
        bearer: str,
    ) -> UploadSlotView:
        slot = await self._channel.call(
            self._stub.PrepareUpload,
            secrets_pb2.PrepareUploadRequest(
                site_id=site_id,
                region_id=region_id,
                kind=kind,
                label=label,
                secret_ref_id=secret_ref_id,
            ),
            bearer_token=bearer,
            what="secrets",
        )
        return UploadSlotView(
            secret_ref=ref_from_proto(slot.secret_ref),
            upload_url=slot.upload_url,
            upload_token=slot.upload_token,
            expires_at=_time(slot, "expires_at"),
        )

    async def issue_grant(
        self,
        *,
        work_order_id: str,
        secret_ref_id: str,
        window_start: datetime | None,
        window_end: datetime | None,
        break_glass: BreakGlassProof | None,
        reason: str,
        bearer: str,
    ) -> GrantView:
        request = secrets_pb2.IssueGrantRequest(
            work_order_id=work_order_id, secret_ref_id=secret_ref_id, reason=reason
        )
        if break_glass is not None:
            request.break_glass.CopyFrom(
                secrets_pb2.BreakGlassApproval(
                    request_id=break_glass.request_id,
                    step_up=break_glass.step_up,
                    approvals=list(break_glass.approvals),
                )
            )
        if window_start is not None:
            request.window_start.CopyFrom(_ts(window_start))
        if window_end is not None:
            request.window_end.CopyFrom(_ts(window_end))
        grant = await self._channel.call(
            self._stub.IssueGrant, request, bearer_token=bearer, what="secrets"
        )
        return GrantView(
            id=grant.id,
            secret_ref=ref_from_proto(grant.secret_ref),
            work_order_id=grant.work_order_id,
            expires_at=_time(grant, "expires_at"),
            reveal_url=grant.reveal_url,
            reveal_token=grant.reveal_token,
        )

    async def get_refs(
        self, org_id: str, ref_ids: Collection[str] = (), site_ids: Collection[str] = ()
    ) -> list[SecretRefView]:
        reply = await self._channel.call(
            self._stub.GetSecretRefs,
            secrets_pb2.GetSecretRefsRequest(
                org_id=org_id, secret_ref_ids=list(ref_ids), site_ids=list(site_ids)
            ),
            what="secrets",
        )
        return [ref_from_proto(r) for r in reply.secret_refs if r.org_id in ("", org_id)]

    async def delete_site_secrets(self, site_id: str, *, bearer: str) -> int:
        reply = await self._channel.call(
            self._stub.DeleteSiteSecrets,
            secrets_pb2.DeleteSiteSecretsRequest(site_id=site_id),
            bearer_token=bearer,
            what="secrets",
        )
        return int(reply.deleted)

    async def destroy_customer_key(self, customer_id: str, *, bearer: str) -> None:
        await self._channel.call(
            self._stub.DestroyCustomerKey,
            secrets_pb2.DestroyCustomerKeyRequest(customer_id=customer_id),
            bearer_token=bearer,
            what="secrets",
        )

    async def revoke_grants(self, org_id: str, work_order_id: str, reason: str) -> int:
        reply = await self._channel.call(
            self._stub.RevokeGrants,
            secrets_pb2.RevokeGrantsRequest(
                org_id=org_id, work_order_id=work_order_id, reason=reason
            ),
            deadline=3.0,
            what="secrets",
        )
        return int(reply.revoked)

    async def create_data_key(self, org_id: str, customer_id: str) -> DataKey:
        reply = await self._channel.call(
            self._stub.CreateDataKey,
            secrets_pb2.CreateDataKeyRequest(org_id=org_id, customer_id=customer_id),
            what="secrets",
        )
        return DataKey(
            plaintext=bytes(reply.plaintext),
            wrapped=bytes(reply.ciphertext),
            version=reply.key_version,
        )

    async def decrypt_data_key(self, org_id: str, customer_id: str, wrapped: bytes) -> bytes:
        reply = await self._channel.call(
            self._stub.DecryptDataKey,
            secrets_pb2.DecryptDataKeyRequest(
                org_id=org_id, customer_id=customer_id, ciphertext=wrapped
            ),
            what="secrets",
        )
        return bytes(reply.plaintext)


class GrpcIdentity:
    def __init__(self, channel: ServiceChannel) -> None:
        self._channel = channel
        self._stub = identity_pb2_grpc.IdentityStub(channel.channel)

    async def get_users(self, org_id: str, user_ids: Collection[str]) -> list[UserFacts]:
        reply = await self._channel.call(
            self._stub.GetUsers,
            identity_pb2.GetUsersRequest(org_id=org_id, user_ids=list(user_ids)),
            what="identity",
        )
        return [
            UserFacts(
                id=u.id,
                org_id=u.org_id,
                active=u.status == identity_pb2.ACTIVE,
                roles=frozenset(u.roles),
                region_ids=frozenset(u.region_ids),
            )
            for u in reply.users
        ]

    async def existing_region_ids(self, org_id: str, region_ids: Collection[str]) -> set[str]:
        reply = await self._channel.call(
            self._stub.GetRegions,
            identity_pb2.GetRegionsRequest(org_id=org_id, region_ids=list(region_ids)),
            what="identity",
        )
        return {r.id for r in reply.regions}

    async def verify_step_up(self, *, otp: str, purpose: str, binding: str, bearer: str) -> str:
        reply = await self._channel.call(
            self._stub.VerifyStepUp,
            identity_pb2.VerifyStepUpRequest(otp=otp, purpose=purpose, binding=binding),
            bearer_token=bearer,
            what="identity",
        )
        return str(reply.assertion)
