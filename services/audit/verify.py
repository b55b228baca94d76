"""Verification of an audit trail: the hash chain, the signed checkpoints and the head.

`verify_rows` is pure (an iterable of rows in, reports out); the service's auditIntegrity and
the offline command `doorward audit verify --dump FILE --public-key FILE [--org ID]` share it.
A dump is the service's JSON Lines or CSV export (/export), or a `pg_dump` plain SQL file of the
audit database (its COPY data is read).

What each check catches:
- chain: a changed event (its hash no longer matches), a changed or inserted link (prev_hash),
  a deleted event (a gap in seq), a reordered or duplicated event (seq out of order);
- signed checkpoints: a chain rewritten from some event on with fresh hashes (the Merkle root
  over the stored hashes no longer matches what the key signed), and a deleted tail;
- head row: a deleted tail after the last checkpoint.

With a public key (always, offline) a dump must also carry what the key vouches for: at least
one valid signed checkpoint, the head, and checkpoints covering every event. Without that, a
writer who rewrites events, recomputes every hash and leaves the checkpoint and head lines out
would hand over a chain that verifies: so a missing checkpoint, a missing head or events after
the newest valid checkpoint are named and the trail is NOT VERIFIED. An operator may accept an
unsigned tail after a valid checkpoint explicitly (`--allow-unsigned-tail`, e.g. for a pg_dump
of a live database); it is still listed.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.audit import merkle
from services.audit.chain import GENESIS_HASH, ChainEvent, parse_time
from services.audit.signing import Checkpoint, PruneAnchor, load_public_key, verify_checkpoint

Row = Mapping[str, Any]


@dataclass
class IntegrityReport:
    org_id: str
    ok: bool
    checked_events: int
    first_broken_seq: int | None
    head_seq: int
    head_hash: str
    # The newest checkpoint whose signature and Merkle root both check out.
    checkpoint: Checkpoint | None
    problems: list[str] = field(default_factory=list)
    # Events 1..signed_up_to are vouched for by a valid signed checkpoint.
    signed_up_to: int = 0
    # Events 1..pruned_through were deleted past retention; a valid signed prune anchor stands
    # for them and verification started from it.
    pruned_through: int = 0
    # Events 1..resumed_from were not read again: verification started at a signed checkpoint
    # over them (ChainVerifier(resume=...)), which the service signed only after verifying them.
    resumed_from: int = 0


def anchor_from_row(row: Row) -> PruneAnchor:
    frontier = row["frontier"]
    if isinstance(frontier, str):
        frontier = json.loads(frontier)
    return PruneAnchor(
        org_id=str(row["org_id"]),
        tree_size=int(row["tree_size"]),
        root_hash=str(row["root_hash"]),
        last_hash=str(row["last_hash"]),
        frontier=tuple((int(size), str(node)) for size, node in frontier),
        signed_at=parse_time(row["signed_at"]),
        key_id=str(row["key_id"]),
        signature=str(row["signature"]),
    )


def anchor_row(anchor: PruneAnchor) -> dict[str, Any]:
    """The form an anchor takes in an export line (and the database)."""
    return {
        "org_id": anchor.org_id,
        "tree_size": anchor.tree_size,
        "root_hash": anchor.root_hash,
        "last_hash": anchor.last_hash,
        "frontier": [[size, node] for size, node in anchor.frontier],
        "signed_at": anchor.signed_at.isoformat(),
        "key_id": anchor.key_id,
        "signature": anchor.signature,
    }


def checkpoint_from_row(row: Row) -> Checkpoint:
    return Checkpoint(
        org_id=str(row["org_id"]),
        tree_size=int(row["tree_size"]),
        root_hash=str(row["root_hash"]),
        signed_at=parse_time(row["signed_at"]),
        key_id=str(row["key_id"]),
        signature=str(row["signature"]),
    )


@dataclass(frozen=True)
class CheckpointEdge:
    """A signed checkpoint with what the service kept beside it: the hash of its last event and
    that event's Merkle audit path. Together they give the checkpoint's root (so the signature
    vouches for them too) and the tree's frontier: verification can go on from its tree size
    without reading events 1..tree_size again."""

    checkpoint: Checkpoint
    last_hash: str
    last_path: tuple[str, ...]


class ChainVerifier:
    """Feed one organisation's events in seq order, then finish()."""

    def __init__(
        self,
        org_id: str,
        *,
        public_key: Ed25519PublicKey | None = None,
        checkpoints: Iterable[Checkpoint] = (),
        head: tuple[int, str] | None = None,
        require_signed: bool = False,
        allow_unsigned_tail: bool = False,
        anchors: Iterable[PruneAnchor] = (),
        resume: CheckpointEdge | None = None,
    ) -> None:
        """`require_signed`: the offline check; a trail is verified only as far as a valid
        signed checkpoint reaches, and a head must be given (see the module docstring). The
        service's own live check leaves it off: its newest events wait for the next
        checkpoint.

        `resume`: start after the events a signed checkpoint covers (the checkpoint job: the
        service signed it only over a chain that verified). Taken only when its signature, its
        last event's hash and audit path give its root; see `resumed` (feed events from
        resumed_from + 1 on). Otherwise nothing is assumed and every event must be fed."""
        if require_signed and public_key is None:
            raise ValueError("require_signed needs a public key")
        self.org_id = org_id
        self._public_key = public_key
        self._head = head
        self._require_signed = require_signed
        self._allow_unsigned_tail = allow_unsigned_tail
        self._accumulator = merkle.Accumulator()
        self._last_seq = 0
        self._last_hash = GENESIS_HASH
        self._chain_break: int | None = None
        self._chain_reason = ""
        self._checked = 0
        self._problems: list[str] = []
        self._valid_checkpoint: Checkpoint | None = None
        self._last_good_size = 0
        self._checkpoint_break: tuple[int, int] | None = None  # (first, last) seq of a bad range
        self._pending: list[Checkpoint] = []
        for cp in sorted(checkpoints, key=lambda c: c.tree_size):
            if cp.org_id != org_id:
                continue
            if public_key is not None and not verify_checkpoint(cp, public_key):
                self._problems.append(
                    f"checkpoint at tree size {cp.tree_size}: the signature does not verify"
                )
                continue
            self._pending.append(cp)
        self._pruned = 0
        self.resumed_from = 0
        mine = [a for a in anchors if a.org_id == org_id]
        if mine:
            self._start_from(max(mine, key=lambda a: a.tree_size))
        if resume is not None:
            self._resume(resume)

    @property
    def resumed(self) -> bool:
        return self.resumed_from > 0

    def _resume(self, edge: CheckpointEdge) -> None:
        """Go on from a signed checkpoint, if everything about it checks out; silently not
        otherwise (the caller then verifies from the start, which names what is wrong)."""
        cp = edge.checkpoint
        if (
            self._public_key is None
            or cp.org_id != self.org_id
            or cp.tree_size <= self._last_seq
            or not verify_checkpoint(cp, self._public_key)
        ):
            return
        try:
            accumulator = merkle.Accumulator.from_last_path(
                cp.tree_size,
                merkle.leaf_hash(bytes.fromhex(edge.last_hash)),
                [bytes.fromhex(node) for node in edge.last_path],
            )
        except ValueError:
            return
        if accumulator.root().hex() != cp.root_hash:
            return
        self._accumulator = accumulator
        self._last_seq = cp.tree_size
        self._last_hash = edge.last_hash
        self._last_good_size = cp.tree_size
        self._valid_checkpoint = cp
        self.resumed_from = cp.tree_size
        self._pending = [p for p in self._pending if p.tree_size > cp.tree_size]

    def _start_from(self, anchor: PruneAnchor) -> None:
        """Events 1..anchor.tree_size were pruned: go on from the anchor's chain head and Merkle
        frontier, once its signature and its frontier check out. Otherwise verification starts
        at the genesis, and the missing events are a break."""
        where = f"prune anchor at tree size {anchor.tree_size}"
        if self._public_key is not None and not verify_checkpoint(anchor, self._public_key):
            self._problems.append(f"{where}: the signature does not verify")
            return
        try:
            accumulator = merkle.Accumulator.from_frontier(
                [(size, bytes.fromhex(node)) for size, node in anchor.frontier]
            )
        except ValueError:
            self._problems.append(f"{where}: its frontier is not a Merkle tree's")
            return
        if accumulator.size != anchor.tree_size or accumulator.root().hex() != anchor.root_hash:
            self._problems.append(f"{where}: its frontier does not give its root")
            return
        self._accumulator = accumulator
        self._last_seq = anchor.tree_size
        self._last_hash = anchor.last_hash
        self._last_good_size = anchor.tree_size
        self._pruned = anchor.tree_size
        # Checkpoints inside the pruned prefix: their events are gone, the anchor stands for them.
        self._pending = [cp for cp in self._pending if cp.tree_size > anchor.tree_size]

    def check_resumed_event(self, event: ChainEvent | None) -> None:
        """The checkpoint's own last event, as stored now (None: not found). Not fed again:
        only compared with the hash the checkpoint vouches for, which catches a change to the
        newest signed event at the cost of one row."""
        seq = self.resumed_from
        if event is None or event.seq != seq:
            self._broken(seq, f"seq {seq} is missing")
        elif event.hash != self._last_hash or event.compute_hash() != self._last_hash:
            self._broken(seq, f"seq {seq} was changed (its hash does not match)")

    def _broken(self, seq: int, reason: str) -> None:
        if self._chain_break is None:
            self._chain_break = seq
            self._chain_reason = reason

    def feed(self, event: ChainEvent) -> None:
        self._checked += 1
        expected = self._last_seq + 1
        if event.seq < expected:
            self._broken(event.seq, f"seq {event.seq} is out of order or repeated")
        elif event.seq > expected:
            self._broken(expected, f"seq {expected} is missing")
        if event.prev_hash != self._last_hash:
            self._broken(event.seq, f"seq {event.seq} does not link to the event before it")
        if event.compute_hash() != event.hash:
            self._broken(event.seq, f"seq {event.seq} was changed (its hash does not match)")
        try:
            stored = bytes.fromhex(event.hash)
        except ValueError:
            stored = b""
            self._broken(event.seq, f"seq {event.seq} carries no valid hash")
        self._accumulator.append(stored)
        self._last_seq = max(self._last_seq, event.seq)
        self._last_hash = event.hash
        self._check_checkpoints()

    def _check_checkpoints(self) -> None:
        while self._pending and self._pending[0].tree_size == self._accumulator.size:
            cp = self._pending.pop(0)
            if self._accumulator.root().hex() == cp.root_hash:
                self._valid_checkpoint = cp
                self._last_good_size = cp.tree_size
            else:
                self._checkpoint_mismatch(cp)

    def _checkpoint_mismatch(self, cp: Checkpoint) -> None:
        self._problems.append(
            f"checkpoint at tree size {cp.tree_size}: the events no longer give its Merkle root"
        )
        if self._checkpoint_break is None:
            self._checkpoint_break = (self._last_good_size + 1, cp.tree_size)

    def last_path(self) -> list[str] | None:
        """The Merkle audit path of the last event fed (kept with a checkpoint: CheckpointEdge)."""
        path = self._accumulator.last_path()
        return None if path is None else [node.hex() for node in path]

    def frontier(self) -> list[tuple[int, str]]:
        """The Merkle frontier of the events fed so far (for a prune anchor)."""
        return [(size, node.hex()) for size, node in self._accumulator.frontier()]

    @property
    def last_hash(self) -> str:
        return self._last_hash

    def root(self) -> tuple[int, str]:
        """Tree size and Merkle root over the stored hashes fed so far."""
        return self._accumulator.size, self._accumulator.root().hex()

    def finish(self) -> IntegrityReport:
        size = self._accumulator.size
        for cp in self._pending:  # checkpoints over more events than there are: a lost tail
            self._problems.append(
                f"checkpoint at tree size {cp.tree_size}: only {size} events remain"
            )
            self._broken(self._last_seq + 1, f"seq {self._last_seq + 1} and after are missing")
            if self._checkpoint_break is None:
                self._checkpoint_break = (self._last_good_size + 1, cp.tree_size)
        self._pending = []
        if self._head is not None:
            head_seq, head_hash = self._head
            if head_seq > self._last_seq:
                self._broken(self._last_seq + 1, f"seq {self._last_seq + 1} is missing (head)")
            elif head_seq == self._last_seq and head_hash != self._last_hash:
                self._broken(head_seq, f"seq {head_seq} differs from the recorded head")
        if self._require_signed and self._checked:
            self._require_signatures()
        first = self._chain_break
        if self._checkpoint_break is not None:
            low, high = self._checkpoint_break
            # A chain break inside the bad range is the precise place; otherwise the range's
            # start is the earliest event that may have been rewritten.
            if first is None or not low <= first <= high:
                first = low if first is None else min(first, low)
        problems = list(self._problems)
        if self._chain_break is not None:
            problems.insert(0, self._chain_reason)
        return IntegrityReport(
            org_id=self.org_id,
            ok=first is None and not problems,
            checked_events=self._checked,
            first_broken_seq=first,
            head_seq=self._last_seq,
            head_hash=self._last_hash if self._checked or self._last_seq else "",
            checkpoint=self._valid_checkpoint,
            problems=problems,
            signed_up_to=self._last_good_size,
            pruned_through=self._pruned,
            resumed_from=self.resumed_from,
        )

    def _require_signatures(self) -> None:
        """Name what a signature should vouch for but does not (not a chain break: the events
        may be honest, but nothing proves it)."""
        last = self._last_seq
        if self._head is None:
            self._problems.append(
                "no head record: a deleted tail cannot be seen (CSV and filtered exports carry "
                "none; use an unfiltered JSON Lines export or a pg_dump)"
            )
        elif self._head[0] < last:
            self._problems.append(
                f"seq {self._head[0] + 1}..{last} come after the recorded head {self._head[0]}"
            )
        signed = self._last_good_size
        if signed == 0:
            self._problems.append(
                f"no valid signed checkpoint: nothing the key signed vouches for seq 1..{last} "
                "(a chain recomputed from scratch would look the same)"
            )
        elif signed < last and not self._allow_unsigned_tail:
            self._problems.append(
                f"seq {signed + 1}..{last} are not covered by a signed checkpoint (the newest "
                f"valid one covers 1..{signed}): export again (an unfiltered JSON Lines export "
                "signs one) or pass --allow-unsigned-tail"
            )


