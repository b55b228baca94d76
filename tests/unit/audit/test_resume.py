"""Verification that starts at a signed checkpoint (the checkpoint job's, O(new events)): the
checkpoint's last event hash and audit path must give its signed root, and the events after it
are checked as in a whole verification: a changed, removed or inserted event after the
checkpoint breaks at its seq, and so does a change to the checkpoint's own last event."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit import merkle
from services.audit.chain import ChainEvent
from services.audit.signing import Signer
from services.audit.verify import ChainVerifier, CheckpointEdge, IntegrityReport
from tests.unit.audit.test_verify import SIGNER, T0, _rewrite, make_chain

pytestmark = pytest.mark.unit

LEAVES = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(140)]


@pytest.mark.parametrize("n", range(1, 140))
def test_the_last_path_is_the_last_leafs_inclusion_proof_and_rebuilds_the_tree(n: int) -> None:
    acc = merkle.Accumulator()
    for leaf in LEAVES[:n]:
        acc.append_leaf_hash(leaf)
    path = acc.last_path()
    assert path == merkle.inclusion_proof(n - 1, LEAVES[:n])
    rebuilt = merkle.Accumulator.from_last_path(n, LEAVES[n - 1], path)
    assert rebuilt.root() == acc.root()
    assert rebuilt.frontier() == acc.frontier()
    assert rebuilt.last_path() == path
    # It goes on like the original: the next root is the same.
    rebuilt.append_leaf_hash(LEAVES[0])
    acc.append_leaf_hash(LEAVES[0])
    assert rebuilt.root() == acc.root()


def test_a_wrong_leaf_or_path_gives_another_root_or_is_refused() -> None:
    acc = merkle.Accumulator()
    for leaf in LEAVES[:13]:
        acc.append_leaf_hash(leaf)
    path = acc.last_path()
    assert path is not None
    assert merkle.Accumulator.from_last_path(13, LEAVES[0], path).root() != acc.root()
    forged = [*path[:-1], LEAVES[0]]
    assert merkle.Accumulator.from_last_path(13, LEAVES[12], forged).root() != acc.root()
    for bad in (path[:-1], [*path, LEAVES[0]]):
        with pytest.raises(ValueError):
            merkle.Accumulator.from_last_path(13, LEAVES[12], bad)
    with pytest.raises(ValueError):
        merkle.Accumulator.from_last_path(0, LEAVES[0], [])
    # A frontier restored from a prune anchor knows no path until the next leaf.
    assert merkle.Accumulator.from_frontier(acc.frontier()).last_path() is None


def edge_at(rows: list[dict], size: int, signer: Signer = SIGNER) -> CheckpointEdge:
    verifier = ChainVerifier("org-1")
    for row in rows[:size]:
        verifier.feed(ChainEvent.from_mapping(row))
    tree_size, root = verifier.root()
    checkpoint = signer.sign("org-1", tree_size, root, T0 + timedelta(hours=1))
    path = verifier.last_path()
    assert path is not None
    return CheckpointEdge(checkpoint, verifier.last_hash, tuple(path))


def resume(
    rows: list[dict], edge: CheckpointEdge, head: tuple[int, str] | None = None
) -> tuple[ChainVerifier, IntegrityReport]:
    """What the service does: the checkpoint's own last event is compared, the rest fed."""
    last = rows[-1]
    verifier = ChainVerifier(
        "org-1",
        public_key=SIGNER.public_key,
        head=head or (int(last["seq"]), last["hash"]),
        resume=edge,
    )
    if not verifier.resumed:
        return verifier, verifier.finish()
    tail = [ChainEvent.from_mapping(r) for r in rows if int(r["seq"]) >= verifier.resumed_from]
    if tail and tail[0].seq == verifier.resumed_from:
        verifier.check_resumed_event(tail.pop(0))
    else:
        verifier.check_resumed_event(None)
    for event in tail:
        verifier.feed(event)
    return verifier, verifier.finish()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(min_value=2, max_value=70), data=st.data())
