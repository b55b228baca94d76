"""Break-glass: an ADMIN reaches a secret outside the normal rules, proving it at every step.

The flow (contract section "Break-glass"):
1. requestBreakGlassAccess: an ADMIN, a reason, and a fresh one-time code. identity checks the
   code (VerifyStepUp, replay refused) and signs a step-up assertion bound to this request id,
   secret, work order and reason. Without a second-approver policy the request is APPROVED at
   once and the grant is issued in the same call.
2. With the policy on, the request stays PENDING until approveBreakGlass by another ADMIN (never
   the requester), who types their own fresh code (a second assertion, bound to the request id),
   or denyBreakGlass. Requests expire after 15 minutes (the assertions' lifetime).
3. Once approved, the requester's `grant` is issued when they read it (once): secrets verifies
   the caller's access token AND both assertions before it issues anything, and issues at most
   one grant per request id. workorders alone cannot mint one: it has no way to make identity
   sign an assertion without a real ADMIN token and that ADMIN's fresh code.
Every step is audited (`secret.break_glass.request|approve|deny|grant`; refusals, e.g. of an
expired request, as DENIED with their reason) and raises a `security.alert`.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.audit_client import Outcome
from doorward_kit.auth import (
    PURPOSE_BREAK_GLASS_APPROVE,
    PURPOSE_BREAK_GLASS_REQUEST,
    STEP_UP_LIFETIME_SECONDS,
    Principal,
    break_glass_binding,
)
from doorward_kit.errors import DoorwardError, ErrorCode, bad_input, conflict, not_found
from doorward_kit.policy import Action, Resource, authorize
from services.workorders.models import BreakGlassRequest
from services.workorders.ports import BreakGlassProof, GrantView
from services.workorders.repository import Repository
from services.workorders.service import MIN_BREAK_GLASS_REASON, Refusal, WorkOrdersService

MAX_REASON = 500
# The request lives as long as identity's step-up assertions do: after that no grant can be
# issued for it anyway.
REQUEST_TTL = timedelta(seconds=STEP_UP_LIFETIME_SECONDS)


class BreakGlassStatus(enum.StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    DENIED = "DENIED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class BreakGlassView:
    row: BreakGlassRequest
    status: BreakGlassStatus
    grant: GrantView | None = None
    # The requester may still collect the grant (approved, unexpired, not yet issued).
    claimable: bool = False


class BreakGlass:
    def __init__(self, orders: WorkOrdersService) -> None:
        self.orders = orders

    # ---- policy -------------------------------------------------------------------------------

    async def policy(self, session: AsyncSession, principal: Principal) -> bool:
        authorize(principal, Action.SECRET_BREAK_GLASS, Resource(principal.org_id))
        row = await Repository(session).org_settings(principal.org_id)
        return bool(row.break_glass_second_approver)

    async def update_policy(
        self, session: AsyncSession, principal: Principal, require_second_approver: bool
    ) -> bool:
        authorize(principal, Action.SECRET_BREAK_GLASS, Resource(principal.org_id))
        value = await Repository(session).save_break_glass_policy(
            principal.org_id, require_second_approver
        )
        await self.orders.audit(
            session,
            principal,
            "org.break_glass_policy.update",
            target_type="Organisation",
            target_id=principal.org_id,
            details={"mode": "second_approver" if value else "single"},
        )
        await self._alert(session, principal, "", "break_glass_policy")
        return value

    # ---- the steps ----------------------------------------------------------------------------

    def status_of(self, row: BreakGlassRequest) -> BreakGlassStatus:
        status = BreakGlassStatus(row.status)
        if status is BreakGlassStatus.PENDING and row.expires_at <= self.orders.clock():
            return BreakGlassStatus.EXPIRED
        return status

    def _view(self, row: BreakGlassRequest, grant: GrantView | None = None) -> BreakGlassView:
        status = self.status_of(row)
        claimable = (
            status is BreakGlassStatus.APPROVED
            and row.grant_id is None
            and row.expires_at > self.orders.clock()
        )
        return BreakGlassView(row=row, status=status, grant=grant, claimable=claimable)

    async def request(
        self,
        session: AsyncSession,
        principal: Principal,
        secret_ref_id: str,
        reason: str,
        otp: str,
        work_order_id: str | None,
    ) -> BreakGlassView:
        authorize(principal, Action.SECRET_BREAK_GLASS, Resource(principal.org_id))
        reason = reason.strip()
        if len(reason) < MIN_BREAK_GLASS_REASON:
            raise bad_input(
                f"break-glass access needs a reason of at least {MIN_BREAK_GLASS_REASON} characters"
            )
        if len(reason) > MAX_REASON:
            raise bad_input(f"the reason must be at most {MAX_REASON} characters")
        if not otp or not otp.strip():
            raise bad_input("break-glass access needs a fresh one-time code (otp)")
        site = await self.orders._site_of_secret(session, principal, secret_ref_id)
        repo = Repository(session)
        if work_order_id:
            order = await self.orders.order_for(session, principal, work_order_id)
            if order.site_id != site.id:
                raise conflict("the secret belongs to another site than the work order")
        else:
            latest = await repo.latest_order_at_site(principal.org_id, site.id)
            if latest is None:
                raise conflict("break-glass access needs a work order at the secret's site")
            order = latest
        request_id = str(uuid.uuid4())
        step_up = await self._step_up(
            principal,
            otp,
            PURPOSE_BREAK_GLASS_REQUEST,
            break_glass_binding(request_id, secret_ref_id, order.id, reason),
        )
        second = bool((await repo.org_settings(principal.org_id)).break_glass_second_approver)
        now = self.orders.clock()
        row = BreakGlassRequest(
            id=request_id,
            org_id=principal.org_id,
            requester_id=principal.user_id,
            secret_ref_id=secret_ref_id,
            work_order_id=order.id,
            site_id=site.id,
            reason=reason,
            status=(BreakGlassStatus.PENDING if second else BreakGlassStatus.APPROVED).value,
            requires_approval=second,
            step_up=step_up,
            decided_at=None if second else now,
            created_at=now,
            expires_at=now + REQUEST_TTL,
        )
        repo.add_break_glass_request(row)
        await session.flush()
        await self._record(session, principal, row, "secret.break_glass.request")
        if second:
            return self._view(row)
        grant = await self._issue(session, principal, row)
        return self._view(row, grant)

    async def approve(
        self, session: AsyncSession, principal: Principal, request_id: str, otp: str
    ) -> BreakGlassView:
        authorize(principal, Action.SECRET_BREAK_GLASS, Resource(principal.org_id))
        if not otp or not otp.strip():
            raise bad_input("approving break-glass access needs a fresh one-time code (otp)")
        row = await self._pending(session, principal, request_id)
        if row.requester_id == principal.user_id:
            raise Refusal(
                ErrorCode.FORBIDDEN,
                "another ADMIN must approve this request; nobody approves their own",
                "own_request",
            )
        row.approval = await self._step_up(principal, otp, PURPOSE_BREAK_GLASS_APPROVE, row.id)
        row.approver_id = principal.user_id
        row.status = BreakGlassStatus.APPROVED.value
        row.decided_at = self.orders.clock()
        await self._record(session, principal, row, "secret.break_glass.approve")
        return self._view(row)

    async def deny(
        self, session: AsyncSession, principal: Principal, request_id: str
    ) -> BreakGlassView:
        """Any ADMIN of the organisation may refuse (or the requester withdraw) a pending one."""
        authorize(principal, Action.SECRET_BREAK_GLASS, Resource(principal.org_id))
        row = await self._pending(session, principal, request_id)
        row.approver_id = principal.user_id
        row.status = BreakGlassStatus.DENIED.value
        row.decided_at = self.orders.clock()
        await self._record(session, principal, row, "secret.break_glass.deny")
        return self._view(row)

    async def requests(
        self, session: AsyncSession, principal: Principal, status: BreakGlassStatus | None
    ) -> list[BreakGlassView]:
        authorize(principal, Action.SECRET_BREAK_GLASS, Resource(principal.org_id))
        stored: list[str] | None = None
        if status is BreakGlassStatus.EXPIRED:
            stored = [BreakGlassStatus.PENDING.value, BreakGlassStatus.EXPIRED.value]
        elif status is not None:
            stored = [status.value]
        rows = await Repository(session).break_glass_requests(principal.org_id, stored)
        views = [self._view(r) for r in rows]
        return [v for v in views if status is None or v.status is status]

    async def claim(
        self, session: AsyncSession, principal: Principal, request_id: str
    ) -> GrantView | None:
        """The approved request's grant, issued once, to its requester only."""
        authorize(principal, Action.SECRET_BREAK_GLASS, Resource(principal.org_id))
        row = await Repository(session).break_glass_request(
            principal.org_id, request_id, for_update=True
        )
        if row is None or row.requester_id != principal.user_id:
            return None
        if not self._view(row).claimable:
            return None
        return await self._issue(session, principal, row)

    # ---- helpers ------------------------------------------------------------------------------

    async def _pending(
        self, session: AsyncSession, principal: Principal, request_id: str
    ) -> BreakGlassRequest:
        row = await Repository(session).break_glass_request(
            principal.org_id, request_id, for_update=True
        )
        if row is None:
            raise not_found("break-glass request")
        status = self.status_of(row)
        if status is not BreakGlassStatus.PENDING:
            # A Refusal: the adapter audits it (DENIED, reason `expired`, `approved`, ...) in a
            # transaction of its own. Expiry itself needs no write: the status is computed.
            raise Refusal(
                ErrorCode.CONFLICT,
                f"this break-glass request is {status.value}, not PENDING",
                status.value.lower(),
            )
        return row

    async def _step_up(self, principal: Principal, otp: str, purpose: str, binding: str) -> str:
        try:
            return await self.orders.identity.verify_step_up(
                otp=otp.strip(), purpose=purpose, binding=binding, bearer=principal.token
            )
        except DoorwardError as error:
            if error.code in (ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED):
                raise
            raise Refusal(
                ErrorCode.FORBIDDEN,
                "the one-time code is wrong or was already used",
                "step_up_refused",
            ) from None

    async def _issue(
        self, session: AsyncSession, principal: Principal, row: BreakGlassRequest
    ) -> GrantView:
        grant = await self.orders.secrets.issue_grant(
            work_order_id=row.work_order_id,
            secret_ref_id=row.secret_ref_id,
            window_start=None,
            window_end=None,
            break_glass=BreakGlassProof(
                request_id=row.id,
                step_up=row.step_up,
                approvals=(row.approval,) if row.approval else (),
            ),
            reason=row.reason,
            bearer=principal.token,
        )
        row.grant_id = grant.id
        await self.orders.audit(
            session,
            principal,
            "secret.break_glass.grant",
            target_type="SecretRef",
            target_id=row.secret_ref_id,
            work_order_id=row.work_order_id,
            secret_ref_id=row.secret_ref_id,
            details={"request_id": row.id, "grant_id": grant.id, "mode": "break_glass"},
        )
        return grant

    async def _record(
        self, session: AsyncSession, principal: Principal, row: BreakGlassRequest, action: str
    ) -> None:
        details: dict[str, Any] = {
            "request_id": row.id,
            "status": row.status,
            "mode": "second_approver" if row.requires_approval else "single",
        }
        if row.requester_id != principal.user_id:
            details["user_id"] = row.requester_id
        await self.orders.audit(
            session,
            principal,
            action,
            outcome=Outcome.ALLOWED,
            target_type="SecretRef",
            target_id=row.secret_ref_id,
            work_order_id=row.work_order_id,
            secret_ref_id=row.secret_ref_id,
            details=details,
        )
        await self._alert(session, principal, row.id, action.rsplit(".", 1)[-1])

    async def _alert(
        self, session: AsyncSession, principal: Principal, request_id: str, step: str
    ) -> None:
        details: dict[str, Any] = {"reason": "break_glass", "rule": "break_glass", "mode": step}
        if request_id:
            details["request_id"] = request_id
        await self.orders.audit(
            session,
            principal,
            "security.alert",
            target_type="BreakGlassRequest" if request_id else "Organisation",
            target_id=request_id or principal.org_id,
            details=details,
        )
