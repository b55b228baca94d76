"""The raw reads of issue 11 keep the tenant filter in their SQL text: asked with another
organisation's ids, each of the board's and the session check's raw statements finds nothing,
and asked by the owning organisation, the same ids find their rows (both sides of each
decision). Real PostgreSQL with each service's own migrations, no service code in between."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text

from doorward_kit.db import Database, run_migrations_async
from services.audit import repository as audit_repo
from services.audit.models import AuditEvent
from services.identity import repository as identity_repo
from services.identity.models import Organisation, Region, SessionFamily, User, UserRegion
from services.secrets import repository as secrets_repo
from services.secrets.models import SecretRef
from services.workorders.models import Customer, Site, SiteSecretRef, WorkOrder, WorkOrderSecret
from services.workorders.repository import Repository as WorkordersRepository

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _id() -> str:
    return str(uuid.uuid4())


async def _migrated(postgres: Any, service: str) -> Database:
    url = postgres.fresh_database(f"tenancy_{service}")
    await run_migrations_async(ROOT / "services" / service / "migrations", url)
    return Database(url, pool_size=2)


@pytest_asyncio.fixture
async def workorders(postgres: Any) -> AsyncIterator[tuple[Database, dict[str, dict[str, str]]]]:
    db = await _migrated(postgres, "workorders")
    orgs: dict[str, dict[str, str]] = {}
    async with db.unit_of_work() as session:
        for org in ("org-a", "org-b"):
            ids = {"customer": _id(), "site": _id(), "order": _id(), "ref": _id(), "region": _id()}
            session.add(Customer(id=ids["customer"], org_id=org, region_id=ids["region"]))
            await session.flush()
            session.add(
                Site(
                    id=ids["site"], org_id=org, customer_id=ids["customer"], region_id=ids["region"]
                )
            )
            await session.flush()
            session.add(
                WorkOrder(
                    id=ids["order"],
                    org_id=org,
                    number=1,
                    site_id=ids["site"],
                    region_id=ids["region"],
                    title="Lock",
                    status="DRAFT",
                    priority="LOW",
                    created_by="someone",
                )
            )
            await session.flush()
            session.add(SiteSecretRef(secret_ref_id=ids["ref"], org_id=org, site_id=ids["site"]))
            await session.flush()
            session.add(
                WorkOrderSecret(
                    work_order_id=ids["order"],
                    secret_ref_id=ids["ref"],
                    org_id=org,
                    attached_by="someone",
                )
            )
            orgs[org] = ids
    yield db, orgs
    await db.dispose()


async def test_workorders_board_reads_see_only_their_organisation(workorders: Any) -> None:
    db, orgs = workorders
    a, b = orgs["org-a"], orgs["org-b"]
    async with db.reads() as session:
        repo = WorkordersRepository(session)
        page = {
            "regions": None,
            "assignee_id": None,
            "status": None,
            "region_id": None,
            "start_from": None,
            "start_to": None,
            "after": None,
            "limit": 50,
        }
        # The attack: org A's reads with org B's ids (or no filter at all) find nothing of B.
        assert await repo.site_rows("org-a", [b["site"]]) == []
        assert await repo.customer_rows("org-a", [b["customer"]]) == []
        assert await repo.secrets_of_orders("org-a", [b["order"]]) == {b["order"]: []}
        assert [r.id for r in await repo.list_work_orders("org-a", **page)] == [a["order"]]
        assert await repo.list_work_orders("org-a", **page | {"region_id": b["region"]}) == []
        # The honest use: each organisation finds its own.
        assert [r.id for r in await repo.site_rows("org-b", [b["site"]])] == [b["site"]]
        assert [r.id for r in await repo.customer_rows("org-b", [b["customer"]])] == [b["customer"]]
        assert await repo.secrets_of_orders("org-b", [b["order"]]) == {b["order"]: [b["ref"]]}
        assert [r.id for r in await repo.list_work_orders("org-b", **page)] == [b["order"]]


async def test_workorders_field_user_checks_see_only_their_organisation(workorders: Any) -> None:
    """A field user's board asks which of its sites and customers they have jobs at (raw
    statements on the request's reader): the same user id in another organisation finds
    nothing there, and the owning organisation finds its own, by status too."""
    db, orgs = workorders
    a, b = orgs["org-a"], orgs["org-b"]
    async with db.unit_of_work() as session:
        await session.execute(text("UPDATE work_orders SET assignee_id = 'same-user'"))
    async with db.raw_reads() as raw:
        repo = WorkordersRepository(raw)
        # The attack: org A's checks with org B's sites and customers.
        assert await repo.sites_with_jobs_of("org-a", "same-user", [b["site"]]) == set()
        assert await repo.customers_with_jobs_of("org-a", "same-user", [b["customer"]]) == set()
        assert (
            await repo.customers_with_jobs_of(
                "org-a", "same-user", [b["customer"]], statuses=("DRAFT",)
            )
            == set()
        )
        # The honest use: each organisation finds its own; another status finds nothing.
        assert await repo.sites_with_jobs_of("org-b", "same-user", [b["site"]]) == {b["site"]}
        assert await repo.sites_with_jobs_of("org-a", "same-user", [a["site"]]) == {a["site"]}
        assert await repo.customers_with_jobs_of("org-b", "same-user", [b["customer"]]) == {
            b["customer"]
        }
        assert await repo.customers_with_jobs_of(
            "org-b", "same-user", [b["customer"]], statuses=("DRAFT",)
        ) == {b["customer"]}
        assert (
            await repo.customers_with_jobs_of(
                "org-b", "same-user", [b["customer"]], statuses=("DISPATCHED",)
            )
            == set()
        )
        assert await repo.sites_with_jobs_of("org-b", "another-user", [b["site"]]) == set()
        # A statement built with SQLAlchemy refuses the raw reader rather than open a session.
        with pytest.raises(TypeError):
            await repo.orders_at_sites("org-b", [b["site"]])


async def test_identity_session_check_and_users_batch_see_only_their_organisation(
    postgres: Any,
) -> None:
    db = await _migrated(postgres, "identity")
    try:
        people: dict[str, tuple[str, str]] = {}
        async with db.unit_of_work() as session:
            for name in ("a", "b"):
                org, region, user, family = _id(), _id(), _id(), _id()
                session.add(Organisation(id=org, name=f"org {name} {org}", mfa_required_roles=[]))
                await session.flush()
                session.add(Region(id=region, org_id=org, name="North"))
                session.add(
                    User(
                        id=user,
                        org_id=org,
                        email=f"{name}-{user}@example.org",
                        display_name=name.upper(),
                        roles=["ADMIN"],
                        status="ACTIVE",
                        password_hash="x",
                    )
                )
                await session.flush()
                session.add(UserRegion(user_id=user, region_id=region, org_id=org))
                session.add(
                    SessionFamily(id=family, org_id=org, user_id=user, scope="full", expires_at=NOW)
                )
                people[name] = (org, user)
                people[f"{name}-family"] = (org, family)
        (org_a, _), (org_b, user_b) = people["a"], people["b"]
        family_b = people["b-family"][1]
        async with db.raw_reads() as raw:
            assert await identity_repo.users_with_regions(raw, org_a, [user_b]) == []
            assert await identity_repo.session_check(raw, org_a, user_b, family_b) is None
            found = await identity_repo.users_with_regions(raw, org_b, [user_b])
            assert [(u.id, u.display_name, u.roles) for u, _ in found] == [(user_b, "B", ["ADMIN"])]
            state = await identity_repo.session_check(raw, org_b, user_b, family_b)
            assert state is not None and state[:3] == ("ACTIVE", 0, user_b)
            # The session check and the users batch in one statement: the same filters.
            (org_a, user_a) = people["a"]
            family_a = people["a-family"][1]
            both = identity_repo.session_check_and_users
            assert await both(raw, org_a, user_b, family_b, [user_b]) == (None, [])
            mine, users = await both(raw, org_a, user_a, family_a, [user_b, user_a])
            assert mine is not None and mine[:3] == ("ACTIVE", 0, user_a)
            assert [u.id for u, _ in users] == [user_a]  # b's user is not a's to read
            foreign_family, _ = await both(raw, org_a, user_a, family_b, [user_b])
            assert foreign_family is not None and foreign_family[2] is None  # not a's family
            theirs, users = await both(raw, org_b, user_b, family_b, [user_b])
            assert theirs == state and [(u.id, u.display_name) for u, _ in users] == [(user_b, "B")]
    finally:
        await db.dispose()


async def test_audit_trails_and_secret_refs_see_only_their_organisation(postgres: Any) -> None:
    audit_db = await _migrated(postgres, "audit")
    secrets_db = await _migrated(postgres, "secrets")
    order, site, ref_a, ref_b = _id(), _id(), _id(), _id()
    try:
        async with audit_db.unit_of_work() as session:
            for seq, org in enumerate(("org-a", "org-b"), start=1):
                session.add(
                    AuditEvent(
                        org_id=org,
                        seq=seq,
                        id=_id(),
                        occurred_at=NOW,
                        action=f"step.{org[-1]}",
                        outcome="ALLOWED",
                        work_order_id=order,
                        details={},
                        prev_hash="0" * 64,
                        hash=str(seq) * 64,
                    )
                )
        async with secrets_db.unit_of_work() as session:
            for ref, org in ((ref_a, "org-a"), (ref_b, "org-b")):
                session.add(
                    SecretRef(
                        id=ref,
                        org_id=org,
                        site_id=site,
                        region_id="r",
                        kind="DOOR_CODE",
                        label="Front",
                        kv_path=f"orgs/{org}/secrets/{ref}",
                    )
                )
        async with audit_db.raw_reads() as raw:
            trail = await audit_repo.recent_events_of_work_orders(
                raw, "org-a", [order], 1000, audit_repo.trail_event
            )
            assert [e.action for e in trail[order]] == ["step.a"]  # not org B's event
            assert await audit_repo.recent_events_of_work_orders(
                raw, "org-c", [order], 1000, audit_repo.trail_event
            ) == {order: []}
            # The board's trail of four columns (trail_sql of fewer columns): the same filter.
            board = ("seq", "action", "outcome", "work_order_id")
            narrow = await audit_repo.recent_events_of_work_orders(
                raw, "org-a", [order], 1000, tuple, board
            )
            assert [row[1] for row in narrow[order]] == ["step.a"]
            assert await audit_repo.recent_events_of_work_orders(
                raw, "org-c", [order], 1000, tuple, board
            ) == {order: []}
        async with secrets_db.raw_reads() as raw:
            # The same site id in both organisations: each sees its own reference only.
            assert [r.id for r in await secrets_repo.list_refs(raw, "org-a", [], [site])] == [ref_a]
            assert await secrets_repo.list_refs(raw, "org-a", [ref_b], []) == []
            assert [r.id for r in await secrets_repo.list_refs(raw, "org-b", [ref_b], [])] == [
                ref_b
            ]
    finally:
        await audit_db.dispose()
        await secrets_db.dispose()
