import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import merkle
from services.audit.chain import GENESIS_HASH, ChainEvent, parse_time
from services.audit.signing import Signer, verify_checkpoint
from services.audit.verify import (
    ChainVerifier,
    _copy_field,
    parse_csv,
    parse_jsonl,
    parse_pg_dump,
    verify_rows,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
SIGNER = Signer(Ed25519PrivateKey.generate())


def make_chain(n: int, org: str = "org-1") -> list[dict]:
    rows, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        event = ChainEvent(
            org_id=org,
            seq=seq,
            id=f"00000000-0000-4000-8000-{seq:012d}",
            occurred_at=T0 + timedelta(seconds=seq),
            actor_id="u-1",
            action="workorder.update",
            outcome="ALLOWED",
            work_order_id="w-1",
            secret_ref_id="",
            target_type="WorkOrder",
            target_id="w-1",
            trace_id="ab" * 16,
            source_ip="10.0.0.1",
            service="workorders",
            prev_hash=prev,
            details={"status": "DISPATCHED"},
        )
        prev = event.compute_hash()
        row = {**event.__dict__, "hash": prev}
        row["occurred_at"] = event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rows.append(row)
    return rows


def checkpoint_rows(rows: list[dict], *sizes: int) -> list[dict]:
    out = []
    for size in sizes:
        root = merkle.root([bytes.fromhex(r["hash"]) for r in rows[:size]]).hex()
        cp = SIGNER.sign(rows[0]["org_id"], size, root, T0 + timedelta(hours=1))
        out.append({**cp.__dict__, "signed_at": cp.signed_at.isoformat()})
    return out


def first_broken(rows, cps=(), heads=()):
    """The hash chain (and whatever checkpoints and head are given), without the key's demand
    for signatures: the chain's own checks."""
    (report,) = verify_rows(rows, checkpoints=cps, heads=heads)
    return report


def head_of(rows: list[dict]) -> list[dict]:
    return [{"org_id": rows[-1]["org_id"], "seq": rows[-1]["seq"], "hash": rows[-1]["hash"]}]


def with_key(rows, cps=(), heads=(), **kwargs):
    (report,) = verify_rows(
        rows, checkpoints=cps, heads=heads, public_key=SIGNER.public_key, **kwargs
    )
    return report


def test_an_untouched_chain_verifies_in_any_row_order():
    rows = make_chain(20)
    report = with_key(rows[::-1], checkpoint_rows(rows, 5, 20), head_of(rows))
    assert report.ok and report.first_broken_seq is None and report.signed_up_to == 20
    assert report.checked_events == 20 and report.head_seq == 20
    assert report.head_hash == rows[-1]["hash"]
    assert report.checkpoint is not None and report.checkpoint.tree_size == 20


@pytest.mark.parametrize("field", ["actor_id", "action", "target_id", "trace_id", "service"])
def test_any_changed_field_breaks_at_its_seq(field):
    rows = make_chain(10)
    rows[6][field] = "changed"
    assert first_broken(rows).first_broken_seq == 7


def test_changed_details_and_time_break():
    rows = make_chain(10)
    rows[2]["details"] = {"status": "CANCELLED"}
    assert first_broken(rows).first_broken_seq == 3
    rows = make_chain(10)
    rows[3]["occurred_at"] = "2026-05-01T08:00:04.000001Z"
    assert first_broken(rows).first_broken_seq == 4


def test_deleted_and_duplicated_events():
    rows = make_chain(10)
    assert first_broken(rows[:4] + rows[5:]).first_broken_seq == 5
    assert first_broken(rows[:1] + rows[2:]).first_broken_seq == 2
    dup = dict(rows[4])
    assert first_broken([*rows, dup]).first_broken_seq == 5


def test_swapped_seqs_break_at_the_first():
    rows = make_chain(10)
    rows[4]["seq"], rows[5]["seq"] = 6, 5
    assert first_broken(rows).first_broken_seq == 5


def test_lost_tail_is_found_by_checkpoint_or_head():
    rows = make_chain(10)
    assert first_broken(rows[:7]).ok  # without them nothing can tell
    assert first_broken(rows[:7], checkpoint_rows(rows, 9)).first_broken_seq == 8
    heads = [{"org_id": "org-1", "seq": 10, "hash": rows[-1]["hash"]}]
    assert first_broken(rows[:7], heads=heads).first_broken_seq == 8


def _rewrite(rows: list[dict], start: int) -> list[dict]:
    rows = [dict(r) for r in rows]
    prev = rows[start - 2]["hash"] if start > 1 else GENESIS_HASH
    for row in rows[start - 1 :]:
        if row["seq"] == start:
            row["action"] = "workorder.forged"
        row["prev_hash"] = prev
        prev = ChainEvent.from_mapping(row).compute_hash()
        row["hash"] = prev
    return rows


def test_a_rewritten_chain_is_caught_between_checkpoints():
    rows = make_chain(16)
    cps = checkpoint_rows(rows, 4, 8, 16)
    forged = _rewrite(rows, 10)
    assert first_broken(forged).ok  # the chain alone cannot tell
    report = with_key(forged, cps, head_of(forged))
    assert report.first_broken_seq == 9  # the earliest event the signatures cannot vouch for
    assert report.checkpoint is not None and report.checkpoint.tree_size == 8


def test_forged_or_foreign_checkpoints_do_not_count():
    rows = make_chain(6)
    cps = checkpoint_rows(rows, 6)
    cps[0]["root_hash"] = "00" * 32
    report = with_key(rows, cps, head_of(rows))
    assert not report.ok and "signature" in report.problems[0]
    other = Signer(Ed25519PrivateKey.generate())
    root = merkle.root([bytes.fromhex(r["hash"]) for r in rows]).hex()
    cp = other.sign("org-1", 6, root, T0)
    assert not verify_checkpoint(cp, SIGNER.public_key)
    assert verify_checkpoint(cp, other.public_key)


def test_orgs_are_verified_separately_and_can_be_selected():
    rows = make_chain(3, "org-a") + make_chain(4, "org-b")
    rows[5]["action"] = "x.y"
    reports = {r.org_id: r for r in verify_rows(rows)}
    assert reports["org-a"].ok and reports["org-b"].first_broken_seq == 3
    (only,) = verify_rows(rows, org_id="org-a")
    assert only.org_id == "org-a" and only.checked_events == 3


def test_unreadable_rows_fail_verification():
    rows = make_chain(3)
    rows[1]["occurred_at"] = "yesterday"
    report = first_broken(rows)
    assert not report.ok


def test_accumulator_root_matches_checkpoints():
    rows = make_chain(7)
    verifier = ChainVerifier("org-1")
    for row in rows:
        verifier.feed(ChainEvent.from_mapping(row))
    size, root = verifier.root()
    assert size == 7 and root == checkpoint_rows(rows, 7)[0]["root_hash"]


# ---- dump formats ------------------------------------------------------------------------


def test_jsonl_with_checkpoints_and_head():
    rows = make_chain(5)
    lines = [json.dumps(r) for r in rows]
    lines += [json.dumps({"record": "checkpoint", **c}) for c in checkpoint_rows(rows, 5)]
    lines.append(
        json.dumps({"record": "head", "org_id": "org-1", "seq": 5, "hash": rows[-1]["hash"]})
    )
    dump = parse_jsonl(lines)
    assert len(dump.events) == 5 and len(dump.checkpoints) == 1 and len(dump.heads) == 1
    assert with_key(dump.events, dump.checkpoints, dump.heads).ok


def test_csv_export():
    rows = make_chain(4)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "details": json.dumps(r["details"])})
    dump = parse_csv(io.StringIO(out.getvalue()))
    assert first_broken(dump.events).ok


