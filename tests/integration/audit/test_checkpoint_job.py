"""The checkpoint job verifies from the newest signed checkpoint, not from event 1: its cost is
the new events, not the whole trail. A changed, removed or inserted event after that checkpoint
still stops the job (no signature, an integrity_broken alert naming the first broken seq);
auditIntegrity still verifies the whole chain and every checkpoint, so a change before the
checkpoint is still found there (and offline)."""

from __future__ import annotations

import json

import pytest

from services.audit import merkle
from services.audit.chain import ChainEvent
from tests.integration.audit.harness import record, running_audit
from tests.integration.audit.test_tamper_evidence import INTEGRITY, _tamper

pytestmark = pytest.mark.integration


async def _append(audit, count: int) -> None:
    await audit.append([record(target_type="WorkOrder", target_id=f"w-{i}") for i in range(count)])


async def _since_checkpoint(audit):
    async with audit.runtime.db.unit_of_work() as session:
        report, _ = await audit.runtime.service.verify_since_checkpoint(session, "org-1")
    return report


async def _integrity_alerts(audit) -> list[str]:
    conn = await audit.superuser()
    try:
        rows = await conn.fetch(
            "SELECT details FROM security_alerts WHERE rule = 'integrity_broken' ORDER BY raised_at"
        )
    finally:
        await conn.close()
    return [json.loads(r["details"])["first_seq"] for r in rows]


async def test_the_job_reads_only_the_events_after_the_last_checkpoint(postgres) -> None:
    async with running_audit(postgres) as audit:
        await _append(audit, 30)
        first = await _since_checkpoint(audit)
        assert first.ok and first.resumed_from == 0 and first.checked_events == 30
        assert await audit.checkpoint() == 1
        await _append(audit, 5)
        report = await _since_checkpoint(audit)
        assert report.ok, report.problems
        assert report.resumed_from == 30 and report.checked_events == 5
        assert report.head_seq == 35
        assert await audit.checkpoint() == 1
        # The checkpoint it signed is the one a whole verification finds valid.
        body = await audit.graphql(INTEGRITY, audit.token())
        whole = body["data"]["auditIntegrity"]
        assert whole["ok"] is True and whole["checkedEvents"] == 35
        assert whole["checkpoint"]["treeSize"] == 35
        # And the next pass starts from it.
        await _append(audit, 2)
        assert (await _since_checkpoint(audit)).resumed_from == 35


@pytest.mark.parametrize(
    ("name", "statements", "expected"),
    [
        ("change", ["UPDATE audit_events SET actor_id = 'someone-else' WHERE seq = 12"], 12),
        ("delete", ["DELETE FROM audit_events WHERE seq = 12"], 12),
        # A copy of event 12 renumbered into the chain: everything from 12 on moves one up.
        (
            "insert",
            [
                "UPDATE audit_events SET seq = seq + 100 WHERE seq >= 12",
                "UPDATE audit_events SET seq = seq - 99 WHERE seq >= 112",
                "INSERT INTO audit_events SELECT org_id, 12, gen_random_uuid()::text, "
                "occurred_at, received_at, actor_id, action, outcome, work_order_id, "
                "secret_ref_id, target_type, target_id, trace_id, source_ip, service, details, "
                "prev_hash, hash FROM audit_events WHERE seq = 13",
                "UPDATE audit_heads SET seq = 17",
            ],
            12,
        ),
        ("delete-tail", ["DELETE FROM audit_events WHERE seq >= 15"], 15),
        (
            "change-the-checkpoints-last",
            ["UPDATE audit_events SET action = 'x.y' WHERE seq = 10"],
            10,
        ),
    ],
)
async def test_tampering_after_the_last_checkpoint_stops_the_job(
    postgres, name, statements, expected
) -> None:
    async with running_audit(postgres) as audit:
        await _append(audit, 10)
        assert await audit.checkpoint() == 1
        await _append(audit, 6)
        await _tamper(audit, *statements)
        report = await _since_checkpoint(audit)
        assert report.resumed_from == 10
        assert report.first_broken_seq == expected, report.problems
        assert await audit.checkpoint() == 0  # nothing signed over it
        assert await _integrity_alerts(audit) == [str(expected)]
        body = await audit.graphql(INTEGRITY, audit.token())
        assert body["data"]["auditIntegrity"]["firstBrokenSeq"] == expected


