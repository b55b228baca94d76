"""The board's raw statements (issue 11) read their columns by position into row classes: the
SELECT list of each must name the class's fields in the class's order, and every column must
exist in the table the models describe (a statement is checked against PostgreSQL only when it
first runs, so this catches a reordered field or a renamed column without a database)."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from services.audit.models import AuditEvent
from services.audit.repository import _TRAILS, TrailEvent
from services.identity.models import User
from services.identity.repository import _SESSION_AND_USERS, _USERS_WITH_REGIONS, UserFacts
from services.secrets.models import SecretRef
from services.secrets.repository import _LIST_REFS, RefRow
from services.workorders.models import Customer, Site, WorkOrder
from services.workorders.repository import (
    _CUSTOMERS_BY_ID,
    _SITES_BY_ID,
    CustomerRow,
    OrderRow,
    SiteRow,
    _page_sql,
)

pytestmark = pytest.mark.unit


def _selected(sql: str) -> list[str]:
    """The column names of the first SELECT list, without table prefixes and casts."""
    head = re.match(r"SELECT (.*?) FROM ", sql)
    assert head, sql
    return [re.sub(r"^\w+\.|::.*$", "", c.strip()) for c in head.group(1).split(",")]


@pytest.mark.parametrize(
    ("sql", "row", "table"),
    [
        (_SITES_BY_ID, SiteRow, Site.__table__),
        (_CUSTOMERS_BY_ID, CustomerRow, Customer.__table__),
        (_page_sql(*(False,) * 7), OrderRow, WorkOrder.__table__),
        (_page_sql(*(True,) * 7), OrderRow, WorkOrder.__table__),
    ],
)
def test_workorders_rows_are_read_in_their_fields_order(sql: str, row: type, table: object) -> None:
    names = [f.name for f in fields(row)]
    assert _selected(sql) == names
    assert set(names) <= set(table.c.keys())  # type: ignore[attr-defined]


def test_the_page_numbers_its_parameters_in_order() -> None:
    """One placeholder per value the repository passes, numbered 1..n without a gap."""
    for shape in [(False,) * 7, (True,) * 7, (True, False, True, False, True, False, True)]:
        sql = _page_sql(*shape)
        used = sorted({int(n) for n in re.findall(r"\$(\d+)", sql)})
        values = 1 + sum(shape) + shape[-1] + 1  # org, each filter (after: two), the limit
        assert used == list(range(1, values + 1)), sql


def test_identity_and_audit_rows_are_read_in_their_fields_order() -> None:
    users = _selected(_USERS_WITH_REGIONS)
    assert users[: len(UserFacts._fields)] == list(UserFacts._fields)
    assert set(UserFacts._fields) <= set(User.__table__.c.keys())
    # The session check with the users: the session's four columns (as session_check reads
    # them), then a user's fields in the same order (read from r[4] on).
    both = _selected(_SESSION_AND_USERS)
    assert both[:4] == ["status", "session_epoch", "family_user", "ended_at"]
    assert both[4 : 4 + len(UserFacts._fields)] == list(UserFacts._fields)
    trail = re.search(r"LATERAL \((SELECT .*? FROM audit_events)", _TRAILS)
    assert trail and _selected(trail.group(1)) == list(TrailEvent._fields)  # details::text
    assert set(TrailEvent._fields) <= set(AuditEvent.__table__.c.keys())


def test_secrets_refs_are_read_in_their_fields_order() -> None:
    names = [f.name for f in fields(RefRow)]
    assert _selected(_LIST_REFS) == names
    assert set(names) <= set(SecretRef.__table__.c.keys())
