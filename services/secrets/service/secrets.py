"""The secrets service: upload slots, grants, reveals, revocation, data keys, sweeping.

This layer orders the steps whose order IS the rule (audit before unwrap, database lock around
a single use, Vault revocation after the database says revoked), so it opens its own units of
work; it never commits by hand and imports no web/gRPC framework. Values pass through memory
only: into Vault on upload, out of an unwrap straight to the caller on reveal.

Reveal order: verify grant (locked row) -> re-check the job -> audit ALLOWED synchronously ->
unwrap -> mark used -> return. The audit record therefore always exists before a value leaves,
and if audit cannot take it the single use is not burnt (the wrapping token is untouched). If
the unwrap then fails, an ERROR event follows through the outbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit import shred_ledger
from doorward_kit.audit_client import AuditRecord, Outcome, record_event
from doorward_kit.auth import (
    PURPOSE_BREAK_GLASS_APPROVE,
    PURPOSE_BREAK_GLASS_REQUEST,
    Principal,
    Role,
    StepUp,
    break_glass_binding,
)
from doorward_kit.db import Database
from doorward_kit.decisions import DecisionSpan, Reason, SpanName, decision_span, reason_of
from doorward_kit.errors import DoorwardError, ErrorCode, bad_input, conflict, not_found
from doorward_kit.metrics import ACTIVE_GRANTS
from doorward_kit.policy import Action, Resource, authorize, can
from doorward_kit.pseudonym import current_pseudonym_key, has_pseudonym_key, set_pseudonym_key
from services.secrets import repository as repo
from services.secrets.models import AuditOutbox, Grant, SecretRef, UploadSlot, new_id
from services.secrets.ratelimit import Limiter, SharedRateLimiter
from services.secrets.service import rules
from services.secrets.service.rules import JobContext
from services.secrets.vault import VaultGateway, VaultRejected

log = logging.getLogger(__name__)

# The shortest contact-data retention an administrator can set (workorders' retention BOUNDS):
# the purge never asks to shred keys newer than this.
MIN_CONTACT_RETENTION = timedelta(days=30)


class SyncAuditor(Protocol):
    async def append(self, records: Sequence[AuditRecord]) -> None: ...


class JobSource(Protocol):
    async def access_context(self, org_id: str, work_order_id: str) -> JobContext | None: ...


class StepUpVerifier(Protocol):
    """Checks identity's signature on a step-up assertion (doorward_kit.auth.TokenVerifier)."""

    async def verify_step_up(self, assertion: str) -> StepUp: ...


@dataclass(frozen=True)
class BreakGlassApproval:
    """What a break-glass IssueGrant carries instead of a flag: the workorders request id, the
    requester's step-up assertion and any second approvers' assertions."""

    request_id: str
    step_up: str
    approvals: tuple[str, ...] = ()


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Limits:
    upload_ttl: int = 600
    grant_ttl: int = 900
    break_glass_ttl: int = 300
    recheck_job: bool = True
    max_open_grants: int = 10
    grant_rate: int = 20
    max_open_uploads: int = 20
    upload_rate: int = 30


@dataclass(frozen=True)
class PreparedUpload:
    ref: SecretRef
    slot_id: str
    upload_token: str
    expires_at: datetime


@dataclass(frozen=True)
class IssuedGrant:
    grant_id: str
    ref: SecretRef
    work_order_id: str
    reveal_token: str
    expires_at: datetime


@dataclass(frozen=True)
class Revealed:
    secret_ref_id: str
    kind: str
    label: str
    version: int
    value: str = field(repr=False)