def test_resuming_gives_the_same_tree_as_verifying_everything(n: int, data) -> None:
    rows = make_chain(n)
    k = data.draw(st.integers(min_value=1, max_value=n))
    whole = ChainVerifier("org-1")
    for row in rows:
        whole.feed(ChainEvent.from_mapping(row))
    verifier, report = resume(rows, edge_at(rows, k))
    assert verifier.resumed_from == k == report.resumed_from
    assert report.ok, report.problems
    assert report.checked_events == n - k  # only the new events were read
    assert (report.head_seq, report.head_hash) == (n, rows[-1]["hash"])
    assert verifier.root() == whole.root()
    assert verifier.last_path() == whole.last_path()


def _insert_at(rows: list[dict], seq: int) -> list[dict]:
    """An insider's insertion: a well-formed event linked to the one before, the later events
    renumbered (their hashes cannot be kept valid without the rest of the chain changing)."""
    forged = ChainEvent.from_mapping(
        {
            **rows[seq - 1],
            "id": "00000000-0000-4000-8000-999999999999",
            "prev_hash": rows[seq - 2]["hash"],
        }
    )
    inserted = {
        **rows[seq - 1],
        "id": forged.id,
        "prev_hash": forged.prev_hash,
        "hash": forged.compute_hash(),
    }
    return [*rows[: seq - 1], inserted, *({**r, "seq": r["seq"] + 1} for r in rows[seq - 1 :])]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("change", 8), ("delete", 8), ("insert", 9), ("change-the-checkpoints-last", 6)],
)
def test_tampering_after_the_checkpoint_breaks_at_its_seq(name: str, expected: int) -> None:
    rows = make_chain(12)
    head = (12, rows[-1]["hash"])
    edge = edge_at(rows, 6)
    if name == "change":
        rows[7]["actor_id"] = "someone-else"
    elif name == "delete":
        del rows[7]
    elif name == "insert":
        rows = _insert_at(rows, 8)
    else:
        rows[5]["action"] = "workorder.forged"
    _, report = resume(rows, edge, head=head)
    assert not report.ok
    assert report.first_broken_seq == expected
    # The same place a whole verification names.
    whole = ChainVerifier("org-1", head=head)
    for row in rows:
        whole.feed(ChainEvent.from_mapping(row))
    assert whole.finish().first_broken_seq == expected


def test_a_removed_tail_is_found_by_the_head() -> None:
    rows = make_chain(12)
    _, report = resume(rows[:9], edge_at(rows, 6), head=(12, rows[-1]["hash"]))
    assert report.first_broken_seq == 10


def test_a_rewritten_tail_with_a_moved_head_still_breaks_at_the_first_link() -> None:
    rows = make_chain(12)
    edge = edge_at(rows, 6)
    rewritten = _rewrite([dict(r) for r in rows], 6)  # event 6 onwards, fresh hashes
    _, report = resume(rewritten, edge)
    assert not report.ok
    assert report.first_broken_seq == 6


def test_a_checkpoint_that_does_not_check_out_is_not_resumed_from() -> None:
    rows = make_chain(12)
    edge = edge_at(rows, 6)
    other = Signer(Ed25519PrivateKey.generate())
    for bad in (
        edge_at(rows, 6, other),  # another key
        replace(edge, last_hash=rows[4]["hash"]),  # a hash the root does not cover
        replace(edge, last_path=(*edge.last_path[:-1], "00" * 32)),
        replace(edge, last_path=edge.last_path[:-1]),
        replace(edge, checkpoint=replace(edge.checkpoint, org_id="org-2")),
    ):
        verifier = ChainVerifier("org-1", public_key=SIGNER.public_key, resume=bad)
        assert not verifier.resumed
    # No key, nothing to trust.
    assert not ChainVerifier("org-1", resume=edge).resumed
    assert ChainVerifier("org-1", public_key=SIGNER.public_key, resume=edge).resumed
