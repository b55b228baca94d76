"""The one authorization policy: organisation x role x region x ownership. Deny by default.

Every adapter asks `authorize(principal, action, resource)` before it touches data. An action
missing from RULES is refused for everybody; a role missing from an action's rule is refused.
Scopes say what else must hold:
  ORG       same organisation (always required)
  REGION    the resource's region is one the caller holds
  ASSIGNED  the caller is the resource's assignee (their own job)
  SELF      the resource is the caller themself
  IN_WINDOW the caller is the assignee and the job is inside its access window
A restricted token (password change or MFA enrolment pending) is allowed nothing here: the only
things it may do (changePassword, enrollMfa, confirmMfa) are not policy actions.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from doorward_kit.auth import Principal, Role, TokenScope
from doorward_kit.decisions import SpanName, record_denial
from doorward_kit.errors import DoorwardError, ErrorCode


class Scope(enum.Enum):
    ORG = "org"
    REGION = "region"
    ASSIGNED = "assigned"
    SELF = "self"
    IN_WINDOW = "in_window"


class Action(enum.StrEnum):
    USER_READ = "user.read"
    USER_CREATE = "user.create"
    USER_UPDATE = "user.update"
    USER_DEACTIVATE = "user.deactivate"
    REGION_READ = "region.read"
    REGION_CREATE = "region.create"
    CUSTOMER_READ = "customer.read"
    CUSTOMER_CONTACT_READ = "customer.contact.read"
    CUSTOMER_CREATE = "customer.create"
    CUSTOMER_EXPORT = "customer.export"
    CUSTOMER_ERASE = "customer.erase"
    CUSTOMER_RESTRICT = "customer.restrict"
    SESSION_POLICY_READ = "org.session_policy.read"
    RETENTION_MANAGE = "org.retention.manage"
    SESSION_POLICY_UPDATE = "org.session_policy.update"
    SITE_READ = "site.read"
    SITE_CREATE = "site.create"
    WORKORDER_READ = "workorder.read"
    WORKORDER_CREATE = "workorder.create"
    WORKORDER_UPDATE = "workorder.update"
    WORKORDER_ASSIGN = "workorder.assign"
    WORKORDER_DISPATCH = "workorder.dispatch"
    WORKORDER_START = "workorder.start"
    WORKORDER_COMPLETE = "workorder.complete"
    WORKORDER_CANCEL = "workorder.cancel"
    WORKORDER_INVOICE_EDIT = "workorder.invoice.edit"
    WORKORDER_NOTE_ADD = "workorder.note.add"
    SECRET_UPLOAD = "secret.upload"
    SECRET_ROTATE = "secret.rotate"
    SECRET_ATTACH = "secret.attach"
    SECRET_REF_READ = "secret.ref.read"
    SECRET_ACCESS_REQUEST = "secret.access.request"
    SECRET_BREAK_GLASS = "secret.break_glass"
    AUDIT_READ = "audit.read"
    AUDIT_OWN_HISTORY_READ = "audit.own_history.read"
    AUDIT_INTEGRITY_READ = "audit.integrity.read"
    SECURITY_ALERT_READ = "security.alert.read"


_A, _D, _T, _S, _U = Role.ADMIN, Role.DISPATCHER, Role.TECHNICIAN, Role.SUBCONTRACTOR, Role.AUDITOR
_FIELD = {_T: Scope.ASSIGNED, _S: Scope.ASSIGNED}
_PLANNING = {_A: Scope.ORG, _D: Scope.REGION}

# action -> {role: scope}. Anything absent is denied.
RULES: dict[Action, dict[Role, Scope]] = {
    Action.USER_READ: {
        _A: Scope.ORG,
        _U: Scope.ORG,
        _D: Scope.REGION,
        _T: Scope.SELF,
        _S: Scope.SELF,
    },
    Action.USER_CREATE: {_A: Scope.ORG},
    Action.USER_UPDATE: {_A: Scope.ORG},
    Action.USER_DEACTIVATE: {_A: Scope.ORG},
    Action.REGION_READ: {
        _A: Scope.ORG,
        _U: Scope.ORG,
        _D: Scope.REGION,
        _T: Scope.REGION,
        _S: Scope.REGION,
    },
    Action.REGION_CREATE: {_A: Scope.ORG},
    Action.CUSTOMER_READ: {**_PLANNING, **_FIELD},
    Action.CUSTOMER_CONTACT_READ: {**_PLANNING, _T: Scope.ASSIGNED, _S: Scope.IN_WINDOW},
    Action.CUSTOMER_CREATE: dict(_PLANNING),
    Action.CUSTOMER_EXPORT: {_A: Scope.ORG},
    Action.CUSTOMER_ERASE: {_A: Scope.ORG},
    # GDPR Art. 18 restriction and its lifting: a data-protection decision, ADMIN only.
    Action.CUSTOMER_RESTRICT: {_A: Scope.ORG},
    # Automatic logoff: auditors may check it, only admins change it.
    Action.SESSION_POLICY_READ: {_A: Scope.ORG, _U: Scope.ORG},
    Action.SESSION_POLICY_UPDATE: {_A: Scope.ORG},
    # Retention policy and legal holds (reading them too: a hold's reason may name a case).
    Action.RETENTION_MANAGE: {_A: Scope.ORG},
    Action.SITE_READ: {**_PLANNING, **_FIELD},
    Action.SITE_CREATE: dict(_PLANNING),
    Action.WORKORDER_READ: {**_PLANNING, **_FIELD},
    Action.WORKORDER_CREATE: dict(_PLANNING),
    Action.WORKORDER_UPDATE: dict(_PLANNING),
    Action.WORKORDER_ASSIGN: dict(_PLANNING),
    Action.WORKORDER_DISPATCH: dict(_PLANNING),
    Action.WORKORDER_START: {**_PLANNING, **_FIELD},
    Action.WORKORDER_COMPLETE: {**_PLANNING, **_FIELD},
    Action.WORKORDER_CANCEL: dict(_PLANNING),
    Action.WORKORDER_INVOICE_EDIT: dict(_PLANNING),
    Action.WORKORDER_NOTE_ADD: {**_PLANNING, **_FIELD},
    Action.SECRET_UPLOAD: dict(_PLANNING),
    Action.SECRET_ROTATE: dict(_PLANNING),
    Action.SECRET_ATTACH: dict(_PLANNING),
    Action.SECRET_REF_READ: {**_PLANNING, **_FIELD},
    # Only the job's assignee, only in the window: dispatchers and admins never see values.
    Action.SECRET_ACCESS_REQUEST: {_T: Scope.IN_WINDOW, _S: Scope.IN_WINDOW},
    Action.SECRET_BREAK_GLASS: {_A: Scope.ORG},
    Action.AUDIT_READ: {_A: Scope.ORG, _U: Scope.ORG},
    # Everybody may read their own User.accessHistory (transparency; the GDPR right of access
    # to their own records) and nothing else of the trail; AUDIT_READ covers everyone's.
    Action.AUDIT_OWN_HISTORY_READ: {role: Scope.SELF for role in Role},
    Action.AUDIT_INTEGRITY_READ: {_A: Scope.ORG, _U: Scope.ORG},
    Action.SECURITY_ALERT_READ: {_A: Scope.ORG, _U: Scope.ORG},
}


@dataclass(frozen=True, slots=True)
class Resource:
    """What the action touches. Unknown facts stay None and can only make a check fail."""

    org_id: str
    region_id: str | None = None
    assignee_id: str | None = None
    user_id: str | None = None
    in_window: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    # One word of doorward_kit.decisions.Reason for spans and metrics (the reason above is
    # for people): policy, other_org, restricted_session, role_denied, region_denied,
    # not_assigned, outside_window.
    code: str = "policy"


class PolicyDenied(DoorwardError):
    """FORBIDDEN from `authorize`, carrying the policy's reason word for the decision span."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(ErrorCode.FORBIDDEN, message)
        self.reason = reason


