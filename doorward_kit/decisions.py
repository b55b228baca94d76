"""Access decisions as first-class spans: one convention for every service (CONTRACT.md
"Telemetry").

Span names (`SpanName`): `doorward.access.decide` (a policy or rule decision: workorders'
access requests and assignments, identity's denials, any `authorize` refusal),
`doorward.secret.reveal`, `doorward.grant.issue`, `doorward.grant.revoke`,
`doorward.grant.expire` (secrets).

Attributes: `doorward.decision` (allow | deny), `doorward.decision.reason` (one word of
`Reason`, never free text), `enduser.pseudo.id` (a keyed HMAC of the user id,
doorward_kit.pseudonym), `doorward.work_order.id`, `doorward.secret_ref.id`,
`doorward.grant.id`, `doorward.audit.event_id`, `doorward.org.id` (the trace store scopes a
trace to its organisation by it), and `doorward.access.action` (the policy action or mutation,
a dotted word) on `doorward.access.decide`.

A denial is an answer, not a fault: its span keeps status UNSET. Only a decision that could
not be carried out (Vault or the audit trail failing, an unexpected exception) is ERROR.

Audit events recorded while a decision span is open name themselves on it
(`note_audit_event`, called by doorward_kit.audit_client): the span of a denial names the
DENIED/ERROR event, the span of an allow its first ALLOWED event. So the trace leads to the
audit event and the audit event (by its trace id) back to the trace without any caller
threading ids through.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from doorward_kit import metrics
from doorward_kit.pseudonym import pseudonym


class SpanName(enum.StrEnum):
    ACCESS_DECIDE = "doorward.access.decide"
    SECRET_REVEAL = "doorward.secret.reveal"
    GRANT_ISSUE = "doorward.grant.issue"
    GRANT_REVOKE = "doorward.grant.revoke"
    GRANT_EXPIRE = "doorward.grant.expire"


class Decision(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Reason(enum.StrEnum):
    """The fixed list of `doorward.decision.reason` values (and of the metrics' reason label)."""

    # allow
    IN_WINDOW = "in_window"  # the assignee, in a region they hold, inside the access window
    BREAK_GLASS = "break_glass"  # an ADMIN with a verified break-glass approval
    POLICY = "policy"  # the policy table allows the role in this scope
    AUTHENTICATED = "authenticated"  # identity: credentials (and MFA) verified
    # deny
    NOT_ASSIGNED = "not_assigned"
    OUTSIDE_WINDOW = "outside_window"
    WRONG_STATUS = "wrong_status"
    CONSUMED = "consumed"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DEACTIVATED = "deactivated"
    ROLE_DENIED = "role_denied"
    REGION_DENIED = "region_denied"
    VAULT_ERROR = "vault_error"
    OTHER_ORG = "other_org"
    NOT_FOUND = "not_found"
    NOT_ATTACHED = "not_attached"
    NO_VALUE = "no_value"
    WRONG_USER = "wrong_user"
    INVALID_TOKEN = "invalid_token"
    STEP_UP_INVALID = "step_up_invalid"
    RESTRICTED_SESSION = "restricted_session"
    SESSION_ENDED = "session_ended"
    BAD_CREDENTIALS = "bad_credentials"
    MFA_REQUIRED = "mfa_required"
    RATE_LIMITED = "rate_limited"
    INVALID_INPUT = "invalid_input"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    ERROR = "error"
    OTHER = "other"


# Reasons that mean "could not decide" rather than "decided no": the span is ERROR.
FAULTS = frozenset({Reason.VAULT_ERROR, Reason.AUDIT_UNAVAILABLE, Reason.ERROR})

# The words services already use for refusals (audit details, revocation reasons), mapped
# onto the fixed list. Anything unknown is OTHER: a span never carries a word we did not list.
_RAW: dict[str, Reason] = {
    "not_assignee": Reason.NOT_ASSIGNED,
    "not_allowed": Reason.NOT_ASSIGNED,
    "reassigned": Reason.NOT_ASSIGNED,
    "unassigned": Reason.NOT_ASSIGNED,
    "rescheduled": Reason.OUTSIDE_WINDOW,
    "used": Reason.CONSUMED,
    "request_used": Reason.CONSUMED,
    "deleted": Reason.REVOKED,
    "site_deleted": Reason.REVOKED,
    "erased": Reason.REVOKED,
    "completed": Reason.WRONG_STATUS,
    "cancelled": Reason.WRONG_STATUS,
    "vault_refused": Reason.VAULT_ERROR,
    "vault_unavailable": Reason.VAULT_ERROR,
    "version_mismatch": Reason.VAULT_ERROR,
    "vault": Reason.VAULT_ERROR,
    "work_order_not_found": Reason.NOT_FOUND,
    "secret_not_attached": Reason.NOT_ATTACHED,
    "too_many_grants": Reason.RATE_LIMITED,
    "not_admin": Reason.ROLE_DENIED,
    "another_organisation": Reason.OTHER_ORG,
    "restricted": Reason.RESTRICTED_SESSION,
    "invalid_credentials": Reason.BAD_CREDENTIALS,
    "bad_password": Reason.BAD_CREDENTIALS,
    "locked": Reason.RATE_LIMITED,
    "throttled": Reason.RATE_LIMITED,
    "session_revoked": Reason.SESSION_ENDED,
    "session_expired": Reason.SESSION_ENDED,
    "inactive": Reason.DEACTIVATED,
}

# Error codes (doorward_kit.errors.ErrorCode values) -> a reason, for refusals that carry none.
_CODES: dict[str, Reason] = {
    "FORBIDDEN": Reason.ROLE_DENIED,
    "NOT_FOUND": Reason.NOT_FOUND,
    "OUTSIDE_ACCESS_WINDOW": Reason.OUTSIDE_WINDOW,
    "GONE": Reason.REVOKED,
    "RATE_LIMITED": Reason.RATE_LIMITED,
    "UNAUTHENTICATED": Reason.BAD_CREDENTIALS,
    "BAD_USER_INPUT": Reason.INVALID_INPUT,
    "CONFLICT": Reason.INVALID_INPUT,
    "UNAVAILABLE": Reason.ERROR,
    "INTERNAL": Reason.ERROR,
}


def reason_of(raw: str | None) -> Reason:
    """A service's refusal word as one of the fixed reasons ('other' when unknown)."""
    word = (raw or "").strip().lower()
    if not word:
        return Reason.OTHER
    try:
        return Reason(word)
    except ValueError:
        pass
    if word in _RAW:
        return _RAW[word]
    if word.startswith("status_"):
        return Reason.WRONG_STATUS
    if word.startswith(("step_up", "approval", "approver")):
        return Reason.STEP_UP_INVALID
    return Reason.OTHER


def reason_of_error(error: BaseException) -> Reason:
    """The reason an exception stands for: its own `reason` word if it carries one (policy
    refusals, workorders' Refusal, secrets' Denial), else its error code."""
    raw = getattr(error, "reason", None)
    if isinstance(raw, str) and raw:
        found = reason_of(raw)
        if found is not Reason.OTHER:
            return found
    code = getattr(error, "code", None)
    value = getattr(code, "value", None)
    if isinstance(value, str) and value in _CODES:
        return _CODES[value]
    return Reason.ERROR


class DecisionSpan:
    """The open decision: what `decision_span` yields. Set facts as they become known."""

    def __init__(self, span: trace.Span, name: SpanName) -> None:
        self.span = span
        self.name = name
        self.decision: Decision | None = None
        self.reason: Reason | None = None
        self.actor_pseudo_id = ""
        self._allowed_event = ""
        self._denied_event = ""

    def ids(
        self,
        *,
        work_order_id: str | None = None,
        secret_ref_id: str | None = None,
        grant_id: str | None = None,
    ) -> None:
        for key, value in (
            ("doorward.work_order.id", work_order_id),
            ("doorward.secret_ref.id", secret_ref_id),
            ("doorward.grant.id", grant_id),
        ):
            if value:
                self.span.set_attribute(key, value)

    def org(self, org_id: str | None) -> None:
        """The organisation the decision is about: the trace store scopes traces by it."""
        if org_id:
            self.span.set_attribute("doorward.org.id", org_id)

    def actor(self, user_id: str | None) -> None:
        pseudo = pseudonym(user_id or "")
        if pseudo:
            self.actor_pseudo_id = pseudo
            self.span.set_attribute("enduser.pseudo.id", pseudo)

    def allow(self, reason: Reason = Reason.POLICY) -> None:
        self.decision, self.reason = Decision.ALLOW, reason

    def deny(self, reason: Reason | str) -> None:
        self.decision = Decision.DENY
        self.reason = reason if isinstance(reason, Reason) else reason_of(reason)

    def audit_event(self, event_id: str, outcome: str) -> None:
        if outcome == "ALLOWED":
            self._allowed_event = self._allowed_event or event_id
        else:
            self._denied_event = event_id

    def _finish(self) -> None:
        decision = self.decision or Decision.DENY
        reason = self.reason or Reason.OTHER
        self.span.set_attribute("doorward.decision", decision.value)
        self.span.set_attribute("doorward.decision.reason", reason.value)
        event = self._denied_event if decision is Decision.DENY else self._allowed_event
        event = event or self._allowed_event or self._denied_event
        if event:
            self.span.set_attribute("doorward.audit.event_id", event)
        if decision is Decision.DENY and reason in FAULTS:
            self.span.set_status(Status(StatusCode.ERROR))
        _count(self.name, decision, reason, self.actor_pseudo_id)


_current: ContextVar[DecisionSpan | None] = ContextVar("doorward_decision", default=None)
_tracer = trace.get_tracer("doorward.decisions")


@contextmanager
def decision_span(
    name: SpanName,
    *,
    org_id: str | None = None,
    actor_id: str | None = None,
    action: str | None = None,
    work_order_id: str | None = None,
    secret_ref_id: str | None = None,
    grant_id: str | None = None,
) -> Iterator[DecisionSpan]:
    """Open a decision span (a child of the current span) for the block.

    Leaving the block normally is an allow (reason `policy` unless the block said otherwise);
    an exception is a deny with the reason the exception carries (`reason_of_error`) unless the
    block already called `deny`. Exceptions propagate unchanged; the span never records their
    message (it can quote input) and a denial never turns the span into an error."""
    with _tracer.start_as_current_span(
        name.value, record_exception=False, set_status_on_exception=False
    ) as span:
        current = DecisionSpan(span, name)
        if action:
            span.set_attribute("doorward.access.action", action)
        current.org(org_id)
        current.ids(work_order_id=work_order_id, secret_ref_id=secret_ref_id, grant_id=grant_id)
        current.actor(actor_id)
        token = _current.set(current)
        try:
            yield current
        except BaseException as error:
            if current.decision is not Decision.DENY:
                current.deny(reason_of_error(error))
            raise
        else:
            if current.decision is None:
                current.allow()
        finally:
            _current.reset(token)
            current._finish()


def current_decision() -> DecisionSpan | None:
    return _current.get()


def note_audit_event(event_id: str, outcome: Any) -> None:
    """Called for every audit event a service records: the open decision span names it."""
    current = _current.get()
    if current is not None and event_id:
        current.audit_event(event_id, str(getattr(outcome, "value", outcome)))


def record_denial(
    name: SpanName,
    reason: Reason | str,
    *,
    org_id: str | None = None,
    actor_id: str | None = None,
    action: str | None = None,
    **ids: str | None,
) -> None:
    """A complete deny span for a refusal made outside any decision span (e.g. a policy
    refusal deep in a resolver). Inside an open decision span it does nothing: that span will
    carry the refusal itself."""
    if _current.get() is not None:
        return
    with decision_span(name, org_id=org_id, actor_id=actor_id, action=action, **ids) as span:
        span.deny(reason)


def _count(name: SpanName, decision: Decision, reason: Reason, actor: str) -> None:
    if name is SpanName.SECRET_REVEAL:
        metrics.SECRET_REVEALS.add(decision=decision.value, reason=reason.value)
    elif name is SpanName.GRANT_ISSUE:
        metrics.SECRET_GRANTS.add(decision=decision.value, reason=reason.value)
    if actor and name in (SpanName.SECRET_REVEAL, SpanName.GRANT_ISSUE, SpanName.ACCESS_DECIDE):
        metrics.ACCESS_DECISIONS_BY_ACTOR.add(decision=decision.value, actor=actor)
