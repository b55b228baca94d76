"""The rows behind the reports, read from each service's database with its own login.

Read-only queries; an organisation filter where one is given. Where the stack runs: the URL of
DOORWARD_<SVC>_DB_URL, else as `doorward up` keeps it (deploy.cli.service_db_url).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deploy.reports.build import ContactRead, Reveal, SecretRefRow, UserRow


def db_urls(env: Mapping[str, str]) -> dict[str, str]:
    from deploy.cli import service_db_url

    return {
        svc: env.get(f"DOORWARD_{svc.upper()}_DB_URL") or service_db_url(env, svc)
        for svc in ("identity", "workorders", "secrets", "audit")
    }


def _plain(url: str) -> str:
    """asyncpg takes postgresql://; the stack's URLs name SQLAlchemy's driver."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _fetch(url: str, sql: str, *args: Any) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(_plain(url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@dataclass
class Sources:
    urls: dict[str, str] = field(repr=False)
    org_id: str | None = None

    async def orgs(self) -> list[str]:
        rows = await _fetch(
            self.urls["identity"],
            "SELECT id FROM organisations WHERE ($1::text IS NULL OR id = $1) ORDER BY id",
            self.org_id,
        )
        return [str(r["id"]) for r in rows]

    async def users(self) -> list[UserRow]:
        rows = await _fetch(
            self.urls["identity"],
            """SELECT u.org_id, u.id, u.email, u.display_name, u.roles, u.status, u.mfa_enabled,
                 (SELECT max(f.created_at) FROM session_families f WHERE f.user_id = u.id)
                   AS last_login,
                 ARRAY(SELECT r.name FROM user_regions ur JOIN regions r ON r.id = ur.region_id
                       WHERE ur.user_id = u.id) AS regions
               FROM users u WHERE ($1::text IS NULL OR u.org_id = $1)""",
            self.org_id,
        )
        return [
            UserRow(
                org_id=str(r["org_id"]),
                id=str(r["id"]),
                email=str(r["email"]),
                display_name=str(r["display_name"]),
                roles=tuple(r["roles"] or ()),
                regions=tuple(r["regions"] or ()),
                status=str(r["status"]),
                mfa_enabled=bool(r["mfa_enabled"]),
                last_login=r["last_login"],
            )
            for r in rows
        ]

    async def emails(self) -> dict[str, str]:
        return {u.id: u.email for u in await self.users()}

    async def reveals(self) -> list[Reveal]:
        """Grants whose single-use token was used: a value went to the user."""
        rows = await _fetch(
            self.urls["secrets"],
            """SELECT org_id, id, user_id, secret_ref_id, site_id, work_order_id, used_at,
                      break_glass
               FROM grants WHERE used_at IS NOT NULL AND ($1::text IS NULL OR org_id = $1)""",
            self.org_id,
        )
        return [
            Reveal(
                str(r["org_id"]),
                str(r["id"]),
                str(r["user_id"]),
                str(r["secret_ref_id"]),
                str(r["site_id"]),
                str(r["work_order_id"]),
                r["used_at"],
                bool(r["break_glass"]),
            )
            for r in rows
        ]

    async def secret_refs(self) -> dict[str, SecretRefRow]:
        rows = await _fetch(
            self.urls["secrets"],
            "SELECT org_id, id, site_id, kind, label, deleted_at FROM secret_refs "
            "WHERE ($1::text IS NULL OR org_id = $1)",
            self.org_id,
        )
        return {
            str(r["id"]): SecretRefRow(
                str(r["org_id"]),
                str(r["id"]),
                str(r["site_id"]),
                str(r["kind"]),
                str(r["label"]),
                r["deleted_at"] is not None,
            )
            for r in rows
        }

    async def site_customers(self) -> dict[str, str]:
        rows = await _fetch(
            self.urls["workorders"],
            "SELECT id, customer_id FROM sites WHERE ($1::text IS NULL OR org_id = $1)",
            self.org_id,
        )
        return {str(r["id"]): str(r["customer_id"]) for r in rows}

    async def contact_reads(self, start: datetime, end: datetime) -> list[ContactRead]:
        rows = await _fetch(
            self.urls["audit"],
            """SELECT org_id, id, actor_id, target_id, occurred_at, details->>'field' AS field
               FROM audit_events
               WHERE action = 'customer.contact.read' AND outcome = 'ALLOWED'
                 AND occurred_at >= $1 AND occurred_at < $2
                 AND ($3::text IS NULL OR org_id = $3)""",
            start,
            end,
            self.org_id,
        )
        return [
            ContactRead(
                str(r["org_id"]),
                str(r["id"]),
                str(r["actor_id"]),
                str(r["target_id"]),
                r["occurred_at"],
                str(r["field"] or "contact"),
            )
            for r in rows
        ]

    async def counts(self) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
        """Records per organisation and category; subcontractor accounts per organisation."""
        counts: dict[str, dict[str, int]] = {org: {} for org in await self.orgs()}
        queries = (
            (
                "identity",
                "staff_accounts",
                "SELECT org_id, count(*) AS n FROM users WHERE ($1::text IS NULL OR org_id = $1) "
                "GROUP BY org_id",
            ),
            (
                "workorders",
                "customer_contact_data",
                "SELECT org_id, count(*) AS n FROM customers WHERE erased_at IS NULL "
                "AND ($1::text IS NULL OR org_id = $1) GROUP BY org_id",
            ),
            (
                "workorders",
                "work_orders",
                "SELECT org_id, count(*) AS n FROM work_orders "
                "WHERE ($1::text IS NULL OR org_id = $1) GROUP BY org_id",
            ),
            (
                "secrets",
                "site_secrets",
                "SELECT org_id, count(*) AS n FROM secret_refs WHERE deleted_at IS NULL "
                "AND ($1::text IS NULL OR org_id = $1) GROUP BY org_id",
            ),
            (
                "secrets",
                "grant_registry",
                "SELECT org_id, count(*) AS n FROM grants "
                "WHERE ($1::text IS NULL OR org_id = $1) GROUP BY org_id",
            ),
            (
                "audit",
                "audit_events",
                "SELECT org_id, count(*) AS n FROM audit_events "
                "WHERE ($1::text IS NULL OR org_id = $1) GROUP BY org_id",
            ),
        )
        for svc, category, sql in queries:
            for r in await _fetch(self.urls[svc], sql, self.org_id):
                if str(r["org_id"]) in counts:
                    counts[str(r["org_id"])][category] = int(r["n"])
        subs = await _fetch(
            self.urls["identity"],
            "SELECT org_id, count(*) AS n FROM users WHERE 'SUBCONTRACTOR' = ANY(roles) "
            "AND status = 'ACTIVE' AND ($1::text IS NULL OR org_id = $1) GROUP BY org_id",
            self.org_id,
        )
        return counts, {str(r["org_id"]): int(r["n"]) for r in subs}