def test_pg_dump_copy_blocks():
    rows = make_chain(3)
    cols = [
        "org_id",
        "seq",
        "id",
        "occurred_at",
        "actor_id",
        "action",
        "outcome",
        "work_order_id",
        "secret_ref_id",
        "target_type",
        "target_id",
        "trace_id",
        "source_ip",
        "service",
        "details",
        "prev_hash",
        "hash",
        "received_at",
    ]
    lines = [
        "--",
        "-- PostgreSQL database dump",
        "SET statement_timeout = 0;",
        f"COPY public.audit_events ({', '.join(cols)}) FROM stdin;",
    ]
    for r in rows:
        values = dict(r)
        # PostgreSQL's own text forms: a space, a short offset, jsonb with spaces.
        values["occurred_at"] = (
            parse_time(r["occurred_at"])
            .astimezone(__import__("datetime").timezone(timedelta(hours=2)))
            .isoformat(sep=" ")
        )
        values["details"] = json.dumps(r["details"], separators=(", ", ": "))
        values["received_at"] = "\\N"
        lines.append("\t".join(str(values[c]) for c in cols))
    lines += [
        "\\.",
        "",
        "COPY public.audit_heads (org_id, seq, hash) FROM stdin;",
        f"org-1\t3\t{rows[-1]['hash']}",
        "\\.",
    ]
    dump = parse_pg_dump(line + "\n" for line in lines)
    assert len(dump.events) == 3 and dump.heads[0]["seq"] == "3"
    assert first_broken(dump.events, heads=dump.heads).ok


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("\\N", None),
        ("plain", "plain"),
        ("a\\tb", "a\tb"),
        ("back\\\\slash", "back\\slash"),
        ("\\101", "A"),
        ("\\x41", "A"),
        ("line\\nbreak", "line\nbreak"),
    ],
)
def test_copy_text_escapes(raw, value):
    assert _copy_field(raw) == value


def test_the_command_exit_codes(tmp_path):
    from typer.testing import CliRunner

    from services.audit.signing import public_key_pem
    from services.audit.verify import audit_app

    rows = make_chain(6)
    key = tmp_path / "pub.pem"
    key.write_text(public_key_pem(SIGNER.public_key))
    good = tmp_path / "good.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines += [json.dumps({"record": "checkpoint", **c}) for c in checkpoint_rows(rows, 6)]
    lines += [json.dumps({"record": "head", **h}) for h in head_of(rows)]
    good.write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    result = runner.invoke(audit_app, ["verify", "--dump", str(good), "--public-key", str(key)])
    assert result.exit_code == 0 and "org org-1: OK, 6 events" in result.output
    assert "signed checkpoint: tree size 6" in result.output
    rows[3]["action"] = "x.y"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = runner.invoke(audit_app, ["verify", "--dump", str(bad), "--public-key", str(key)])
    assert result.exit_code == 1 and "BROKEN at seq 4 " in result.output
    args = ["verify", "--dump", str(good), "--public-key", str(key), "--org", "nobody"]
    assert runner.invoke(audit_app, args).exit_code == 2
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("{not json\n")
    args = ["verify", "--dump", str(garbage), "--public-key", str(key)]
    assert runner.invoke(audit_app, args).exit_code == 2
