"""Pruning the audit trail past retention, against the real audit service and PostgreSQL
(tables owned by the NOLOGIN owner, the service's own login): the old prefix goes, a signed
prune anchor stays, auditIntegrity and an offline export still verify, pruning is idempotent and
audited, and the database itself refuses any other deletion and any event younger than six
months, whoever asks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from services.audit.signing import load_public_key
from services.audit.verify import parse_jsonl, verify_dump
from tests.integration.audit.harness import AuditHarness, record, running_audit

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
YEAR = timedelta(days=365)
INTEGRITY = "{ auditIntegrity { ok checkedEvents firstBrokenSeq headHash } }"


async def _fill(audit: AuditHarness, org: str, ages: list[timedelta]) -> None:
    await audit.append([record(org, occurred_at=NOW - age) for age in ages])


async def _verify(audit: AuditHarness, org: str):
    async with audit.runtime.db.unit_of_work() as session:
        report, _ = await audit.runtime.service.verify_org(session, org)
    return report


async def _prune(audit: AuditHarness, org: str, before: datetime):
    async with audit.runtime.db.unit_of_work() as session:
        return await audit.runtime.service.prune_org(session, org, before)


async def test_old_prefix_pruned_rest_verifies_online_and_offline(postgres) -> None:
    async with running_audit(postgres) as audit:
        org = "org-prune"
        await _fill(audit, org, [7 * YEAR - timedelta(minutes=i) for i in range(6)])
        await audit.checkpoint()  # signed over 1..6, before the prune
        await _fill(audit, org, [timedelta(days=3), timedelta(days=2), timedelta(days=1)])
        await audit.checkpoint()  # over 1..9
        result = await _prune(audit, org, NOW - 6 * YEAR)
        assert (result.through, result.deleted) == (6, 6)
        conn = await audit.superuser()
        try:
            left = await conn.fetch(
                "SELECT seq, action FROM audit_events WHERE org_id = $1 ORDER BY seq", org
            )
            anchors = await conn.fetch("SELECT tree_size FROM audit_prunes WHERE org_id = $1", org)
        finally:
            await conn.close()
        # 7..9 stay, and the prune itself is on the trail (seq 10), with counts only.
        assert [r["seq"] for r in left] == [7, 8, 9, 10]
        assert left[-1]["action"] == "audit.prune"
        assert [a["tree_size"] for a in anchors] == [6]

        report = await _verify(audit, org)
        assert report.ok, report.problems
        assert report.pruned_through == 6 and report.checked_events == 4
        await audit.checkpoint()
        body = await audit.graphql(INTEGRITY, audit.token(org_id=org))
        assert body["data"]["auditIntegrity"]["ok"] is True
        assert body["data"]["auditIntegrity"]["firstBrokenSeq"] is None
        # Proofs need the pruned leaves: refused with a reason, not a wrong proof.
        body = await audit.graphql(
            "{ auditConsistencyProof(fromTreeSize: 7, toTreeSize: 9) { path } }",
            audit.token(org_id=org),
        )
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

        # Offline: an unfiltered export carries the anchor and verifies with the public key.
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(
                f"{audit.http_url}/export",
                params={"format": "jsonl"},
                headers={"authorization": f"Bearer {audit.token(org_id=org)}"},
            )
        assert response.status_code == 200
        dump = parse_jsonl(response.text.splitlines())
        assert len(dump.prunes) == 1 and min(int(e["seq"]) for e in dump.events) == 7
        (offline,) = verify_dump(dump, load_public_key(audit.key_file), org)
        assert offline.ok, offline.problems
        assert offline.pruned_through == 6
        # Without the prune line, the missing prefix is a break.
        dump.prunes.clear()
        (without,) = verify_dump(dump, load_public_key(audit.key_file), org)
        assert not without.ok and without.first_broken_seq == 1

        # Idempotent: nothing more is old enough.
        again = await _prune(audit, org, NOW - 6 * YEAR)
        assert (again.through, again.deleted) == (6, 0)


async def test_never_younger_than_six_months(postgres) -> None:
    async with running_audit(postgres) as audit:
        org = "org-young"
        await _fill(audit, org, [200 * timedelta(days=1), 100 * timedelta(days=1)])
        # Asked to prune everything: only the event older than six months goes.
        result = await _prune(audit, org, NOW + timedelta(days=1))
        assert (result.through, result.deleted) == (1, 1)
        assert (await _verify(audit, org)).ok


async def test_the_database_refuses_any_other_deletion(postgres) -> None:
    async with running_audit(postgres) as audit:
        org = "org-guard"
        await _fill(audit, org, [2 * YEAR, 2 * YEAR, timedelta(days=1)])
        conn = await audit.superuser()
        try:
            # Even the superuser's plain DELETE meets the append-only trigger.
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute("DELETE FROM audit_events WHERE org_id = $1", org)
            await conn.execute("SET ROLE doorward_audit_writer")
            # The writer cannot delete, not even claiming to be the prune function.
            await conn.execute("SET doorward.audit_prune = 'on'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM audit_events WHERE org_id = $1", org)
            await conn.execute("RESET doorward.audit_prune")
            # The function refuses without an anchor for exactly that prefix...
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no prune anchor"):
                await conn.fetchval("SELECT doorward_audit_prune($1, 2)", org)
            await conn.execute(
                "INSERT INTO audit_prunes (org_id, tree_size, root_hash, last_hash, frontier, "
                "signed_at, key_id, signature) VALUES ($1, 3, '', '', '[]', now(), 'k', 's')",
                org,
            )
            # ...and never deletes an event younger than six months, anchor or not.
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="six months"):
                await conn.fetchval("SELECT doorward_audit_prune($1, 3)", org)
            # And anchors are append-only too.
            await conn.execute("RESET ROLE")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute("DELETE FROM audit_prunes WHERE org_id = $1", org)
            assert (
                await conn.fetchval("SELECT count(*) FROM audit_events WHERE org_id = $1", org) == 3
            )
        finally:
            await conn.close()


async def test_prune_events_over_grpc_only_for_workorders(postgres) -> None:
    from doorward_kit.errors import DoorwardError, ErrorCode
    from doorward_kit.grpc import ServiceChannel
    from services.workorders.clients import GrpcAuditPruner

    async with running_audit(postgres) as audit:
        org = "org-grpc"
        await _fill(audit, org, [3 * YEAR, 3 * YEAR, timedelta(days=1)])
        # Another service's certificate: refused by the allow-list, nothing deleted.
        other = ServiceChannel(audit.grpc_target, audit.pki.auth("identity"), server="audit")
        try:
            with pytest.raises(DoorwardError) as refused:
                await GrpcAuditPruner(other).prune(org, NOW - 2 * YEAR)
            assert refused.value.code in (ErrorCode.FORBIDDEN, ErrorCode.UNAUTHENTICATED)
        finally:
            await other.close()
        assert (await _verify(audit, org)).checked_events == 3
        # workorders' retention purge (its certificate) may.
        pruner = GrpcAuditPruner(audit.channel)
        assert await pruner.prune(org, NOW - 2 * YEAR) == 2
        assert await pruner.prune(org, NOW - 2 * YEAR) == 0
        report = await _verify(audit, org)
        assert report.ok and report.pruned_through == 2
