"""Run a report: gather, record the run on the audit trail, then format (JSON or CSV).

The run is audited before anything is printed: if the audit trail cannot take the event, the
report is not shown (fail closed). One event per organisation the report covers, action
`report.run`, with the report's kind, format and row count, and the filters' ids.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from deploy.errors import DeployError
from deploy.reports import build
from deploy.reports.sources import Sources, db_urls

KINDS = ("access-review", "incident", "processing")
FORMATS = ("json", "csv")


async def gather(
    kind: str,
    sources: Sources,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    user_id: str | None = None,
    site_id: str | None = None,
) -> build.Report:
    if kind == "access-review":
        return build.access_review(await sources.users(), await sources.reveals())
    if kind == "incident":
        if start is None or end is None or end <= start:
            raise DeployError("incident needs --from and --to, --from before --to")
        return build.incident(
            await sources.reveals(),
            await sources.contact_reads(start, end),
            await sources.site_customers(),
            await sources.secret_refs(),
            await sources.emails(),
            start=start,
            end=end,
            user_id=user_id,
            site_id=site_id,
        )
    if kind == "processing":
        counts, subcontractors = await sources.counts()
        return build.processing(counts, subcontractors)
    raise DeployError(f"unknown report {kind!r}: one of {', '.join(KINDS)}")


async def record_run(audit_url: str, report: build.Report, fmt: str, orgs: list[str]) -> int:
    """Append `report.run` to each organisation's chain, as the audit service itself would."""
    from doorward_kit.audit_client import AuditRecord, Outcome
    from doorward_kit.db import Database
    from services.audit.service import AuditService, Incoming

    details = {"kind": report.kind, "mode": fmt, "count": str(len(report.rows))}
    if report.filters.get("user"):
        details["user_id"] = report.filters["user"]
    if report.filters.get("site"):
        details["site_id"] = report.filters["site"]
    records = [
        Incoming(
            AuditRecord(
                org_id=org,
                actor_id="",
                action="report.run",
                outcome=Outcome.ALLOWED,
                target_type="Report",
                target_id=report.kind,
                details=details,
            ),
            "cli",
        )
        for org in orgs
    ]
    db = Database(audit_url, pool_size=1)
    try:
        async with db.unit_of_work() as session:
            result = await AuditService().append(session, records)
    finally:
        await db.dispose()
    return result.accepted


def render(report: build.Report, fmt: str) -> str:
    if fmt == "json":
        body: dict[str, Any] = {
            "report": report.kind,
            "generated_at": datetime.now(UTC).isoformat(),
            "filters": report.filters,
            "summary": report.summary,
            "rows": report.rows,
        }
        return json.dumps(body, indent=1, sort_keys=True, default=str) + "\n"
    out = io.StringIO()
    if report.rows:
        writer = csv.DictWriter(out, fieldnames=list(report.rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in report.rows:
            # No cell starts a spreadsheet formula (CSV injection from stored names).
            writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def _cell(value: object) -> str:
    text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def run_report(
    kind: str,
    fmt: str,
    env: Mapping[str, str],
    *,
    org_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    user_id: str | None = None,
    site_id: str | None = None,
) -> str:
    if fmt not in FORMATS:
        raise DeployError(f"--format must be one of {', '.join(FORMATS)}")
    urls = db_urls(env)

    async def main() -> str:
        sources = Sources(urls, org_id)
        report = await gather(kind, sources, start=start, end=end, user_id=user_id, site_id=site_id)
        orgs = sorted(report.orgs()) or await sources.orgs()
        try:
            await record_run(urls["audit"], report, fmt, orgs)
        except Exception as exc:
            raise DeployError(
                f"the report run could not be recorded on the audit trail "
                f"({type(exc).__name__}); nothing is shown"
            ) from exc
        return render(report, fmt)

    import asyncpg

    try:
        return asyncio.run(main())
    except (OSError, asyncpg.PostgresError) as exc:
        # The type only: a message may carry a login name or a URL.
        raise DeployError(f"cannot read the databases ({type(exc).__name__})") from exc
