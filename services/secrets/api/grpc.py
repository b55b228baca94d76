"""gRPC servicer of the secrets service (callers: workorders, identity). Never carries a value.

The callers authorize the user first; this side re-checks what it can (window, job) itself.
Calls that act for a user (PrepareUpload, IssueGrant, DeleteSiteSecrets, DestroyCustomerKey)
carry that user's access token; the principal is taken from the verified token only
(doorward_kit.acting), never from a request field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from doorward.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from doorward_kit.acting import acting_user
from doorward_kit.auth import Role, TokenVerifier
from doorward_kit.errors import bad_input, forbidden
from doorward_kit.grpc import GrpcServer, allow_list, caller_service, grpc_errors
from services.secrets.models import SecretRef
from services.secrets.repository import RefRow
from services.secrets.service.secrets import BreakGlassApproval, SecretsService

# Deny by default; the caller is its verified certificate. Upload slots, grants, refs and data
# keys serve workorders' users only; identity revokes a deactivated user's grants.
ALLOWED_CALLERS = allow_list(
    secrets_pb2.DESCRIPTOR.services_by_name["Secrets"],
    {
        "PrepareUpload": {"workorders"},
        "IssueGrant": {"workorders"},
        "RevokeGrants": {"workorders", "identity"},  # which target: REVOKERS below
        "GetSecretRefs": {"workorders"},
        "DeleteSiteSecrets": {"workorders"},
        "CreateDataKey": {"workorders"},
        "DecryptDataKey": {"workorders"},
        "DestroyCustomerKey": {"workorders"},
        # Only the services that name users in decision spans (and not the gateway or audit).
        "GetPseudonymKey": {"workorders", "identity"},
        # The retention purge runs in workorders (it holds the policies and the legal holds).
        "PruneGrants": {"workorders"},
        "RetireSiteSecrets": {"workorders"},
        # Retention of contact data: the purge crypto-shreds like an erasure (shred ledger).
        "ShredRetainedCustomers": {"workorders"},
    },
)
# RevokeGrants by target: only identity revokes by user, only workorders by job or site.
REVOKERS = {"user_id": "identity", "work_order_id": "workorders", "site_id": "workorders"}


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    value: datetime = getattr(message, name).ToDatetime(tzinfo=UTC)
    return value


def ref_to_proto(ref: SecretRef | RefRow) -> secrets_pb2.SecretRef:
    return secrets_pb2.SecretRef(
        id=ref.id,
        org_id=ref.org_id,
        site_id=ref.site_id,
        region_id=ref.region_id,
        kind=ref.kind,
        label=ref.label,
        version=ref.version,
        updated_at=_ts(ref.updated_at),
    )


class SecretsServicer(secrets_pb2_grpc.SecretsServicer):
    def __init__(self, service: SecretsService, verifier: TokenVerifier) -> None:
        self.service = service
        self.verifier = verifier

    @grpc_errors
    async def PrepareUpload(
        self, request: secrets_pb2.PrepareUploadRequest, context: grpc.aio.ServicerContext
    ) -> secrets_pb2.UploadSlot:
        principal = await acting_user(context, self.verifier)
        prepared = await self.service.prepare_upload(
            principal,
            site_id=request.site_id,
            region_id=request.region_id,
            kind=request.kind,
            label=request.label,
            secret_ref_id=request.secret_ref_id,
        )
        return secrets_pb2.UploadSlot(
            secret_ref=ref_to_proto(prepared.ref),
            upload_url=self.service.upload_url(prepared.slot_id),
            upload_token=prepared.upload_token,
            expires_at=_ts(prepared.expires_at),
        )

    @grpc_errors
    async def IssueGrant(
        self, request: secrets_pb2.IssueGrantRequest, context: grpc.aio.ServicerContext
    ) -> secrets_pb2.Grant:
        principal = await acting_user(context, self.verifier)
        approval = None
        if request.HasField("break_glass"):
            approval = BreakGlassApproval(
                request_id=request.break_glass.request_id,
                step_up=request.break_glass.step_up,
                approvals=tuple(request.break_glass.approvals),
            )
        issued = await self.service.issue_grant(
            principal,
            work_order_id=request.work_order_id,
            secret_ref_id=request.secret_ref_id,
            window_start=_time(request, "window_start"),
            window_end=_time(request, "window_end"),
            break_glass=approval,
            reason=request.reason,
        )
        return secrets_pb2.Grant(
            id=issued.grant_id,
            secret_ref=ref_to_proto(issued.ref),
            work_order_id=issued.work_order_id,
            expires_at=_ts(issued.expires_at),
            reveal_url=self.service.reveal_url(issued.grant_id),
            reveal_token=issued.reveal_token,
        )

    @grpc_errors
    async def RevokeGrants(
        self, request: secrets_pb2.RevokeGrantsRequest, context: grpc.aio.ServicerContext
    ) -> secrets_pb2.RevokeGrantsResponse:
        target = request.WhichOneof("target")
        if target is not None and REVOKERS.get(target) != caller_service(context):
            raise forbidden(f"this service may not revoke grants by {target}")
        revoked = await self.service.revoke_grants(
            org_id=request.org_id,
            reason=request.reason,
            work_order_id=request.work_order_id if target == "work_order_id" else None,
            user_id=request.user_id if target == "user_id" else None,
            site_id=request.site_id if target == "site_id" else None,
        )
        return secrets_pb2.RevokeGrantsResponse(revoked=revoked)

    @grpc_errors
    async def GetSecretRefs(
        self, request: secrets_pb2.GetSecretRefsRequest, context: grpc.aio.ServicerContext
    ) -> secrets_pb2.GetSecretRefsResponse:
        refs = await self.service.get_refs(
            request.org_id, list(request.secret_ref_ids), list(request.site_ids)
        )
        return secrets_pb2.GetSecretRefsResponse(secret_refs=[ref_to_proto(r) for r in refs])

    @grpc_errors
    async def DeleteSiteSecrets(
        self, request: secrets_pb2.DeleteSiteSecretsRequest, context: grpc.aio.ServicerContext
    ) -> secrets_pb2.DeleteSiteSecretsResponse:
        principal = await acting_user(context, self.verifier, Role.ADMIN)
        deleted = await self.service.delete_site_secrets(principal, site_id=request.site_id)
        return secrets_pb2.DeleteSiteSecretsResponse(deleted=deleted)

    @grpc_errors
    async def CreateDataKey(
        self, request: secrets_pb2.CreateDataKeyRequest, context: grpc.aio.ServicerContext
    ) -> secrets_pb2.DataKey:
        plaintext, ciphertext, version = await self.service.create_data_key(
            request.org_id, request.customer_id
        )
        return secrets_pb2.DataKey(plaintext=plaintext, ciphertext=ciphertext, key_version=version)

    @grpc_errors
    async def DecryptDataKey(
        self, request: secrets_pb2.DecryptDataKeyRequest, context: grpc.aio.ServicerContext
    ) -> secrets_pb2.DataKey:
        plaintext, version = await self.service.decrypt_data_key(
            request.org_id, request.customer_id, request.ciphertext
        )
        return secrets_pb2.DataKey(
            plaintext=plaintext, ciphertext=request.ciphertext, key_version=version
        )

    @grpc_errors
    async def DestroyCustomerKey(
        self, request: secrets_pb2.DestroyCustomerKeyRequest, context: grpc.aio.ServicerContext
    ) -> secrets_pb2.DestroyCustomerKeyResponse:
        principal = await acting_user(context, self.verifier, Role.ADMIN)
        await self.service.destroy_customer_key(principal, request.customer_id)
        return secrets_pb2.DestroyCustomerKeyResponse()

    @grpc_errors
    async def GetPseudonymKey(
        self, request: secrets_pb2.GetPseudonymKeyRequest, context: grpc.aio.ServicerContext
    ) -> secrets_pb2.PseudonymKey:
        return secrets_pb2.PseudonymKey(key=self.service.pseudonym_key())

    @grpc_errors
    async def PruneGrants(
        self, request: secrets_pb2.PruneGrantsRequest, context: grpc.aio.ServicerContext
    ) -> secrets_pb2.PruneGrantsResponse:
        if not request.HasField("before"):
            raise bad_input("before is required")
        deleted = await self.service.prune_grants(
            request.org_id,
            request.before.ToDatetime(tzinfo=UTC),
            held_site_ids=list(request.held_site_ids),
            held_work_order_ids=list(request.held_work_order_ids),
        )
        return secrets_pb2.PruneGrantsResponse(deleted=deleted)

    @grpc_errors
    async def RetireSiteSecrets(
        self, request: secrets_pb2.RetireSiteSecretsRequest, context: grpc.aio.ServicerContext
    ) -> secrets_pb2.RetireSiteSecretsResponse:
        if not request.HasField("before"):
            raise bad_input("before is required")
        destroyed = await self.service.retire_site_secrets(
            request.org_id, request.before.ToDatetime(tzinfo=UTC), list(request.site_ids)
        )
        return secrets_pb2.RetireSiteSecretsResponse(destroyed=destroyed)

    @grpc_errors
    async def ShredRetainedCustomers(
        self,
        request: secrets_pb2.ShredRetainedCustomersRequest,
        context: grpc.aio.ServicerContext,
    ) -> secrets_pb2.ShredRetainedCustomersResponse:
        if not request.HasField("before"):
            raise bad_input("before is required")
        gone, destroyed = await self.service.shred_retained_customers(
            request.org_id, request.before.ToDatetime(tzinfo=UTC), list(request.customer_ids)
        )
        return secrets_pb2.ShredRetainedCustomersResponse(
            shredded_customer_ids=gone, destroyed=destroyed
        )


def add_to_server(server: GrpcServer, service: SecretsService, verifier: TokenVerifier) -> None:
    secrets_pb2_grpc.add_SecretsServicer_to_server(
        SecretsServicer(service, verifier), server.server
    )
    server.allow(ALLOWED_CALLERS)