async def test_without_a_usable_checkpoint_the_job_verifies_everything(postgres) -> None:
    """Checkpoints signed before their edges were kept (NULL), or whose edge does not give the
    signed root, are not resumed from: the job verifies the whole chain, and signs."""
    async with running_audit(postgres) as audit:
        await _append(audit, 8)
        assert await audit.checkpoint() == 1
        await _append(audit, 3)
        await _tamper(audit, "UPDATE audit_checkpoints SET last_hash = NULL, last_path = NULL")
        report = await _since_checkpoint(audit)
        assert report.ok and report.resumed_from == 0 and report.checked_events == 11
        assert await audit.checkpoint() == 1
        await _append(audit, 3)
        conn = await audit.superuser()
        try:
            other = await conn.fetchval("SELECT hash FROM audit_events WHERE seq = 3")
        finally:
            await conn.close()
        await _tamper(audit, f"UPDATE audit_checkpoints SET last_hash = '{other}'")
        report = await _since_checkpoint(audit)
        assert report.ok and report.resumed_from == 0 and report.checked_events == 14
        assert await audit.checkpoint() == 1


async def test_a_change_before_the_checkpoint_is_still_found_by_audit_integrity(postgres) -> None:
    """The job trusts what it signed; the auditor's whole verification does not."""
    async with running_audit(postgres) as audit:
        await _append(audit, 10)
        assert await audit.checkpoint() == 1
        await _tamper(audit, "UPDATE audit_events SET actor_id = 'someone-else' WHERE seq = 4")
        await _append(audit, 2)
        assert await audit.checkpoint() == 1  # built on the signed tree, not on the change
        body = await audit.graphql(INTEGRITY, audit.token())
        report = body["data"]["auditIntegrity"]
        assert report["ok"] is False and report["firstBrokenSeq"] == 4
        # The new checkpoint stays true to the signed history: a whole verification of the
        # untampered events finds it valid (its root is over the original hash of event 4).
        conn = await audit.superuser()
        try:
            rows = [dict(r) for r in await conn.fetch("SELECT * FROM audit_events ORDER BY seq")]
            root = await conn.fetchval(
                "SELECT root_hash FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1"
            )
        finally:
            await conn.close()
        hashes = [bytes.fromhex(r["hash"]) for r in rows]
        assert merkle.root(hashes).hex() == root  # stored hashes were not touched
        assert ChainEvent.from_mapping(rows[3]).compute_hash() != rows[3]["hash"]


async def test_a_change_before_the_checkpoint_is_alerted_by_the_whole_chain_check(
    postgres,
) -> None:
    """The checkpoint job no longer looks behind its last signature: the scheduled whole-chain
    check does, and raises the alert without anyone asking (once per broken seq)."""
    from services.audit.runtime import verify_all

    async with running_audit(postgres) as audit:
        await _append(audit, 10)
        assert await audit.checkpoint() == 1
        assert await verify_all(audit.runtime.db, audit.runtime.service) == []
        assert await _integrity_alerts(audit) == []
        await _tamper(audit, "UPDATE audit_events SET actor_id = 'someone-else' WHERE seq = 4")
        await _append(audit, 2)
        assert await audit.checkpoint() == 1
        assert await _integrity_alerts(audit) == []  # the job did not look
        assert await verify_all(audit.runtime.db, audit.runtime.service) == ["org-1"]
        assert await _integrity_alerts(audit) == ["4"]
        await verify_all(audit.runtime.db, audit.runtime.service)
        assert await _integrity_alerts(audit) == ["4"]  # not raised again


@pytest.mark.parametrize(
    "column, value",
    [
        ("last_path", "true"),
        ("last_path", "[1, 2]"),
        ("last_path", '["not-hex"]'),
        ("last_hash", "'ABCDEF'"),
    ],
)
async def test_a_malformed_checkpoint_edge_means_a_whole_verification(
    postgres, column: str, value: str
) -> None:
    """The edge columns are not signed: whatever a writer puts there, the job verifies the
    whole chain (and goes on signing), it never stops for the organisation."""
    async with running_audit(postgres) as audit:
        await _append(audit, 10)
        assert await audit.checkpoint() == 1
        cast = "::jsonb" if column == "last_path" else ""
        await _tamper(
            audit,
            f"UPDATE audit_checkpoints SET {column} = '{value.strip(chr(39))}'{cast}"
            if column == "last_path"
            else f"UPDATE audit_checkpoints SET {column} = {value}",
        )
        await _append(audit, 2)
        report = await _since_checkpoint(audit)
        assert report.ok and report.resumed_from == 0 and report.checked_events == 12
        assert await audit.checkpoint() == 1
