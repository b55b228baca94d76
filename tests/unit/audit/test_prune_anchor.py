"""Audit pruning without breaking verification: the prefix 1..k is replaced by a signed prune
anchor (its chain head, Merkle root and frontier); the rest verifies from it, checkpoints signed
before the prune over more than k events still check out (their roots are recomputed from the
frontier), and a forged, foreign or missing anchor, or a changed remaining event, is caught."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit import merkle
from services.audit.signing import PruneAnchor, Signer
from services.audit.verify import anchor_row, parse_jsonl, verify_dump, verify_rows
from tests.unit.audit.test_verify import (
    SIGNER,
    T0,
    _rewrite,
    checkpoint_rows,
    head_of,
    make_chain,
)

pytestmark = pytest.mark.unit


def anchor_for(rows: list[dict], k: int, signer: Signer = SIGNER) -> PruneAnchor:
    acc = merkle.Accumulator()
    for row in rows[:k]:
        acc.append(bytes.fromhex(row["hash"]))
    return signer.sign_prune(
        rows[0]["org_id"],
        k,
        acc.root().hex(),
        rows[k - 1]["hash"],
        [(size, node.hex()) for size, node in acc.frontier()],
        T0 + timedelta(days=400),
    )


def verify(rows, cps=(), anchors=(), heads=None, key=True):
    (report,) = verify_rows(
        rows,
        checkpoints=cps,
        heads=head_of(rows) if heads is None else heads,
        public_key=SIGNER.public_key if key else None,
        prunes=[anchor_row(a) for a in anchors],
        org_id="org-1",
    )
    return report


@settings(max_examples=40, deadline=None)
@given(n=st.integers(min_value=2, max_value=70), data=st.data())
def test_the_rest_verifies_from_the_anchor(n: int, data: st.DataObject) -> None:
    rows = make_chain(n)
    k = data.draw(st.integers(min_value=1, max_value=n - 1))
    later = data.draw(st.integers(min_value=k + 1, max_value=n))
    # Checkpoints signed before the prune, inside and after the pruned prefix, and at the end.
    cps = checkpoint_rows(rows, *sorted({k, later, n}))
    report = verify(rows[k:], cps, [anchor_for(rows, k)])
    assert report.ok, report.problems
    assert report.pruned_through == k and report.signed_up_to == n
    assert report.checked_events == n - k and report.head_seq == n


def test_without_the_anchor_the_pruned_prefix_is_a_break() -> None:
    rows = make_chain(10)
    report = verify(rows[4:], checkpoint_rows(rows, 10))
    assert not report.ok and report.first_broken_seq == 1


def test_a_forged_anchor_does_not_count() -> None:
    rows = make_chain(10)
    cps = checkpoint_rows(rows, 10)
    other = Signer(Ed25519PrivateKey.generate())
    assert not verify(rows[4:], cps, [anchor_for(rows, 4, other)]).ok
    good = anchor_for(rows, 4)
    # Each signed field changed after signing.
    for forged in (
        replace(good, tree_size=3),
        replace(good, last_hash="ab" * 32),
        replace(good, root_hash="cd" * 32),
        replace(good, frontier=((4, "ef" * 32),)),
    ):
        report = verify(rows[4:], cps, [forged])
        assert not report.ok and report.first_broken_seq == 1, forged
    # Re-signed by the real key, but a frontier that does not give the root.
    bad = SIGNER.sign_prune(
        "org-1", 4, good.root_hash, good.last_hash, [(4, "ef" * 32)], good.signed_at
    )
    report = verify(rows[4:], cps, [bad])
    assert not report.ok and any("frontier" in p for p in report.problems)
    # Another organisation's anchor is not this one's.
    foreign = anchor_for(make_chain(10, org="org-2"), 4)
    assert not verify(rows[4:], cps, [foreign]).ok


def test_a_changed_remaining_event_or_a_lost_link_breaks() -> None:
    rows = make_chain(12)
    cps = checkpoint_rows(rows, 12)
    anchor = anchor_for(rows, 5)
    changed = [dict(r) for r in rows[5:]]
    changed[2]["action"] = "secret.reveal"
    assert verify(changed, cps, [anchor]).first_broken_seq == 8
    # Pruning one event more than the anchor says: the gap shows.
    assert verify(rows[6:], cps, [anchor]).first_broken_seq == 6
    # An anchor from a different chain with the same size: the link breaks.
    stranger = make_chain(12)
    stranger[0]["actor_id"] = "u-2"
    rewritten = _rewrite(stranger, 1)
    assert not verify(rows[5:], cps, [anchor_for(rewritten, 5)]).ok


def test_the_newest_anchor_wins_and_everything_pruned_still_verifies() -> None:
    rows = make_chain(9)
    cps = checkpoint_rows(rows, 9)
    assert verify(rows[6:], cps, [anchor_for(rows, 3), anchor_for(rows, 6)]).ok
    report = verify([], cps, [anchor_for(rows, 9)], heads=head_of(rows))
    assert report.ok and report.pruned_through == 9


def test_jsonl_export_with_a_prune_line() -> None:
    rows = make_chain(8)
    lines = [json.dumps({"record": "prune", **anchor_row(anchor_for(rows, 3))})]
    lines += [json.dumps(r) for r in rows[3:]]
    lines += [json.dumps({"record": "checkpoint", **c}) for c in checkpoint_rows(rows, 8)]
    lines += [json.dumps({"record": "head", **h}) for h in head_of(rows)]
    dump = parse_jsonl(lines)
    assert len(dump.prunes) == 1
    (report,) = verify_dump(dump, SIGNER.public_key)
    assert report.ok and report.pruned_through == 3
