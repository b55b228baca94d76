"""The authorization matrix, from both sides: every Action for every Role, inside and outside the
caller's region and organisation, own/foreign job, inside/outside the access window.

SPEC below is written out by hand from CONTRACT.md's role table; it is deliberately NOT derived
from policy.RULES, so a change to the policy must be a change to this table too.
"""

from __future__ import annotations

import itertools

import pytest

from doorward_kit.auth import Principal, Role, TokenScope
from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.policy import (
    RULES,
    Action,
    Resource,
    authorize,
    can,
    can_read_user,
    decide,
    only_assigned,
    only_self,
    region_filter,
)

pytestmark = pytest.mark.unit

A, D, T, S, U = Role.ADMIN, Role.DISPATCHER, Role.TECHNICIAN, Role.SUBCONTRACTOR, Role.AUDITOR

# Scope letters: O = whole own organisation, R = a region the caller holds, M = the caller
# themself, J = their own assigned job (in a region they hold), W = own job inside its window.
_PLAN = {A: "O", D: "R"}
_FIELD = {T: "J", S: "J"}
SPEC: dict[Action, dict[Role, str]] = {
    Action.USER_READ: {A: "O", U: "O", D: "R", T: "M", S: "M"},
    Action.USER_CREATE: {A: "O"},
    Action.USER_UPDATE: {A: "O"},
    Action.USER_DEACTIVATE: {A: "O"},
    Action.REGION_READ: {A: "O", U: "O", D: "R", T: "R", S: "R"},
    Action.REGION_CREATE: {A: "O"},
    Action.CUSTOMER_READ: {**_PLAN, **_FIELD},
    Action.CUSTOMER_CONTACT_READ: {**_PLAN, T: "J", S: "W"},
    Action.CUSTOMER_CREATE: _PLAN,
    Action.CUSTOMER_EXPORT: {A: "O"},
    Action.CUSTOMER_ERASE: {A: "O"},
    Action.CUSTOMER_RESTRICT: {A: "O"},
    Action.SESSION_POLICY_READ: {A: "O", U: "O"},
    Action.SESSION_POLICY_UPDATE: {A: "O"},
    Action.RETENTION_MANAGE: {A: "O"},
    Action.SITE_READ: {**_PLAN, **_FIELD},
    Action.SITE_CREATE: _PLAN,
    Action.WORKORDER_READ: {**_PLAN, **_FIELD},
    Action.WORKORDER_CREATE: _PLAN,
    Action.WORKORDER_UPDATE: _PLAN,
    Action.WORKORDER_ASSIGN: _PLAN,
    Action.WORKORDER_DISPATCH: _PLAN,
    Action.WORKORDER_START: {**_PLAN, **_FIELD},
    Action.WORKORDER_COMPLETE: {**_PLAN, **_FIELD},
    Action.WORKORDER_CANCEL: _PLAN,
    Action.WORKORDER_INVOICE_EDIT: _PLAN,
    Action.WORKORDER_NOTE_ADD: {**_PLAN, **_FIELD},
    Action.SECRET_UPLOAD: _PLAN,
    Action.SECRET_ROTATE: _PLAN,
    Action.SECRET_ATTACH: _PLAN,
    Action.SECRET_REF_READ: {**_PLAN, **_FIELD},
    # Dispatchers and admins never get a value; only the assignee, only in the window.
    Action.SECRET_ACCESS_REQUEST: {T: "W", S: "W"},
    Action.SECRET_BREAK_GLASS: {A: "O"},
    Action.AUDIT_READ: {A: "O", U: "O"},
    # Everyone reads their own access history (GDPR right of access), nobody else's.
    Action.AUDIT_OWN_HISTORY_READ: {A: "M", U: "M", D: "M", T: "M", S: "M"},
    Action.AUDIT_INTEGRITY_READ: {A: "O", U: "O"},
    Action.SECURITY_ALERT_READ: {A: "O", U: "O"},
}

ME = "user-me"
OTHER_USER = "user-other"
ORG = "org-acme"
OTHER_ORG = "org-rival"
LONDON = "region-london"
MANCHESTER = "region-manchester"


def principal(*roles: Role, scope: TokenScope = TokenScope.FULL, org: str = ORG) -> Principal:
    return Principal(
        user_id=ME,
        org_id=org,
        roles=frozenset(roles),
        region_ids=frozenset({LONDON}),
        session_id="sid",
        epoch=0,
        scope=scope,
    )


def expected(letter: str | None, *, own_region: bool, mine: bool, in_window: bool) -> bool:
    if letter is None:
        return False
    return {
        "O": True,
        "R": own_region,
        "M": mine,
        "J": mine and own_region,
        "W": mine and own_region and in_window,
    }[letter]


SITUATIONS = list(
    itertools.product(
        [LONDON, MANCHESTER, None],  # the resource's region
        [True, False],  # assigned to / is the caller
        [True, False],  # inside the access window
    )
)