def verify_rows(
    rows: Iterable[Row],
    *,
    checkpoints: Iterable[Row] = (),
    heads: Iterable[Row] = (),
    public_key: Ed25519PublicKey | None = None,
    org_id: str | None = None,
    allow_unsigned_tail: bool = False,
    prunes: Iterable[Row] = (),
) -> list[IntegrityReport]:
    """Verify every organisation found in the rows (or only `org_id`), whatever their order.

    Given a public key, the signatures are required, not merely checked when present: a dump
    without valid checkpoints over its events, or without its head, does not verify."""
    events: dict[str, list[ChainEvent]] = defaultdict(list)
    problems: dict[str, list[str]] = defaultdict(list)
    for number, row in enumerate(rows, start=1):
        org = str(row.get("org_id", ""))
        if org_id is not None and org != org_id:
            continue
        try:
            events[org].append(ChainEvent.from_mapping(row))
        except (KeyError, ValueError, TypeError) as error:
            problems[org].append(f"row {number} cannot be read: {type(error).__name__}")
    cps: dict[str, list[Checkpoint]] = defaultdict(list)
    for row in checkpoints:
        if org_id is None or str(row.get("org_id")) == org_id:
            cps[str(row["org_id"])].append(checkpoint_from_row(row))
    anchors: dict[str, list[PruneAnchor]] = defaultdict(list)
    for row in prunes:
        if org_id is None or str(row.get("org_id")) == org_id:
            try:
                anchors[str(row["org_id"])].append(anchor_from_row(row))
            except (KeyError, ValueError, TypeError) as error:
                problems[str(row.get("org_id", ""))].append(
                    f"a prune anchor cannot be read: {type(error).__name__}"
                )
    head_of: dict[str, tuple[int, str]] = {}
    for row in heads:
        if org_id is None or str(row.get("org_id")) == org_id:
            head_of[str(row["org_id"])] = (int(row["seq"]), str(row["hash"]))
    orgs = sorted(set(events) | set(cps) | set(head_of) | set(problems))
    if org_id is not None and org_id not in orgs:
        orgs = [org_id]
    reports = []
    for org in orgs:
        verifier = ChainVerifier(
            org,
            public_key=public_key,
            checkpoints=cps.get(org, ()),
            head=head_of.get(org),
            require_signed=public_key is not None,
            allow_unsigned_tail=allow_unsigned_tail,
            anchors=anchors.get(org, ()),
        )
        for event in sorted(events.get(org, ()), key=lambda e: e.seq):
            verifier.feed(event)
        report = verifier.finish()
        if problems.get(org):
            report.problems.extend(problems[org])
            report.ok = False
        reports.append(report)
    return reports


