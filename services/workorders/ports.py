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


class SecretsPort(Protocol):
    async def prepare_upload(
        self,
        *,
        org_id: str,
        user_id: str,
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
        org_id: str,
        user_id: str,
        work_order_id: str,
        secret_ref_id: str,
        window_start: datetime | None,
        window_end: datetime | None,
        break_glass: bool,
        reason: str,
        bearer: str,
    ) -> GrantView: ...

    async def get_refs(
        self, org_id: str, ref_ids: Collection[str] = (), site_ids: Collection[str] = ()
    ) -> list[SecretRefView]: ...

    async def delete_site_secrets(self, org_id: str, site_id: str) -> int: ...

    async def destroy_customer_key(self, org_id: str, customer_id: str) -> None: ...

    async def revoke_grants(self, org_id: str, work_order_id: str, reason: str) -> int: ...


class IdentityPort(Protocol):
    async def get_users(self, org_id: str, user_ids: Collection[str]) -> list[UserFacts]: ...

    async def existing_region_ids(self, org_id: str, region_ids: Collection[str]) -> set[str]: ...
