"""Who may read one user's accessHistory: their own for everybody, anyone's for audit readers."""

import pytest

from doorward_kit.auth import Principal, Role, TokenScope
from doorward_kit.errors import DoorwardError, ErrorCode
from services.audit.service import AuditService

pytestmark = pytest.mark.unit

ME, OTHER = "user-me", "user-other"


def caller(*roles: Role, scope: TokenScope = TokenScope.FULL) -> Principal:
    return Principal(
        user_id=ME,
        org_id="org-1",
        roles=frozenset(roles),
        region_ids=frozenset({"region-1"}),
        session_id="sid",
        epoch=0,
        scope=scope,
    )


@pytest.mark.parametrize("role", list(Role))
def test_own_history_allowed_for_every_role(role):
    AuditService.authorize_history(caller(role), ME)


@pytest.mark.parametrize("role", [Role.TECHNICIAN, Role.SUBCONTRACTOR, Role.DISPATCHER])
@pytest.mark.parametrize("user_id", [OTHER, ""])
def test_someone_elses_history_refused(role, user_id):
    with pytest.raises(DoorwardError) as refused:
        AuditService.authorize_history(caller(role), user_id)
    assert refused.value.code is ErrorCode.FORBIDDEN


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMIN])
def test_audit_readers_read_everyones(role):
    AuditService.authorize_history(caller(role), OTHER)


def test_restricted_session_reads_not_even_its_own():
    with pytest.raises(DoorwardError):
        AuditService.authorize_history(caller(Role.TECHNICIAN, scope=TokenScope.RESTRICTED), ME)