def test_spec_covers_every_action():
    assert set(SPEC) == set(Action)


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_matrix_same_organisation(action: Action, role: Role):
    letter = SPEC[action].get(role)
    caller = principal(role)
    for region, mine, window in SITUATIONS:
        resource = Resource(
            org_id=ORG,
            region_id=region,
            assignee_id=ME if mine else OTHER_USER,
            user_id=ME if mine else OTHER_USER,
            in_window=window,
        )
        want = expected(letter, own_region=region == LONDON, mine=mine, in_window=window)
        got = decide(caller, action, resource)
        assert got.allowed is want, (action, role, region, mine, window, got.reason)


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_matrix_other_organisation_always_refused(action: Action, role: Role):
    # Everything that would be allowed inside the caller's own org, but in another org.
    resource = Resource(
        org_id=OTHER_ORG, region_id=LONDON, assignee_id=ME, user_id=ME, in_window=True
    )
    assert not can(principal(role), action, resource)
    with pytest.raises(DoorwardError) as refused:
        authorize(principal(role), action, resource)
    assert refused.value.code is ErrorCode.FORBIDDEN


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
def test_restricted_token_is_allowed_nothing(action: Action):
    everything = Resource(org_id=ORG, region_id=LONDON, assignee_id=ME, user_id=ME, in_window=True)
    caller = principal(*Role, scope=TokenScope.RESTRICTED)
    assert not can(caller, action, everything)
    assert region_filter(caller, action) == frozenset()
    assert not only_assigned(caller, action)


def test_no_roles_is_allowed_nothing():
    everything = Resource(org_id=ORG, region_id=LONDON, assignee_id=ME, user_id=ME, in_window=True)
    for action in Action:
        assert not can(principal(), action, everything)


def test_empty_organisation_never_matches():
    caller = principal(A, org="")
    assert not can(caller, Action.USER_READ, Resource(org_id=""))


def test_roles_combine_as_a_union():
    # A dispatcher who also works jobs: region-wide planning plus their own job's secrets.
    caller = principal(D, T)
    own_job = Resource(org_id=ORG, region_id=LONDON, assignee_id=ME, in_window=True)
    foreign_job = Resource(org_id=ORG, region_id=LONDON, assignee_id=OTHER_USER, in_window=True)
    assert can(caller, Action.SECRET_ACCESS_REQUEST, own_job)
    assert not can(caller, Action.SECRET_ACCESS_REQUEST, foreign_job)
    assert can(caller, Action.WORKORDER_ASSIGN, foreign_job)


def test_authorize_allows_silently_and_refuses_with_forbidden():
    authorize(principal(A), Action.USER_CREATE, Resource(org_id=ORG))
    with pytest.raises(DoorwardError) as refused:
        authorize(principal(D), Action.USER_CREATE, Resource(org_id=ORG))
    assert refused.value.code is ErrorCode.FORBIDDEN


def test_london_dispatcher_and_manchester_user():
    london_dispatcher = principal(D)
    manchester_user = Resource(org_id=ORG, region_id=MANCHESTER, user_id=OTHER_USER)
    london_user = Resource(org_id=ORG, region_id=LONDON, user_id=OTHER_USER)
    assert not can(london_dispatcher, Action.USER_READ, manchester_user)
    assert can(london_dispatcher, Action.USER_READ, london_user)


def test_unknown_action_is_denied():
    caller = principal(*Role)
    original = RULES.pop(Action.AUDIT_READ)
    try:
        assert not can(caller, Action.AUDIT_READ, Resource(org_id=ORG))
        assert region_filter(caller, Action.AUDIT_READ) == frozenset()
    finally:
        RULES[Action.AUDIT_READ] = original


# ---- list helpers ----------------------------------------------------------------------------


def _list_expectation(letters: set[str]) -> tuple[frozenset[str] | None, bool, bool]:
    """(region_filter, only_assigned, only_self) that the letters of a caller's roles imply."""
    if "O" in letters:
        regions: frozenset[str] | None = None
    elif letters & {"R", "J", "W"}:
        regions = frozenset({LONDON})
    else:
        regions = frozenset()
    assigned = not (letters & {"O", "R"}) and bool(letters & {"J", "W"})
    return regions, assigned, letters == {"M"}


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_list_helpers(action: Action, role: Role):
    letter = SPEC[action].get(role)
    regions, assigned, self_only = _list_expectation({letter} if letter else set())
    caller = principal(role)
    assert region_filter(caller, action) == regions
    assert only_assigned(caller, action) is assigned
    assert only_self(caller, action) is self_only


def test_technician_listing_users_sees_only_themself():
    technician = principal(T)
    # SELF must not widen to "everyone in my region".
    assert region_filter(technician, Action.USER_READ) == frozenset()
    assert only_self(technician, Action.USER_READ)
    assert region_filter(principal(D), Action.USER_READ) == frozenset({LONDON})
    assert not only_self(principal(D, T), Action.USER_READ)


def test_can_read_user_through_any_region_the_person_holds():
    dispatcher = principal(D)
    assert can_read_user(dispatcher, ORG, OTHER_USER, [MANCHESTER, LONDON])
    assert not can_read_user(dispatcher, ORG, OTHER_USER, [MANCHESTER])
    # Holding no region: only a rule without one (organisation, or themself) lets them in.
    assert not can_read_user(dispatcher, ORG, OTHER_USER, [])
    assert can_read_user(principal(A), ORG, OTHER_USER, [])
    assert can_read_user(principal(T), ORG, ME, [])
    assert not can_read_user(principal(A), OTHER_ORG, OTHER_USER, [LONDON])