# ---- dumps -------------------------------------------------------------------------------------


@dataclass
class Dump:
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    heads: list[dict[str, Any]] = field(default_factory=list)
    prunes: list[dict[str, Any]] = field(default_factory=list)


EVENTS_TABLE = "audit_events"
CHECKPOINTS_TABLE = "audit_checkpoints"
HEADS_TABLE = "audit_heads"
PRUNES_TABLE = "audit_prunes"

_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _copy_field(raw: str) -> str | None:
    """One field of PostgreSQL's COPY text format."""
    if raw == "\\N":
        return None
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch != "\\" or i + 1 == len(raw):
            out.append(ch)
            i += 1
            continue
        nxt = raw[i + 1]
        if nxt in _COPY_ESCAPES:
            out.append(_COPY_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            j = i + 1
            while j < len(raw) and j < i + 4 and raw[j] in "01234567":
                j += 1
            out.append(chr(int(raw[i + 1 : j], 8)))
            i = j
        elif nxt == "x" and i + 2 < len(raw):
            j = i + 2
            while j < len(raw) and j < i + 4 and raw[j] in "0123456789abcdefABCDEF":
                j += 1
            out.append(chr(int(raw[i + 2 : j], 16)))
            i = j
        else:
            out.append(nxt)
            i += 2
    return "".join(out)


def parse_pg_dump(lines: Iterable[str]) -> Dump:
    dump = Dump()
    target: list[dict[str, Any]] | None = None
    columns: list[str] = []
    for line in lines:
        line = line.rstrip("\n")
        if target is None:
            if line.startswith("COPY ") and line.endswith("FROM stdin;"):
                table = line[5:].split(" (", 1)[0].split(".")[-1].strip('"')
                listed = line.split("(", 1)[1].split(")")[0]
                columns = [c.strip().strip('"') for c in listed.split(",")]
                target = {
                    EVENTS_TABLE: dump.events,
                    CHECKPOINTS_TABLE: dump.checkpoints,
                    HEADS_TABLE: dump.heads,
                    PRUNES_TABLE: dump.prunes,
                }.get(table, [])
            continue
        if line == "\\.":
            target = None
            continue
        values = [_copy_field(v) for v in line.split("\t")]
        target.append(dict(zip(columns, values, strict=False)))
    return dump


def parse_jsonl(lines: Iterable[str]) -> Dump:
    dump = Dump()
    for line in lines:
        if not line.strip():
            continue
        obj = json.loads(line)
        kind = obj.pop("record", "event")
        {"checkpoint": dump.checkpoints, "head": dump.heads, "prune": dump.prunes}.get(
            kind, dump.events
        ).append(obj)
    return dump


def parse_csv(text: Iterable[str]) -> Dump:
    return Dump(events=list(csv.DictReader(text)))


def load_dump(path: Path) -> Dump:
    with path.open(encoding="utf-8", newline="") as handle:
        head = handle.read(4096)
        handle.seek(0)
        stripped = head.lstrip()
        if stripped.startswith("{"):
            return parse_jsonl(handle)
        if "COPY " in head or stripped.startswith("--") or stripped.startswith("SET "):
            return parse_pg_dump(handle)
        return parse_csv(handle)


def verify_dump(
    dump: Dump,
    public_key: Ed25519PublicKey | None,
    org_id: str | None = None,
    *,
    allow_unsigned_tail: bool = False,
) -> list[IntegrityReport]:
    return verify_rows(
        dump.events,
        checkpoints=dump.checkpoints,
        heads=dump.heads,
        public_key=public_key,
        org_id=org_id,
        allow_unsigned_tail=allow_unsigned_tail,
        prunes=dump.prunes,
    )


def describe(report: IntegrityReport) -> Iterator[str]:
    if report.ok:
        yield (
            f"org {report.org_id}: OK, {report.checked_events} events, head seq "
            f"{report.head_seq} hash {report.head_hash}"
        )
    elif report.first_broken_seq is not None:
        yield (
            f"org {report.org_id}: BROKEN at seq {report.first_broken_seq} "
            f"({report.checked_events} events checked)"
        )
    else:
        yield f"org {report.org_id}: NOT VERIFIED ({report.checked_events} events checked)"
    cp = report.checkpoint
    if cp is not None:
        yield (
            f"  signed checkpoint: tree size {cp.tree_size}, root {cp.root_hash}, "
            f"key {cp.key_id}, signed at {cp.signed_at.isoformat()}"
        )
    elif not report.pruned_through:
        yield "  no valid signed checkpoint: only the hash chain was checked"
    if report.pruned_through:
        yield (
            f"  seq 1..{report.pruned_through} were pruned past retention: verified from their "
            "signed prune anchor"
        )
    if report.ok and cp is not None and report.signed_up_to < report.head_seq:
        yield (
            f"  seq {report.signed_up_to + 1}..{report.head_seq} are NOT signed: only the hash "
            "chain and the head vouch for them"
        )
    for problem in report.problems:
        yield f"  - {problem}"


# ---- the command --------------------------------------------------------------------------------

audit_app = typer.Typer(no_args_is_help=True, add_completion=False, help="The audit trail.")


@audit_app.callback()
def _audit() -> None:
    """Work with the audit trail offline."""


@audit_app.command()
def verify(
    dump: Path = typer.Option(..., "--dump", exists=True, dir_okay=False, help="export or pg_dump"),
    public_key: Path = typer.Option(
        ..., "--public-key", exists=True, dir_okay=False, help="Ed25519 public key PEM"
    ),
    org: str | None = typer.Option(None, "--org", help="only this organisation"),
    allow_unsigned_tail: bool = typer.Option(
        False,
        "--allow-unsigned-tail",
        help="accept events after the newest valid signed checkpoint (listed as NOT signed)",
    ),
) -> None:
    """Verify an audit trail from a dump: prints the first broken sequence number, if any.

    OK needs valid signed checkpoints over every event and the head; anything missing is named
    and the trail is NOT VERIFIED (exit 1)."""
    try:
        key = load_public_key(public_key)
        reports = verify_dump(load_dump(dump), key, org, allow_unsigned_tail=allow_unsigned_tail)
    except (OSError, ValueError, UnicodeDecodeError, json.JSONDecodeError) as error:
        typer.echo(f"error: the dump or the key cannot be read ({type(error).__name__})", err=True)
        raise typer.Exit(2) from None
    if not reports or all(r.checked_events == 0 and r.ok for r in reports):
        typer.echo("no events found" + (f" for org {org}" if org else ""), err=True)
        raise typer.Exit(2)
    for report in reports:
        for line in describe(report):
            typer.echo(line)
    raise typer.Exit(0 if all(r.ok for r in reports) else 1)