def _scope_holds(principal: Principal, scope: Scope, resource: Resource) -> bool:
    if scope is Scope.ORG:
        return True
    if scope is Scope.REGION:
        return principal.holds_region(resource.region_id)
    if scope is Scope.SELF:
        return resource.user_id is not None and resource.user_id == principal.user_id
    assigned = resource.assignee_id is not None and resource.assignee_id == principal.user_id
    if scope is Scope.ASSIGNED:
        # Their own job, and still only in a region they hold.
        return assigned and principal.holds_region(resource.region_id)
    if scope is Scope.IN_WINDOW:
        return assigned and principal.holds_region(resource.region_id) and resource.in_window
    return False


def _why_not(principal: Principal, scope: Scope, resource: Resource) -> str:
    """The reason word for a scope that does not hold (see Decision.code)."""
    assigned = resource.assignee_id is not None and resource.assignee_id == principal.user_id
    if scope in (Scope.ASSIGNED, Scope.IN_WINDOW) and not assigned:
        return "not_assigned"
    if scope in (Scope.REGION, Scope.ASSIGNED, Scope.IN_WINDOW) and not principal.holds_region(
        resource.region_id
    ):
        return "region_denied"
    if scope is Scope.IN_WINDOW:
        return "outside_window"
    return "role_denied"


