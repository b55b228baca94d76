"""`doorward report access-review|incident|processing` on seeded data: exact counts, JSON and
CSV, filters, and every run on the audit trail (real PostgreSQL, each service's own login)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from deploy.pgroles import ServiceLogin, new_password, provision_logins
from deploy.reports.run import run_report
from doorward_kit.audit_client import AuditRecord, Outcome
from doorward_kit.db import Database, run_migrations
from services.audit.dbroles import OWNER_ROLE
from services.audit.models import AuditEvent
from services.audit.service import AuditService, Incoming

pytestmark = pytest.mark.integration

DAY = datetime(2026, 11, 20, tzinfo=UTC)


def at(hour: int, minute: int = 0, day: int = 0) -> datetime:
    return DAY + timedelta(days=day, hours=hour, minutes=minute)


def _migrations(svc: str):
    import importlib

    module = importlib.import_module(
        "services.audit.dbroles" if svc == "audit" else f"services.{svc}.__main__"
    )
    return module.MIGRATIONS


class Seeded:
    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.env = {f"DOORWARD_{svc.upper()}_DB_URL": url for svc, url in urls.items()}
        self.ids: dict[str, str] = {}

    def id(self, name: str) -> str:
        return self.ids.setdefault(name, str(uuid.uuid4()))


async def _seed(s: Seeded) -> None:
    from services.identity import models as idm
    from services.secrets import models as sm
    from services.workorders import models as wm

    a, b = s.id("org-a"), s.id("org-b")
    db = Database(s.urls["identity"], pool_size=1)
    async with db.unit_of_work() as session:
        session.add_all([
            idm.Organisation(id=a, name="Org A", mfa_required_roles=["ADMIN"]),
            idm.Organisation(id=b, name="Org B", mfa_required_roles=[]),
        ])  # fmt: skip
        await session.flush()
        london = idm.Region(id=s.id("london"), org_id=a, name="London")
        session.add(london)
        people = [
            ("admin", a, ["ADMIN"], True, "ACTIVE", "Ada Admin"),
            ("tom", a, ["TECHNICIAN"], False, "ACTIVE", "Tom Tech"),
            ("sub", a, ["SUBCONTRACTOR"], False, "ACTIVE", "=HYPERLINK(1)"),
            ("dormant", a, ["DISPATCHER"], False, "ACTIVE", "Dora"),
            ("gone", a, ["TECHNICIAN"], False, "DEACTIVATED", "Gus"),
            ("b-admin", b, ["ADMIN"], True, "ACTIVE", "Bea"),
        ]
        for key, org, roles, mfa, status, name in people:
            session.add(
                idm.User(
                    id=s.id(key), org_id=org, email=f"{key}-{s.id(key)[:6]}@example.com",
                    display_name=name, roles=roles, status=status, password_hash="x",
                    mfa_enabled=mfa,
                )
            )  # fmt: skip
        await session.flush()
        session.add(idm.UserRegion(user_id=s.id("tom"), region_id=london.id, org_id=a))
        for key, when in (("admin", at(8)), ("admin", at(9)), ("tom", at(7)), ("sub", at(6))):
            session.add(
                idm.SessionFamily(
                    org_id=a, user_id=s.id(key), scope="full", created_at=when,
                    expires_at=when + timedelta(days=1),
                )
            )  # fmt: skip
    await db.dispose()

    db = Database(s.urls["workorders"], pool_size=1)
    async with db.unit_of_work() as session:
        for key, erased in (("c1", None), ("c2", None), ("c3", at(1))):
            session.add(wm.Customer(id=s.id(key), org_id=a, region_id="r", erased_at=erased))
        await session.flush()
        for site, customer in (("s1", "c1"), ("s2", "c2"), ("s3", "c1")):
            session.add(wm.Site(id=s.id(site), org_id=a, customer_id=s.id(customer), region_id="r"))
        await session.flush()
        for n, org in enumerate((a, a, a, a, b)):
            session.add(
                wm.WorkOrder(
                    id=str(uuid.uuid4()), org_id=org, number=n + 1, site_id=s.id("s1"),
                    region_id="r", title="job", status="SCHEDULED", priority="NORMAL",
                    created_by="x",
                )
            )  # fmt: skip
    await db.dispose()

    db = Database(s.urls["secrets"], pool_size=1)
    async with db.unit_of_work() as session:
        for ref, site, deleted in (("r1", "s1", None), ("r2", "s2", None),
                                   ("r3", "s3", at(20)), ("r4", "s1", None)):  # fmt: skip
            session.add(
                sm.SecretRef(
                    id=s.id(ref), org_id=a, site_id=s.id(site), region_id="r", kind="DOOR_CODE",
                    label=f"door {ref}", kv_path=str(uuid.uuid4()), deleted_at=deleted,
                )
            )  # fmt: skip
        grants = [
            ("g1", "tom", "r1", "s1", at(10)),
            ("g2", "tom", "r2", "s2", at(11)),
            ("g3", "admin", "r3", "s3", at(10, 30)),
            ("g4", "tom", "r1", "s1", at(10, day=-1)),
            ("g5", "tom", "r4", "s1", None),
        ]
        for key, user, ref, site, used in grants:
            session.add(
                sm.Grant(
                    id=s.id(key), org_id=a, user_id=s.id(user), work_order_id="w",
                    secret_ref_id=s.id(ref), site_id=s.id(site), version=1, token_hash="h",
                    wrap_accessor="acc", expires_at=at(23), used_at=used,
                )
            )  # fmt: skip
    await db.dispose()

    reads = [
        ("tom", "c1", at(10, 15), Outcome.ALLOWED, {}),
        ("sub", "c2", at(10, 20), Outcome.ALLOWED, {"field": "address", "site_id": s.id("s2")}),
        ("tom", "c2", at(10, 25), Outcome.DENIED, {"reason": "outside_window"}),
        ("tom", "c1", at(13), Outcome.ALLOWED, {}),
    ]
    db = Database(s.urls["audit"], pool_size=1)
    async with db.unit_of_work() as session:
        await AuditService().append(
            session,
            [
                Incoming(
                    AuditRecord(
                        org_id=a, actor_id=s.id(user), action="customer.contact.read",
                        outcome=outcome, target_type="Customer", target_id=s.id(customer),
                        details=details, occurred_at=when,
                    ),
                    "workorders",
                )
                for user, customer, when, outcome, details in reads
            ],
        )  # fmt: skip
    await db.dispose()


@pytest.fixture(scope="module")
def seeded(postgres) -> Seeded:
    urls: dict[str, str] = {}
    logins = []
    for svc in ("identity", "workorders", "secrets", "audit"):
        dbname = f"rep_{svc}_{uuid.uuid4().hex[:8]}"
        owner = OWNER_ROLE if svc == "audit" else f"{dbname}_login"
        logins.append(ServiceLogin(svc, dbname, f"{dbname}_login", owner, new_password()))
    provision_logins(postgres.admin_url(), logins)
    for sl in logins:
        urls[sl.service] = postgres.server.login_url(sl.login, sl.password, sl.database)
        if sl.service != "audit":
            run_migrations(_migrations(sl.service), urls[sl.service])
    s = Seeded(urls)
    asyncio.run(_seed(s))
    return s


def report(seeded: Seeded, kind: str, fmt: str = "json", **options) -> dict:
    text = run_report(kind, fmt, seeded.env, **options)
    return json.loads(text) if fmt == "json" else {"csv": text}


def report_runs(seeded: Seeded) -> list[AuditEvent]:
    async def fetch() -> list[AuditEvent]:
        db = Database(seeded.urls["audit"], pool_size=1)
        try:
            async with db.unit_of_work() as session:
                rows = await session.scalars(
                    select(AuditEvent).where(AuditEvent.action == "report.run")
                )
                return list(rows)
        finally:
            await db.dispose()

    return asyncio.run(fetch())


def test_processing_counts_the_records_held(seeded):
    a = seeded.id("org-a")
    body = report(seeded, "processing", org_id=a)
    rows = {r["category"]: r for r in body["rows"]}
    assert {r["org_id"] for r in body["rows"]} == {a}
    assert rows["staff_accounts"]["records"] == 5
    assert rows["customer_contact_data"]["records"] == 2  # the erased one is not held
    assert rows["work_orders"]["records"] == 4
    assert rows["site_secrets"]["records"] == 3  # the deleted one is not held
    assert rows["grant_registry"]["records"] == 5
    assert rows["audit_events"]["records"] == 4
    assert "1 subcontractor accounts" in rows["work_orders"]["recipients"]
    for row in body["rows"]:
        assert row["purpose"] and row["retention"] and row["legal_basis"] and row["measures"]
    assert any("Art. 28" in p for p in body["summary"]["processors"])


def test_access_review_lists_every_user_with_mfa_last_login_and_last_reveal(seeded):
    body = report(seeded, "access-review")
    a, b = seeded.id("org-a"), seeded.id("org-b")
    users = {r["user_id"]: r for r in body["rows"]}
    assert len(users) == 6
    assert body["summary"] | {"orgs": None} == {
        "users": 6, "active_users": 5, "active_without_mfa": 3, "admins": 2,
        "never_logged_in": 2, "orgs": None,
    }  # fmt: skip
    tom, admin = users[seeded.id("tom")], users[seeded.id("admin")]
    assert tom["roles"] == "TECHNICIAN" and tom["regions"] == "London"
    assert tom["mfa_enabled"] is False and admin["mfa_enabled"] is True
    assert tom["last_login"] == at(7).isoformat()
    assert admin["last_login"] == at(9).isoformat()
    assert tom["last_reveal"] == at(11).isoformat()
    assert admin["last_reveal"] == at(10, 30).isoformat()
    assert users[seeded.id("dormant")]["last_login"] == ""
    assert users[seeded.id("gone")]["status"] == "DEACTIVATED"
    # Every run is on the audit trail, once per organisation it covered.
    runs = [e for e in report_runs(seeded) if e.details.get("kind") == "access-review"]
    assert sorted(e.org_id for e in runs) == sorted([a, b])
    assert all(e.service == "cli" and e.details["count"] == "6" for e in runs)


def test_incident_scope_with_exact_counts(seeded):
    window = {"start": at(9), "end": at(12)}
    body = report(seeded, "incident", **window)
    assert body["summary"] | {"orgs": None} == {
        "reveals": 3, "secrets_revealed": 3, "contact_reads": 2, "subjects": 2, "records": 5,
        "users": 3, "codes_to_rotate": 2, "orgs": None,
    }  # fmt: skip
    kinds = [r["kind"] for r in body["rows"]]
    assert kinds.count("secret_reveal") == 3 and kinds.count("contact_read") == 2
    rotate = {r["secret_ref_id"] for r in body["rows"] if r["kind"] == "rotate_secret"}
    assert rotate == {seeded.id("r1"), seeded.id("r2")}  # r3 is deleted already
    # Data subjects appear by id only.
    assert all("@" not in r["customer_id"] for r in body["rows"])

    tom = report(seeded, "incident", user_id=seeded.id("tom"), **window)["summary"]
    assert (tom["reveals"], tom["contact_reads"], tom["subjects"], tom["records"]) == (2, 1, 2, 3)
    site = report(seeded, "incident", site_id=seeded.id("s2"), **window)["summary"]
    assert (site["reveals"], site["contact_reads"], site["subjects"], site["codes_to_rotate"]) == (
        1, 1, 1, 1,
    )  # fmt: skip
    runs = [e for e in report_runs(seeded) if e.details.get("kind") == "incident"]
    assert len(runs) == 3
    assert any(e.details.get("user_id") == seeded.id("tom") for e in runs)
    assert any(e.details.get("site_id") == seeded.id("s2") for e in runs)


def test_csv_has_a_header_one_line_per_row_and_no_formulas(seeded):
    text = report(seeded, "access-review", "csv", org_id=seeded.id("org-a"))["csv"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 5
    assert "last_reveal" in rows[0]
    sub = next(r for r in rows if r["user_id"] == seeded.id("sub"))
    assert sub["display_name"] == "'=HYPERLINK(1)"
    assert sub["mfa_enabled"] == "false"


def test_an_unrecorded_run_shows_nothing(seeded, monkeypatch):
    from deploy.errors import DeployError
    from deploy.reports import run

    async def refuse(*_args, **_kw):
        raise ConnectionError("audit trail down")

    monkeypatch.setattr(run, "record_run", refuse)
    with pytest.raises(DeployError, match="audit trail"):
        run_report("processing", "json", seeded.env)
    # A wrong login is a clean error, not a traceback.
    env = dict(seeded.env)
    env["DOORWARD_AUDIT_DB_URL"] = env["DOORWARD_AUDIT_DB_URL"].replace("_login:", "_nobody:")
    monkeypatch.undo()
    with pytest.raises(DeployError, match="cannot read"):
        run_report("processing", "json", env)