class Denial(Exception):
    """A refusal to audit (in a fresh transaction) before the error goes back to the caller."""

    def __init__(
        self,
        error: DoorwardError,
        reason: str,
        *,
        revoke_grant: str | None = None,
        burn_slot: str | None = None,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.reason = reason
        self.revoke_grant = revoke_grant
        self.burn_slot = burn_slot


def _gone(what: str, reason: str) -> DoorwardError:
    messages = {
        "used": f"this {what} token has already been used",
        "expired": f"this {what} token has expired",
        "revoked": f"this {what} token has been revoked",
    }
    return DoorwardError(ErrorCode.GONE, messages.get(reason, f"this {what} token no longer works"))


class SecretsService:
    def __init__(
        self,
        db: Database,
        vault: VaultGateway,
        auditor: SyncAuditor,
        jobs: JobSource | None,
        *,
        base_url: str,
        limits: Limits | None = None,
        step_ups: StepUpVerifier | None = None,
        clock: Callable[[], datetime] = utcnow,
        shred_ledger: Path | None = None,
    ) -> None:
        self.db = db
        self.shred_ledger = shred_ledger
        self.vault = vault
        self.auditor = auditor
        self.jobs = jobs
        self.base_url = base_url.rstrip("/")
        self.limits = limits or Limits()
        # Without a step-up verifier no break-glass grant can be issued at all.
        self.step_ups = step_ups
        self.clock = clock
        # Counted in the database: the limits hold across replicas.
        self._grant_rate: Limiter = SharedRateLimiter(db, "grant", self.limits.grant_rate)
        self._upload_rate: Limiter = SharedRateLimiter(db, "upload", self.limits.upload_rate)
        # The same pool, for single reads outside a transaction (made on first use).

    def upload_url(self, slot_id: str) -> str:
        return f"{self.base_url}/v1/uploads/{slot_id}"

    def reveal_url(self, grant_id: str) -> str:
        return f"{self.base_url}/v1/reveals/{grant_id}"

    async def _refuse(
        self, denial: Denial, action: str, fields: dict[str, Any], **details: str
    ) -> DoorwardError:
        """Audit a refusal as `action` (DENIED, with its reason) and return the error to raise.

        The request's transaction rolled back: the refusal is recorded in a new one."""
        record = AuditRecord(
            **fields,
            action=action,
            outcome=Outcome.DENIED,
            details={"reason": denial.reason, **details},
        )
        accessor: str | None = None
        async with self.db.unit_of_work() as session:
            if denial.revoke_grant is not None:
                rows = await repo.revoke_grants(
                    session,
                    record.org_id,
                    now=self.clock(),
                    reason=denial.reason[:40],
                    grant_id=denial.revoke_grant,
                )
                accessor = rows[0][1] if rows else None
            if denial.burn_slot is not None:
                slot = await repo.get_slot_for_update(session, record.org_id, denial.burn_slot)
                if slot is not None and slot.used_at is None:
                    slot.used_at = self.clock()
            await record_event(session, AuditOutbox, record)
        if accessor is not None:
            await self._revoke_in_vault([(denial.revoke_grant or "", accessor)], [])
        return denial.error

    # ---- uploads --------------------------------------------------------------------------

    async def prepare_upload(
        self,
        principal: Principal,
        *,
        site_id: str,
        region_id: str,
        kind: str,
        label: str,
        secret_ref_id: str = "",
    ) -> PreparedUpload:
        """An upload slot for the verified user `principal` (never a user named by a field)."""
        org_id = rules.require_id(principal.org_id, "org_id")
        user_id = rules.require_id(principal.user_id, "user_id")
        await self._upload_rate.acquire(f"{org_id}/{user_id}")
        now = self.clock()
        async with self.db.unit_of_work() as session:
            await repo.lock_user(session, org_id, user_id)
            if await repo.count_open_slots(session, org_id, user_id, now) >= (
                self.limits.max_open_uploads
            ):
                raise DoorwardError(
                    ErrorCode.RATE_LIMITED,
                    "too many open uploads; use or let some expire, then try again",
                )
            if secret_ref_id:
                ref = await repo.get_ref(session, org_id, secret_ref_id, for_update=True)
                if ref is None:
                    raise not_found("secret reference")
                authorize(principal, Action.SECRET_ROTATE, Resource(org_id, ref.region_id))
                action = "secret.rotate.prepare"
            else:
                authorize(
                    principal,
                    Action.SECRET_UPLOAD,
                    Resource(org_id, rules.require_id(region_id, "region_id")),
                )
                ref = SecretRef(
                    id=new_id(),
                    org_id=org_id,
                    site_id=rules.require_id(site_id, "site_id"),
                    region_id=rules.require_id(region_id, "region_id"),
                    kind=rules.require_kind(kind),
                    label=rules.require_label(label),
                    version=0,
                    kv_path=rules.new_kv_path(org_id),
                    updated_at=now,
                )
                session.add(ref)
                action = "secret.upload.prepare"
            slot_id = new_id()
            ttl = self.limits.upload_ttl
            # The binding lives inside Vault too: after the unwrap we compare it.
            wrapped = await self.vault.wrap({"slot": slot_id, "ref": ref.id, "user": user_id}, ttl)
            try:
                sealed = await self.vault.seal(slot_id, wrapped.token)
                token = rules.encode_token(rules.UPLOAD_PREFIX, sealed)
                expires_at = rules.expiry(now, min(ttl, wrapped.ttl))
                session.add(
                    UploadSlot(
                        id=slot_id,
                        org_id=org_id,
                        user_id=user_id,
                        secret_ref_id=ref.id,
                        site_id=ref.site_id,
                        base_version=ref.version,
                        token_hash=rules.token_hash(token),
                        wrap_accessor=wrapped.accessor,
                        expires_at=expires_at,
                        vault_clean=False,
                    )
                )
                await record_event(
                    session,
                    AuditOutbox,
                    AuditRecord(
                        org_id=org_id,
                        actor_id=user_id,
                        action=action,
                        outcome=Outcome.ALLOWED,
                        target_type="SecretRef",
                        target_id=ref.id,
                        secret_ref_id=ref.id,
                        details={
                            "upload_id": slot_id,
                            "site_id": ref.site_id,
                            "kind": ref.kind,
                            "ttl_seconds": str(ttl),
                        },
                    ),
                )
                await session.flush()
            except BaseException:
                await self._revoke_quietly(wrapped.accessor)
                raise
        return PreparedUpload(ref=ref, slot_id=slot_id, upload_token=token, expires_at=expires_at)

    async def upload(
        self, *, org_id: str, user_id: str, slot_id: str, token: str, value: str, source_ip: str
    ) -> tuple[str, int]:
        value = rules.require_value(value)
        base: dict[str, Any] = {
            "org_id": org_id,
            "actor_id": user_id,
            "target_type": "UploadSlot",
            "target_id": rules.uuid_or_empty(slot_id),
            "source_ip": source_ip,
        }
        try:
            return await self._upload(org_id, user_id, slot_id, token, value, source_ip)
        except Denial as denial:
            raise await self._refuse(denial, "secret.upload.denied", base) from None

    async def _upload(
        self, org_id: str, user_id: str, slot_id: str, token: str, value: str, source_ip: str
    ) -> tuple[str, int]:
        now = self.clock()
        async with self.db.unit_of_work() as session:
            slot = await repo.get_slot_for_update(session, org_id, slot_id)
            if slot is None:
                raise Denial(not_found("upload"), "not_found")
            _check_holder(slot, "upload", "upload", user_id, token, now)
            ref = await repo.get_ref(session, org_id, slot.secret_ref_id, for_update=True)
            if ref is None:
                raise Denial(_gone("upload", "deleted"), "deleted", burn_slot=slot.id)
            if ref.version != slot.base_version:
                raise Denial(
                    conflict("the secret changed since this upload was prepared; prepare again"),
                    "version_changed",
                    burn_slot=slot.id,
                )
            wrapping = await self._unseal(rules.UPLOAD_PREFIX, slot.id, token, "upload")
            try:
                binding = await self.vault.unwrap(wrapping)
            except VaultRejected:
                raise Denial(_gone("upload", "vault"), "vault_refused", burn_slot=slot.id) from None
            if binding.get("slot") != slot.id or binding.get("user") != user_id:
                raise _mismatch("upload", "binding_mismatch", burn_slot=slot.id)
            try:
                version = await self.vault.kv_write(ref.kv_path, value, cas=ref.version)
            except VaultRejected:
                raise Denial(
                    conflict("the secret changed since this upload was prepared; prepare again"),
                    "version_changed",
                    burn_slot=slot.id,
                ) from None
            ref.version = version
            ref.updated_at = now
            slot.used_at = now
            slot.vault_clean = True  # the unwrap consumed the wrapping token
            await record_event(
                session,
                AuditOutbox,
                AuditRecord(
                    org_id=org_id,
                    actor_id=user_id,
                    action="secret.upload" if version == 1 else "secret.rotate",
                    outcome=Outcome.ALLOWED,
                    target_type="SecretRef",
                    target_id=ref.id,
                    secret_ref_id=ref.id,
                    source_ip=source_ip,
                    details={"upload_id": slot.id, "version": str(version), "site_id": ref.site_id},
                ),
            )
            return ref.id, version

    async def _unseal(self, prefix: str, context: str, token: str, what: str) -> str:
        sealed = rules.decode_token(prefix, token)
        if sealed is None:
            raise _mismatch(what)
        try:
            return await self.vault.unseal(context, sealed)
        except VaultRejected:
            raise _mismatch(what) from None

    # ---- grants ---------------------------------------------------------------------------

    async def issue_grant(
        self,
        principal: Principal,
        *,
        work_order_id: str,
        secret_ref_id: str,
        window_start: datetime | None,
        window_end: datetime | None,
        break_glass: BreakGlassApproval | None = None,
        reason: str = "",
    ) -> IssuedGrant:
        """A reveal grant for the verified user `principal`: the job's assignee in its window,
        or an ADMIN holding a verified break-glass approval."""
        org_id = rules.require_id(principal.org_id, "org_id")
        user_id = rules.require_id(principal.user_id, "user_id")
        rules.require_id(work_order_id, "work_order_id")
        rules.require_id(secret_ref_id, "secret_ref_id")
        reason = (reason or "").strip()
        if break_glass is not None and not reason:
            raise bad_input("break-glass access needs a reason")
        if len(reason) > rules.MAX_BREAK_GLASS_REASON:
            raise bad_input(f"reason must be at most {rules.MAX_BREAK_GLASS_REASON} characters")
        with decision_span(
            SpanName.GRANT_ISSUE,
            org_id=org_id,
            actor_id=user_id,
            work_order_id=rules.uuid_or_empty(work_order_id),
            secret_ref_id=rules.uuid_or_empty(secret_ref_id),
        ) as decision:
            await self._grant_rate.acquire(f"{org_id}/{user_id}")
            try:
                issued = await self._issue_grant(
                    principal,
                    work_order_id,
                    secret_ref_id,
                    (window_start, window_end),
                    break_glass,
                    reason,
                )
            except Denial as denial:
                decision.deny(denial.reason)
                fields: dict[str, Any] = {
                    "org_id": org_id,
                    "actor_id": user_id,
                    "target_type": "SecretRef",
                    "target_id": rules.uuid_or_empty(secret_ref_id),
                    "secret_ref_id": rules.uuid_or_empty(secret_ref_id),
                    "work_order_id": rules.uuid_or_empty(work_order_id),
                }
                extra = {"mode": "break_glass" if break_glass is not None else "normal"}
                if break_glass is not None and rules.uuid_or_empty(break_glass.request_id):
                    extra["request_id"] = break_glass.request_id
                raise await self._refuse(denial, "secret.access.denied", fields, **extra) from None
            decision.ids(grant_id=issued.grant_id)
            decision.allow(Reason.BREAK_GLASS if break_glass is not None else Reason.IN_WINDOW)
            return issued

    async def _check_break_glass(
        self,
        principal: Principal,
        approval: BreakGlassApproval,
        secret_ref_id: str,
        work_order_id: str,
        reason: str,
    ) -> list[str]:
        """The approval is real: the requester (the caller's verified token) typed a fresh
        one-time code for exactly this request, secret, job and reason; every approver is
        another ADMIN of the organisation who typed theirs for this request. Returns the
        approvers' ids. A caller holding only a process's credentials has none of this."""
        if not can(principal, Action.SECRET_BREAK_GLASS, Resource(principal.org_id)):
            raise Denial(
                DoorwardError(ErrorCode.FORBIDDEN, "break-glass access is for ADMINs only"),
                "not_admin",
            )
        if not rules.uuid_or_empty(approval.request_id) or self.step_ups is None:
            raise _step_up_denial("step_up_missing")
        if not approval.step_up:
            raise _step_up_denial("step_up_missing")
        try:
            own = await self.step_ups.verify_step_up(approval.step_up)
        except DoorwardError:
            raise _step_up_denial("step_up_invalid") from None
        binding = break_glass_binding(approval.request_id, secret_ref_id, work_order_id, reason)
        if (
            own.purpose != PURPOSE_BREAK_GLASS_REQUEST
            or own.user_id != principal.user_id
            or own.org_id != principal.org_id
            or Role.ADMIN not in own.roles
            or own.binding != binding
        ):
            raise _step_up_denial("step_up_mismatch")
        approvers: list[str] = []
        for assertion in approval.approvals:
            try:
                other = await self.step_ups.verify_step_up(assertion)
            except DoorwardError:
                raise _step_up_denial("approval_invalid") from None
            if (
                other.purpose != PURPOSE_BREAK_GLASS_APPROVE
                or other.org_id != principal.org_id
                or Role.ADMIN not in other.roles
                or other.binding != approval.request_id
            ):
                raise _step_up_denial("approval_mismatch")
            if other.user_id == principal.user_id or other.user_id in approvers:
                raise _step_up_denial("approver_not_distinct")
            approvers.append(other.user_id)
        async with self.db.unit_of_work() as session:
            if await repo.break_glass_used(session, approval.request_id):
                raise Denial(
                    conflict("this break-glass request has already been used"), "request_used"
                )
        return approvers

    async def _issue_grant(
        self,
        principal: Principal,
        work_order_id: str,
        secret_ref_id: str,
        window: tuple[datetime | None, datetime | None],
        approval: BreakGlassApproval | None,
        reason: str,
    ) -> IssuedGrant:
        org_id, user_id = principal.org_id, principal.user_id
        break_glass = approval is not None
        async with self.db.unit_of_work() as session:
            ref = await repo.get_ref(session, org_id, secret_ref_id)
            if ref is None:
                raise Denial(not_found("secret reference"), "not_found")
            if ref.version < 1:
                raise Denial(conflict("no value has been uploaded for this secret yet"), "no_value")
            await self._check_open_grants(session, org_id, user_id)
        now = self.clock()
        approvers: list[str] = []
        if approval is not None:
            approvers = await self._check_break_glass(
                principal, approval, secret_ref_id, work_order_id, reason
            )
            seconds = self.limits.break_glass_ttl
            if self.limits.recheck_job and self.jobs is not None:
                job = await self.jobs.access_context(org_id, work_order_id)
                if job is None:
                    raise Denial(not_found("work order"), "work_order_not_found")
                if secret_ref_id not in job.secret_ref_ids and ref.site_id != job.site_id:
                    raise Denial(
                        DoorwardError(
                            ErrorCode.FORBIDDEN, "this secret does not belong to the work order"
                        ),
                        "secret_not_attached",
                    )
        else:
            if not principal.has_role(Role.TECHNICIAN, Role.SUBCONTRACTOR):
                raise Denial(_job_error("not_assignee"), "not_assignee")
            if self.limits.recheck_job and self.jobs is not None:
                job = await self.jobs.access_context(org_id, work_order_id)
                why = rules.job_denial(
                    job,
                    user_id=user_id,
                    secret_ref_id=secret_ref_id,
                    site_id=ref.site_id,
                    now=now,
                )
                if why is not None:
                    raise Denial(_job_error(why), why)
                assert job is not None
                # The policy again, on the job's facts: the assignee, in a region they hold.
                if not can(
                    principal,
                    Action.SECRET_ACCESS_REQUEST,
                    Resource(
                        org_id,
                        region_id=job.region_id,
                        assignee_id=job.assignee_id,
                        in_window=True,
                    ),
                ):
                    raise Denial(_job_error("not_assignee"), "not_allowed")
                window = rules.intersect(window, (job.window_start, job.window_end))
            try:
                seconds = rules.grant_lifetime(now, *window, ttl=self.limits.grant_ttl)
            except DoorwardError as error:
                raise Denial(error, "outside_window") from None
        grant_id = new_id()
        wrapped = await self.vault.kv_read_wrapped(ref.kv_path, ref.version, seconds)
        try:
            sealed = await self.vault.seal(grant_id, wrapped.token)
            token = rules.encode_token(rules.REVEAL_PREFIX, sealed)
            expires_at = rules.expiry(now, min(seconds, wrapped.ttl))
            async with self.db.unit_of_work() as session:
                await self._check_open_grants(session, org_id, user_id, lock=True)
                session.add(
                    Grant(
                        id=grant_id,
                        org_id=org_id,
                        user_id=user_id,
                        work_order_id=work_order_id,
                        secret_ref_id=ref.id,
                        site_id=ref.site_id,
                        version=ref.version,
                        break_glass=break_glass,
                        break_glass_request_id=approval.request_id if approval else None,
                        reason=reason or None,
                        token_hash=rules.token_hash(token),
                        wrap_accessor=wrapped.accessor,
                        expires_at=expires_at,
                        vault_clean=False,
                    )
                )
                try:
                    await session.flush()
                except IntegrityError:
                    # Two grants raced for one break-glass request: the unique index decides.
                    raise Denial(
                        conflict("this break-glass request has already been used"),
                        "request_used",
                    ) from None
                await self._record_grant(
                    session,
                    org_id,
                    user_id,
                    work_order_id,
                    ref,
                    grant_id,
                    seconds,
                    approval,
                    approvers,
                )
        except BaseException:
            await self._revoke_quietly(wrapped.accessor)
            raise
        return IssuedGrant(
            grant_id=grant_id,
            ref=ref,
            work_order_id=work_order_id,
            reveal_token=token,
            expires_at=expires_at,
        )

    async def _check_open_grants(
        self, session: AsyncSession, org_id: str, user_id: str, *, lock: bool = False
    ) -> None:
        if lock:
            await repo.lock_user(session, org_id, user_id)
        if await repo.count_open_grants(session, org_id, user_id, self.clock()) >= (
            self.limits.max_open_grants
        ):
            raise Denial(
                DoorwardError(
                    ErrorCode.RATE_LIMITED,
                    "too many open grants; use or let some expire, then try again",
                ),
                "too_many_grants",
            )

    async def _record_grant(
        self,
        session: AsyncSession,
        org_id: str,
        user_id: str,
        work_order_id: str,
        ref: SecretRef,
        grant_id: str,
        seconds: int,
        approval: BreakGlassApproval | None,
        approvers: Sequence[str],
    ) -> None:
        common: dict[str, Any] = {
            "org_id": org_id,
            "actor_id": user_id,
            "outcome": Outcome.ALLOWED,
            "target_type": "SecretRef",
            "target_id": ref.id,
            "secret_ref_id": ref.id,
            "work_order_id": work_order_id,
        }
        details = {"grant_id": grant_id, "version": str(ref.version), "ttl_seconds": str(seconds)}
        if approval is None:
            await record_event(
                session,
                AuditOutbox,
                AuditRecord(**common, action="secret.access.grant", details=details),
            )
            return
        await record_event(
            session,
            AuditOutbox,
            AuditRecord(
                **common,
                action="secret.break_glass",
                details={
                    **details,
                    "request_id": approval.request_id,
                    "count": str(len(approvers)),
                    "mfa": "totp",
                },
            ),
        )
        await record_event(
            session,
            AuditOutbox,
            AuditRecord(
                **common,
                action="security.alert",
                details={
                    "reason": "break_glass",
                    "grant_id": grant_id,
                    "user_id": user_id,
                    "request_id": approval.request_id,
                },
            ),
        )

    # ---- reveal ---------------------------------------------------------------------------

    async def reveal(
        self, *, org_id: str, user_id: str, grant_id: str, token: str, source_ip: str
    ) -> Revealed:
        base: dict[str, Any] = {
            "org_id": org_id,
            "actor_id": user_id,
            "target_type": "SecretGrant",
            "target_id": rules.uuid_or_empty(grant_id),
            "source_ip": source_ip,
        }
        with decision_span(
            SpanName.SECRET_REVEAL,
            org_id=org_id,
            actor_id=user_id,
            grant_id=rules.uuid_or_empty(grant_id),
        ) as decision:
            try:
                return await self._reveal(org_id, user_id, grant_id, token, base, decision)
            except Denial as denial:
                decision.deny(denial.reason)
                raise await self._refuse(denial, "secret.reveal.denied", base) from None

    async def _reveal(
        self,
        org_id: str,
        user_id: str,
        grant_id: str,
        token: str,
        base: dict[str, Any],
        decision: DecisionSpan,
    ) -> Revealed:
        now = self.clock()
        async with self.db.unit_of_work() as session:
            grant = await repo.get_grant_for_update(session, org_id, grant_id)
            if grant is None:
                raise Denial(not_found("grant"), "not_found")
            base.update(work_order_id=grant.work_order_id, secret_ref_id=grant.secret_ref_id)
            decision.ids(work_order_id=grant.work_order_id, secret_ref_id=grant.secret_ref_id)
            _check_holder(grant, "grant", "reveal", user_id, token, now)
            ref = await repo.get_ref(session, org_id, grant.secret_ref_id)
            if ref is None:
                raise Denial(_gone("reveal", "revoked"), "deleted", revoke_grant=grant.id)
            if not grant.break_glass and self.limits.recheck_job and self.jobs is not None:
                job = await self.jobs.access_context(org_id, grant.work_order_id)
                why = rules.job_denial(
                    job,
                    user_id=user_id,
                    secret_ref_id=grant.secret_ref_id,
                    site_id=grant.site_id,
                    now=now,
                )
                if why is not None:
                    raise Denial(_gone("reveal", "revoked"), why, revoke_grant=grant.id)
            wrapping = await self._unseal(rules.REVEAL_PREFIX, grant.id, token, "reveal")
            mode = "break_glass" if grant.break_glass else "normal"
            allowed = AuditRecord(
                **base,
                action="secret.reveal",
                outcome=Outcome.ALLOWED,
                details={"grant_id": grant.id, "version": str(grant.version), "mode": mode},
            )
            # Durably on the trail BEFORE the value exists outside Vault; fail closed.
            try:
                await self.auditor.append([allowed])
            except DoorwardError:
                decision.deny(Reason.AUDIT_UNAVAILABLE)
                raise
            try:
                data = await self.vault.unwrap(wrapping)
            except VaultRejected:
                await self._audit_unwrap_error(base, grant.id, "vault_refused")
                raise Denial(
                    _gone("reveal", "vault"), "vault_refused", revoke_grant=grant.id
                ) from None
            except DoorwardError:
                decision.deny(Reason.VAULT_ERROR)
                await self._audit_unwrap_error(base, grant.id, "vault_unavailable")
                raise
            value = data.get("data", {}).get("value")
            version = int(data.get("metadata", {}).get("version", 0))
            if not isinstance(value, str) or version != grant.version:
                decision.deny(Reason.VAULT_ERROR)
                await self._audit_unwrap_error(base, grant.id, "version_mismatch")
                raise DoorwardError(ErrorCode.INTERNAL, "the vault returned another version")
            decision.allow(Reason.BREAK_GLASS if grant.break_glass else Reason.IN_WINDOW)
            grant.used_at = now
            grant.vault_clean = True  # the unwrap consumed the wrapping token
            return Revealed(
                secret_ref_id=ref.id,
                kind=ref.kind,
                label=ref.label,
                version=grant.version,
                value=value,
            )

    async def _audit_unwrap_error(self, base: dict[str, Any], grant_id: str, reason: str) -> None:
        async with self.db.unit_of_work() as session:
            await record_event(
                session,
                AuditOutbox,
                AuditRecord(
                    **base,
                    action="secret.reveal",
                    outcome=Outcome.ERROR,
                    details={"grant_id": grant_id, "reason": reason},
                ),
            )

    # ---- revocation -----------------------------------------------------------------------

    async def revoke_grants(
        self,
        *,
        org_id: str,
        reason: str,
        work_order_id: str | None = None,
        user_id: str | None = None,
        site_id: str | None = None,
        actor_id: str = "",
    ) -> int:
        rules.require_id(org_id, "org_id")
        targets = [t for t in (work_order_id, user_id, site_id) if t]
        if len(targets) != 1:
            raise bad_input("name exactly one of work_order_id, user_id, site_id")
        rules.require_id(targets[0], "target")
        why = rules.revoke_reason(reason)
        now = self.clock()
        async with self.db.unit_of_work() as session:
            grants = await repo.revoke_grants(
                session,
                org_id,
                now=now,
                reason=why,
                work_order_id=work_order_id or None,
                user_id=user_id or None,
                site_id=site_id or None,
            )
            slots: list[tuple[str, str]] = []
            if user_id or site_id:
                slots = await repo.revoke_slots(
                    session,
                    org_id,
                    now=now,
                    reason=why,
                    user_id=user_id or None,
                    site_id=site_id or None,
                )
            revoked_because = reason_of(why)
            if revoked_because is Reason.OTHER:
                revoked_because = Reason.REVOKED
            for gid, _accessor, grant_user, order_id, ref_id in grants:
                # The span names the grant's holder: whose access ended, not who ended it.
                with decision_span(
                    SpanName.GRANT_REVOKE,
                    org_id=org_id,
                    actor_id=grant_user,
                    work_order_id=order_id,
                    secret_ref_id=ref_id,
                    grant_id=gid,
                ) as decision:
                    decision.deny(revoked_because)
                    await record_event(
                        session,
                        AuditOutbox,
                        AuditRecord(
                            org_id=org_id,
                            actor_id=actor_id,
                            action="secret.grant.revoke",
                            outcome=Outcome.ALLOWED,
                            target_type="SecretGrant",
                            target_id=gid,
                            work_order_id=order_id,
                            secret_ref_id=ref_id,
                            details={"reason": why, "grant_id": gid, "user_id": grant_user},
                        ),
                    )
        # Revoked in the database first (a reveal is refused from now on); then in Vault. What
        # fails here stays unclean and the sweeper retries it.
        await self._revoke_in_vault([(g[0], g[1]) for g in grants], slots)
        return len(grants) + len(slots)

    async def prune_grants(
        self,
        org_id: str,
        before: datetime,
        *,
        held_site_ids: Sequence[str] = (),
        held_work_order_ids: Sequence[str] = (),
        batch: int = 500,
    ) -> int:
        """Retention of the grant registry (workorders' purge asks, per organisation): deletes
        finished grants that ended before `before`, batch by batch (one transaction each, with
        its audit event: counts only), so a crash leaves whole batches and the next call goes
        on. Held sites' and work orders' grants stay."""
        rules.require_id(org_id, "org_id")
        if before > self.clock():
            raise bad_input("before must not be in the future")
        total = 0
        while True:
            async with self.db.unit_of_work() as session:
                ids = await repo.ended_grants(
                    session,
                    org_id,
                    before,
                    batch,
                    held_site_ids=held_site_ids,
                    held_work_order_ids=held_work_order_ids,
                )
                count = await repo.delete_grants(session, org_id, ids)
                if count:
                    await record_event(
                        session,
                        AuditOutbox,
                        AuditRecord(
                            org_id=org_id,
                            actor_id="",
                            action="retention.purge",
                            outcome=Outcome.ALLOWED,
                            target_type="Organisation",
                            target_id=org_id,
                            details={"kind": "grant", "count": str(count)},
                        ),
                    )
            total += count
            if len(ids) < batch:
                return total

    async def _revoke_in_vault(
        self, grants: Sequence[tuple[str, str]], slots: Sequence[tuple[str, str]]
    ) -> None:
        if not grants and not slots:
            return
        done_grants = await self._revoke_many(grants)
        done_slots = await self._revoke_many(slots)
        async with self.db.unit_of_work() as session:
            await repo.mark_clean(session, grant_ids=done_grants, slot_ids=done_slots)

    async def _revoke_many(self, items: Sequence[tuple[str, str]], width: int = 8) -> list[str]:
        gate = asyncio.Semaphore(width)

        async def one(item_id: str, accessor: str) -> str | None:
            async with gate:
                try:
                    await self.vault.revoke_accessor(accessor)
                except DoorwardError:
                    return None
                return item_id

        results = await asyncio.gather(*(one(i, a) for i, a in items))
        return [r for r in results if r is not None]

    async def _revoke_quietly(self, accessor: str) -> None:
        try:
            await self.vault.revoke_accessor(accessor)
        except Exception:
            log.warning("could not revoke a wrapping token; its TTL will end it")

    # ---- metadata -------------------------------------------------------------------------

    async def get_refs(
        self, org_id: str, ref_ids: Sequence[str], site_ids: Sequence[str]
    ) -> list[repo.RefRow]:
        rules.require_id(org_id, "org_id")
        # One read, no transaction around it (no BEGIN, no COMMIT): every board asks.
        async with self.db.raw_reads() as raw:
            return await repo.list_refs(raw, org_id, ref_ids, site_ids)

    async def delete_site_secrets(self, principal: Principal, *, site_id: str) -> int:
        """Erasure of a customer's site: only for a verified ADMIN acting for it. Each secret's
        shred-ledger entry (kind secret_delete) is written before its Vault data goes, so a
        restore of an older backup deletes it again instead of bringing the door code back
        (the customer's own erasure entry comes only after every site, with its key)."""
        authorize(principal, Action.CUSTOMER_ERASE, Resource(principal.org_id))
        org_id = rules.require_id(principal.org_id, "org_id")
        actor_id = principal.user_id
        rules.require_id(site_id, "site_id")
        await self.revoke_grants(
            org_id=org_id, site_id=site_id, reason="deleted", actor_id=actor_id
        )
        now = self.clock()
        async with self.db.unit_of_work() as session:
            refs = await repo.site_refs(session, org_id, site_id)
            for ref in refs:
                await self._destroy_ref(
                    session, ref, now, actor_id, shred_ledger.SECRET_DELETE, "site_deleted"
                )
            return len(refs)

    async def retire_site_secrets(
        self, org_id: str, before: datetime, site_ids: Sequence[str]
    ) -> int:
        """Retention of site secrets (workorders' purge: these sites had no job within the
        period and no hold covers them): every version of their secrets not changed since
        `before` is destroyed in Vault, open grants to them revoked first; one `secret.delete`
        (reason retention) per secret, ids only. Each secret's shred-ledger entry (kind
        secret_retention) is written before its Vault data goes, so a restore of an older
        backup retires it again instead of bringing the door code back."""
        rules.require_id(org_id, "org_id")
        if before > self.clock():
            raise bad_input("before must not be in the future")
        if len(site_ids) > 500:
            raise bad_input("at most 500 sites per call")
        destroyed = 0
        for site_id in site_ids:
            rules.require_id(site_id, "site_id")
            now = self.clock()
            async with self.db.unit_of_work() as session:
                refs = [
                    r
                    for r in await repo.site_refs(session, org_id, site_id)
                    if r.updated_at < before
                ]
                if not refs:
                    continue
            await self.revoke_grants(org_id=org_id, site_id=site_id, reason="deleted")
            async with self.db.unit_of_work() as session:
                refs = [
                    r
                    for r in await repo.site_refs(session, org_id, site_id)
                    if r.updated_at < before
                ]
                for ref in refs:
                    await self._destroy_ref(
                        session, ref, now, "", shred_ledger.SECRET_RETENTION, "retention"
                    )
                destroyed += len(refs)
        return destroyed

    async def _destroy_ref(
        self,
        session: AsyncSession,
        ref: SecretRef,
        now: datetime,
        actor_id: str,
        kind: str,
        reason: str,
    ) -> None:
        """The one path that destroys a site secret (an ADMIN's deletion, the retention purge):
        the pseudonymous ledger entry first, then every version in Vault, then the reference
        marked deleted and one `secret.delete` with the reason, ids only."""
        if self.shred_ledger is not None:
            # Write-ahead, as the customer shred: a crash after this line leaves an entry whose
            # replay finishes the destruction, never a destroyed secret the ledger does not know.
            await asyncio.to_thread(
                shred_ledger.append_secret,
                self.shred_ledger,
                ref.org_id,
                ref.site_id,
                ref.id,
                ref.version,
                now,
                kind,
            )
        await self.vault.kv_destroy(ref.kv_path)
        ref.deleted_at = now
        await record_event(
            session,
            AuditOutbox,
            AuditRecord(
                org_id=ref.org_id,
                actor_id=actor_id,
                action="secret.delete",
                outcome=Outcome.ALLOWED,
                target_type="SecretRef",
                target_id=ref.id,
                secret_ref_id=ref.id,
                details={"site_id": ref.site_id, "reason": reason},
            ),
        )

    # ---- telemetry ------------------------------------------------------------------------

    async def load_pseudonym_key(self) -> bool:
        """Read the pseudonym key from Vault and install it in this process; False if Vault
        cannot give it yet (spans carry no enduser.pseudo.id until then)."""
        try:
            set_pseudonym_key(await self.vault.pseudonym_key())
        except (DoorwardError, VaultRejected, ValueError) as error:
            log.warning(
                "pseudonym key not available yet", extra={"fields": {"error": type(error).__name__}}
            )
            return False
        return True

    async def keep_pseudonym_key(self, interval: float = 5.0) -> None:
        """Background task: until the key is loaded, try again every `interval` seconds."""
        while not has_pseudonym_key():
            if await self.load_pseudonym_key():
                return
            await asyncio.sleep(interval)

    def pseudonym_key(self) -> bytes:
        """For GetPseudonymKey: the key this process holds (UNAVAILABLE until loaded)."""
        key = current_pseudonym_key()
        if key is None:
            raise DoorwardError(ErrorCode.UNAVAILABLE, "the pseudonym key is not loaded yet")
        return key

    # ---- customer data keys ---------------------------------------------------------------

    async def create_data_key(self, org_id: str, customer_id: str) -> tuple[bytes, bytes, int]:
        return await self.vault.data_key(rules.customer_key_name(org_id, customer_id))

    async def decrypt_data_key(
        self, org_id: str, customer_id: str, ciphertext: bytes
    ) -> tuple[bytes, int]:
        name = rules.customer_key_name(org_id, customer_id)
        if not ciphertext or len(ciphertext) > 4096:
            raise bad_input("ciphertext must be a wrapped data key")
        try:
            return await self.vault.decrypt_data_key(name, ciphertext)
        except VaultRejected as rejected:
            if "not found" in str(rejected):
                raise not_found("customer key") from None
            raise bad_input("the ciphertext is not a data key of this customer") from None

    async def destroy_customer_key(self, principal: Principal, customer_id: str) -> None:
        """Crypto-shredding on erasure: only for a verified ADMIN acting for it. A process's
        own credentials are never enough to destroy a customer's key."""
        authorize(principal, Action.CUSTOMER_ERASE, Resource(principal.org_id))
        await self._shred_customer_key(
            principal.org_id, customer_id, principal.user_id, shred_ledger.ERASURE
        )

    async def shred_retained_customers(
        self, org_id: str, before: datetime, customer_ids: Sequence[str]
    ) -> tuple[list[str], int]:
        """Retention of contact data (workorders' purge: these customers had no job within the
        period and no hold covers them): the same crypto-shredding as an erasure, so a restore
        of an older backup replays it. Workorders' own certificate is enough here, within
        bounds this side checks: `before` is at least MIN_CONTACT_RETENTION in the past and
        only keys made before it go, so the purge cannot be used to shred a customer added
        within the shortest period an administrator can set. Returns (ids whose key is gone
        now, keys destroyed by this call)."""
        rules.require_id(org_id, "org_id")
        if before > self.clock() - MIN_CONTACT_RETENTION:
            raise bad_input("before must be at least 30 days in the past")
        if len(customer_ids) > 100:
            raise bad_input("at most 100 customers per call")
        for customer_id in customer_ids:
            rules.require_id(customer_id, "customer_id")
        gone: list[str] = []
        destroyed = 0
        for customer_id in customer_ids:
            name = rules.customer_key_name(org_id, customer_id)
            created = await self.vault.key_created(name)
            if created is not None and created >= before:
                # Younger than the period: not this purge's to shred (logged by id only).
                log.warning(
                    "retention shred refused: key younger than the cut-off",
                    extra={"fields": {"org.id": org_id, "customer.id": customer_id}},
                )
                continue
            # A key already gone still gets its entry: replaying it is harmless, missing it
            # is not (a crash between an earlier run's ledger write and its commit).
            if await self._shred_customer_key(org_id, customer_id, "", shred_ledger.RETENTION):
                destroyed += 1
            gone.append(customer_id)
        return gone, destroyed

    async def _shred_customer_key(
        self, org_id: str, customer_id: str, actor_id: str, kind: str
    ) -> bool:
        """The one crypto-shred path (erasure and retention): the pseudonymous ledger entry
        first, then the key, then the audit event. True if a key was destroyed."""
        name = rules.customer_key_name(org_id, customer_id)
        if self.shred_ledger is not None:
            # Write-ahead: a restore of an older backup replays this (doorward backup restore).
            await asyncio.to_thread(
                shred_ledger.append, self.shred_ledger, org_id, customer_id, self.clock(), kind
            )
        destroyed = await self.vault.destroy_key(name)
        details = {"customer_id": customer_id, "result": str(destroyed).lower()}
        if kind != shred_ledger.ERASURE:
            details["reason"] = kind
        async with self.db.unit_of_work() as session:
            await record_event(
                session,
                AuditOutbox,
                AuditRecord(
                    org_id=org_id,
                    actor_id=actor_id,
                    action="customer.key.destroy",
                    outcome=Outcome.ALLOWED,
                    target_type="Customer",
                    target_id=customer_id,
                    details=details,
                ),
            )
        return destroyed

    # ---- sweeper --------------------------------------------------------------------------

    async def sweep_once(self, batch: int = 500) -> int:
        """Revoke Vault-side tokens of finished grants and slots; returns rows cleaned. A grant
        that ended by its clock alone is reported once, as it is cleaned: an audit event and a
        `doorward.grant.expire` span. Also refreshes the active-grants gauge."""
        now = self.clock()
        cleaned = 0
        async with self.db.unit_of_work() as session:
            grants = await repo.unclean_grant_rows(session, now, batch)
            consumed = [g.id for g in grants if g.consumed]
            pending = [(g.id, g.accessor) for g in grants if not g.consumed]
            done = consumed + await self._revoke_many(pending)
            await repo.mark_clean(session, grant_ids=done)
            finished = set(done)
            for grant in grants:
                if grant.expired and grant.id in finished:
                    await self._record_expiry(session, grant)
            cleaned += len(done)
            ACTIVE_GRANTS.set(await repo.count_active_grants(session, now))
        async with self.db.unit_of_work() as session:
            rows = await repo.unclean_slots(session, now, batch)
            consumed = [r[0] for r in rows if r[2]]
            pending = [(r[0], r[1]) for r in rows if not r[2]]
            done = consumed + await self._revoke_many(pending)
            await repo.mark_clean(session, slot_ids=done)
            cleaned += len(done)
        return cleaned

    async def _record_expiry(self, session: AsyncSession, grant: repo.FinishedGrant) -> None:
        with decision_span(
            SpanName.GRANT_EXPIRE,
            org_id=grant.org_id,
            actor_id=grant.user_id,
            work_order_id=grant.work_order_id,
            secret_ref_id=grant.secret_ref_id,
            grant_id=grant.id,
        ) as decision:
            decision.deny(Reason.EXPIRED)
            await record_event(
                session,
                AuditOutbox,
                AuditRecord(
                    org_id=grant.org_id,
                    actor_id="",
                    action="secret.grant.expire",
                    outcome=Outcome.ALLOWED,
                    target_type="SecretGrant",
                    target_id=grant.id,
                    work_order_id=grant.work_order_id,
                    secret_ref_id=grant.secret_ref_id,
                    details={"reason": "expired", "grant_id": grant.id, "user_id": grant.user_id},
                ),
            )

    async def sweep_forever(self, interval: float) -> None:
        while True:
            try:
                while await self.sweep_once() > 0:
                    pass
            except asyncio.CancelledError:
                raise
            except DoorwardError as error:
                log.warning("sweep postponed", extra={"fields": {"code": error.code.value}})
            except Exception:
                log.exception("sweep failed")
            await asyncio.sleep(interval)


def _step_up_denial(reason: str) -> Denial:
    return Denial(
        DoorwardError(
            ErrorCode.FORBIDDEN,
            "break-glass access needs a verified approval: a fresh one-time code of the "
            "requesting ADMIN (and of a second ADMIN when the organisation requires one)",
        ),
        reason,
    )


def _mismatch(what: str, reason: str = "invalid_token", *, burn_slot: str | None = None) -> Denial:
    return Denial(
        DoorwardError(ErrorCode.FORBIDDEN, f"the {what} token does not match"),
        reason,
        burn_slot=burn_slot,
    )


def _check_holder(
    row: UploadSlot | Grant, owner: str, what: str, user_id: str, token: str, now: datetime
) -> None:
    """What every single-use token goes through, in this order: the row is the caller's, the
    token is the row's, and the row is still usable (not used, revoked or expired)."""
    if row.user_id != user_id:
        raise Denial(
            DoorwardError(ErrorCode.FORBIDDEN, f"this {owner} belongs to another user"),
            "wrong_user",
        )
    if not rules.token_matches(token, row.token_hash):
        raise _mismatch(what)
    state = _state(row.used_at, row.revoked_at, row.expires_at, now)
    if state:
        raise Denial(_gone(what, state), state)


def _state(
    used_at: datetime | None, revoked_at: datetime | None, expires_at: datetime, now: datetime
) -> str:
    if used_at is not None:
        return "used"
    if revoked_at is not None:
        return "revoked"
    if expires_at <= now:
        return "expired"
    return ""


def _job_error(why: str) -> DoorwardError:
    if why == "outside_window":
        return rules.outside_window()
    if why.startswith("status_"):
        return DoorwardError(
            ErrorCode.OUTSIDE_ACCESS_WINDOW, "the work order is not dispatched or in progress"
        )
    if why == "work_order_not_found":
        return not_found("work order")
    return DoorwardError(ErrorCode.FORBIDDEN, _JOB_MESSAGES.get(why, "access is not allowed now"))


_JOB_MESSAGES = {
    "not_assignee": "only the work order's assignee may get its secrets",
    "secret_not_attached": "this secret does not belong to the work order",
}
