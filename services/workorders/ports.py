"""What the workorders rules need from other services, as plain data (no gRPC types here)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class SecretRefView:
    id: str
    site_id: str
    region_id: str
    kind: str
    label: str
    version: int
    updated_at: datetime | None


@dataclass(frozen=True)
class UploadSlotView:
    secret_ref: SecretRefView
    upload_url: str
    upload_token: str
    expires_at: datetime | None


@dataclass(frozen=True)
class GrantView:
    id: str
    secret_ref: SecretRefView
    work_order_id: str
    expires_at: datetime | None
    reveal_url: str
    reveal_token: str


@dataclass(frozen=True)
class UserFacts:
    id: str
    org_id: str
    active: bool
    roles: frozenset[str]
    region_ids: frozenset[str]


@dataclass(frozen=True)
class BreakGlassProof:
    """What secrets needs to issue a break-glass grant: the request and identity's signed
    step-up assertions (the requester's, and a second ADMIN's when the policy wants one)."""

    request_id: str
    step_up: str
    approvals: tuple[str, ...] = ()


# Every call that acts for a user passes `bearer`, that user's access token: the callee takes
# the principal from it (never from a field), so the org and user are not parameters here.
class SecretsPort(Protocol):
    async def prepare_upload(
        self,
        *,
        site_id: str,
        region_id: str,
        kind: str,
        label: str,
        secret_ref_id: str,
        bearer: str,
    ) -> UploadSlotView: ...

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
    ) -> GrantView: ...

    async def get_refs(
        self, org_id: str, ref_ids: Collection[str] = (), site_ids: Collection[str] = ()
    ) -> list[SecretRefView]: ...

    async def delete_site_secrets(self, site_id: str, *, bearer: str) -> int: ...

    async def destroy_customer_key(self, customer_id: str, *, bearer: str) -> None: ...

    async def revoke_grants(self, org_id: str, work_order_id: str, reason: str) -> int: ...


class IdentityPort(Protocol):
    async def get_users(self, org_id: str, user_ids: Collection[str]) -> list[UserFacts]: ...

    async def existing_region_ids(self, org_id: str, region_ids: Collection[str]) -> set[str]: ...

    async def verify_step_up(self, *, otp: str, purpose: str, binding: str, bearer: str) -> str:
        """identity's signed step-up assertion for the user of `bearer` (fresh TOTP code)."""
        ...