def decide(principal: Principal, action: Action, resource: Resource) -> Decision:
    # An empty org id on both sides would otherwise compare equal.
    if not resource.org_id or principal.org_id != resource.org_id:
        return Decision(False, "another organisation", "other_org")
    if principal.scope is not TokenScope.FULL:
        return Decision(False, "restricted session", "restricted_session")
    rule = RULES.get(action)
    if not rule:
        return Decision(False, f"no rule allows {action.value}", "role_denied")
    why = "role_denied"
    for role in principal.roles:
        scope = rule.get(role)
        if scope is None:
            continue
        if _scope_holds(principal, scope, resource):
            return Decision(True, f"{role.value} ({scope.value})")
        why = _why_not(principal, scope, resource)
    return Decision(False, f"not allowed to {action.value}", why)


def can(principal: Principal, action: Action, resource: Resource) -> bool:
    return decide(principal, action, resource).allowed


def authorize(principal: Principal, action: Action, resource: Resource) -> None:
    """Raise FORBIDDEN unless the policy allows it. Callers that must not reveal existence
    (reads by id) should map a refusal to NOT_FOUND themselves."""
    decision = decide(principal, action, resource)
    if not decision.allowed:
        # Inside an open decision span that span carries the refusal; elsewhere (a read deep
        # in a resolver) the refusal gets a doorward.access.decide span of its own.
        record_denial(
            SpanName.ACCESS_DECIDE,
            decision.code,
            org_id=principal.org_id,
            actor_id=principal.user_id,
            action=action.value,
        )
        raise PolicyDenied(f"you may not {action.value.replace('.', ' ')}", decision.code)


def can_read_user(
    principal: Principal, org_id: str, user_id: str, region_ids: Iterable[str]
) -> bool:
    """A person is visible through any region they hold; holding none, only by a rule that
    needs no region (the organisation or themself)."""
    regions: list[str | None] = [*sorted(region_ids)] or [None]
    return any(
        can(principal, Action.USER_READ, Resource(org_id=org_id, region_id=r, user_id=user_id))
        for r in regions
    )


def _scopes(principal: Principal, action: Action) -> set[Scope]:
    if principal.scope is not TokenScope.FULL:
        return set()
    rule = RULES.get(action, {})
    return {rule[r] for r in principal.roles if r in rule}


def region_filter(principal: Principal, action: Action) -> frozenset[str] | None:
    """For list queries: None means every region of the org; otherwise only these regions.
    An empty set means nothing is visible (deny by default).

    SELF grants no region: a caller who may only see themself gets an empty set here and must
    ask `only_self` (a technician must not list every colleague of their region)."""
    scopes = _scopes(principal, action)
    if Scope.ORG in scopes:
        return None
    if scopes & {Scope.REGION, Scope.ASSIGNED, Scope.IN_WINDOW}:
        return principal.region_ids
    return frozenset()


def only_assigned(principal: Principal, action: Action) -> bool:
    """For list queries: True when the caller may see only the jobs assigned to them."""
    scopes = _scopes(principal, action)
    return not (scopes & {Scope.ORG, Scope.REGION}) and bool(
        scopes & {Scope.ASSIGNED, Scope.IN_WINDOW}
    )


def only_self(principal: Principal, action: Action) -> bool:
    """For list queries: True when the only thing the caller may see is themself."""
    scopes = _scopes(principal, action)
    return scopes == {Scope.SELF}
