"""Audit's rules: append to the per-organisation hash chain, raise security alerts, read the
trail for auditors, verify it, sign checkpoints and prove inclusion and consistency.

No framework imports; never commits (the adapters' unit_of_work does).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.audit_client import AuditRecord, Outcome
from doorward_kit.auth import Principal
from doorward_kit.db import Reader
from doorward_kit.errors import bad_input, not_found
from doorward_kit.policy import Action, Resource, authorize, can
from services.audit import alerts, merkle
from services.audit.chain import ChainEvent
from services.audit.models import AuditCheckpoint, AuditEvent, AuditPrune, SecurityAlert
from services.audit.repository import (
    TRAIL_COLUMNS,
    Event,
    EventFilter,
    Repository,
    TrailRow,
    recent_events_of_work_orders,
)
from services.audit.signing import Checkpoint, PruneAnchor, Signer
from services.audit.verify import (
    ChainVerifier,
    CheckpointEdge,
    IntegrityReport,
    anchor_from_row,
)

log = logging.getLogger(__name__)

SERVICE_NAME = "audit"
# auditTrail / accessHistory are plain lists: the newest this many, oldest first.
TRAIL_LIMIT = 1000
# The shortest audit retention anybody may set (and the database's own floor for pruning).
MIN_AUDIT_RETENTION = timedelta(days=183)
# traces(filter: {actorId}) looks at the newest this many traces of the actor's audit events.
ACTOR_TRACE_LIMIT = 1000


@dataclass(frozen=True)
class Incoming:
    record: AuditRecord
    service: str


@dataclass(frozen=True)
class AppendResult:
    accepted: int
    duplicates: int
    alerts: int = 0


@dataclass(frozen=True)
class InclusionProof:
    event_id: str
    seq: int
    event_hash: str
    leaf_index: int
    tree_size: int
    root_hash: str
    path: list[str]
    checkpoint: Checkpoint | None


@dataclass(frozen=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    path: list[str]


def checkpoint_of(row: AuditCheckpoint) -> Checkpoint:
    return Checkpoint(
        org_id=row.org_id,
        tree_size=row.tree_size,
        root_hash=row.root_hash,
        signed_at=row.signed_at,
        key_id=row.key_id,
        signature=row.signature,
    )


def _facts(row: dict[str, Any]) -> alerts.EventFacts:
    return alerts.EventFacts(
        id=row["id"],
        actor_id=row["actor_id"],
        action=row["action"],
        outcome=row["outcome"],
        occurred_at=row["occurred_at"],
        details=row["details"],
    )


def _chain_rows(
    org_id: str, seq: int, prev: str, items: Sequence[Incoming]
) -> tuple[list[dict[str, Any]], int, str]:
    rows: list[dict[str, Any]] = []
    for item in items:
        r = item.record
        seq += 1
        event = ChainEvent(
            org_id=org_id,
            seq=seq,
            id=r.id,
            occurred_at=r.occurred_at,
            actor_id=r.actor_id,
            action=r.action,
            outcome=r.outcome.value,
            work_order_id=r.work_order_id,
            secret_ref_id=r.secret_ref_id,
            target_type=r.target_type,
            target_id=r.target_id,
            trace_id=r.trace_id,
            source_ip=r.source_ip,
            service=item.service,
            prev_hash=prev,
            details=dict(r.details),
        )
        prev = event.compute_hash()
        rows.append(
            {
                "org_id": org_id,
                "seq": seq,
                "id": r.id,
                "occurred_at": event.occurred_at,
                "actor_id": r.actor_id,
                "action": r.action,
                "outcome": r.outcome.value,
                "work_order_id": r.work_order_id,
                "secret_ref_id": r.secret_ref_id,
                "target_type": r.target_type,
                "target_id": r.target_id,
                "trace_id": r.trace_id,
                "source_ip": r.source_ip,
                "service": item.service,
                "details": dict(r.details),
                "prev_hash": event.prev_hash,
                "hash": prev,
            }
        )
    return rows, seq, prev


@dataclass(frozen=True)
class PruneResult:
    # Events 1..through are gone (0: nothing was pruned); `deleted` of them by this call.
    through: int = 0
    deleted: int = 0


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _edge_of(row: AuditCheckpoint | None) -> CheckpointEdge | None:
    """A checkpoint with its last hash and audit path (None: not kept for this one, or not in
    the form the job writes). The two columns are not signed: anything a database writer put
    there that is not a list of SHA-256 hex digests means "verify the whole chain", never an
    exception that would stop the job for this organisation."""
    if row is None:
        return None
    last_hash, last_path = row.last_hash, row.last_path
    if not isinstance(last_hash, str) or not _SHA256_HEX.fullmatch(last_hash):
        return None
    if not isinstance(last_path, list) or not all(
        isinstance(node, str) and _SHA256_HEX.fullmatch(node) for node in last_path
    ):
        return None
    return CheckpointEdge(checkpoint_of(row), last_hash, tuple(last_path))


def anchor_of(row: AuditPrune) -> PruneAnchor:
    return anchor_from_row(
        {
            "org_id": row.org_id,
            "tree_size": row.tree_size,
            "root_hash": row.root_hash,
            "last_hash": row.last_hash,
            "frontier": row.frontier,
            "signed_at": row.signed_at,
            "key_id": row.key_id,
            "signature": row.signature,
        }
    )


class AuditService:
    def __init__(
        self,
        *,
        rules: alerts.AlertRules | None = None,
        signer: Signer | None = None,
        public_key: Ed25519PublicKey | None = None,
    ) -> None:
        self.rules = rules or alerts.AlertRules()
        self.signer = signer
        self.public_key = public_key or (signer.public_key if signer else None)

    # ---- ingestion ------------------------------------------------------------------------

    async def append(self, session: AsyncSession, items: Sequence[Incoming]) -> AppendResult:
        """Append a batch; events already stored (same id) are counted, not stored again."""
        repo = Repository(session)
        by_org: dict[str, list[Incoming]] = {}
        seen: set[str] = set()
        duplicates = 0
        for item in items:
            if item.record.id in seen:
                duplicates += 1
                continue
            seen.add(item.record.id)
            by_org.setdefault(item.record.org_id, []).append(item)
        accepted = raised = 0
        # A fixed order of head locks: two batches spanning the same orgs cannot deadlock.
        for org_id in sorted(by_org):
            new, dup, alerted = await self._append_org(repo, org_id, by_org[org_id])
            accepted += new
            duplicates += dup
            raised += alerted
        return AppendResult(accepted, duplicates, raised)

    async def _append_org(
        self, repo: Repository, org_id: str, items: list[Incoming], *, watch: bool = True
    ) -> tuple[int, int, int]:
        """Lock the head, one read (ids already stored, the actors' deactivations), then the
        events and the new head in one statement: 3 statements for a batch without alerts."""
        seq, prev = await repo.lock_head(org_id)
        # After the lock: a concurrent batch with the same ids has committed or rolled back.
        actors = [i.record.actor_id for i in items] if watch else []
        existing, deactivated = await repo.stored_ids_and_deactivations(
            org_id, [i.record.id for i in items], actors, alerts.DEACTIVATE_ACTION
        )
        fresh = [i for i in items if i.record.id not in existing]
        rows, seq, prev = _chain_rows(org_id, seq, prev, fresh)
        pending = rows
        alert_rows: list[dict[str, Any]] = []
        if watch and rows:
            facts = [f for f in (_facts(r) for r in rows) if alerts.watched(f)]
            if any(alerts.counts_as_reveal(f) or alerts.counts_as_denial(f) for f in facts):
                # The rules count the events in their window, this batch's included.
                await repo.insert_events(org_id, rows)
                pending = []
            alert_items = await self._raise_alerts(repo, org_id, rows, facts, deactivated)
            alert_rows, seq, prev = _chain_rows(org_id, seq, prev, alert_items)
            pending = [*pending, *alert_rows]
        if pending:
            await repo.append_events(org_id, pending, seq, prev)
        elif rows:
            await repo.set_head(org_id, seq, prev)
        return len(rows), len(items) - len(fresh), len(alert_rows)

    async def _raise_alerts(
        self,
        repo: Repository,
        org_id: str,
        rows: list[dict[str, Any]],
        facts: list[alerts.EventFacts],
        deactivated: dict[str, datetime],
    ) -> list[Incoming]:
        """`deactivated`: when each actor of the batch was last deactivated, as stored before
        it; this batch's own deactivations are added here (they count for its later events)."""
        candidates: list[alerts.Candidate] = []
        for f in facts:
            candidates.extend(alerts.per_event(f))
        rules = self.rules
        reveals = alerts.latest_per_actor([f for f in facts if alerts.counts_as_reveal(f)])
        denials = alerts.latest_per_actor([f for f in facts if alerts.counts_as_denial(f)])
        for actor, f in reveals.items():
            count = await repo.count_since(
                org_id,
                actor,
                f.occurred_at - timedelta(seconds=rules.reveal_window),
                f.occurred_at,
                action=alerts.REVEAL_ACTION,
                outcome=Outcome.ALLOWED.value,
            )
            found = alerts.many_reveals(f, count, rules)
            if found:
                candidates.append(found)
        for actor, f in denials.items():
            count = await repo.count_since(
                org_id,
                actor,
                f.occurred_at - timedelta(seconds=rules.denial_window),
                f.occurred_at,
                outcome=Outcome.DENIED.value,
            )
            found = alerts.repeated_denials(f, count, rules)
            if found:
                candidates.append(found)
        deactivated = dict(deactivated)
        for r in rows:
            if (
                r["action"] == alerts.DEACTIVATE_ACTION
                and r["outcome"] == Outcome.ALLOWED.value
                and r["target_id"]
            ):
                before = deactivated.get(r["target_id"])
                if before is None or r["occurred_at"] > before:
                    deactivated[r["target_id"]] = r["occurred_at"]
        for f in facts:
            found = alerts.deactivated_activity(f, deactivated.get(f.actor_id))
            if found:
                candidates.append(found)
        by_id = {r["id"]: r for r in rows}
        return [
            item
            for c in candidates
            if (item := await self._store_alert(repo, org_id, c, by_id.get(c.trigger_event_id)))
        ]

    async def _store_alert(
        self,
        repo: Repository,
        org_id: str,
        candidate: alerts.Candidate,
        trigger: dict[str, Any] | None,
    ) -> Incoming | None:
        alert_id = str(uuid.uuid4())
        details = {
            "rule": candidate.rule.value,
            "alert_id": alert_id,
            "event_id": candidate.trigger_event_id,
            **candidate.details,
        }
        record = AuditRecord(
            org_id=org_id,
            actor_id="",
            action=alerts.ALERT_ACTION,
            outcome=Outcome.ALLOWED,
            target_type="User" if candidate.actor_id else "",
            target_id=candidate.actor_id,
            work_order_id=(trigger or {}).get("work_order_id", ""),
            secret_ref_id=(trigger or {}).get("secret_ref_id", ""),
            trace_id=(trigger or {}).get("trace_id", ""),
            details=details,
        )
        stored = await repo.insert_alert(
            {
                "id": alert_id,
                "org_id": org_id,
                "rule": candidate.rule.value,
                "actor_id": candidate.actor_id,
                "dedup_key": candidate.dedup_key,
                "trigger_event_id": candidate.trigger_event_id,
                "occurred_at": candidate.occurred_at,
                "alert_event_id": record.id,
                "details": details,
            }
        )
        if not stored:
            return None
        log.warning(
            "security alert",
            extra={"fields": {"rule": candidate.rule.value, "alert.id": alert_id}},
        )
        return Incoming(record, SERVICE_NAME)

    async def append_own(self, session: AsyncSession, records: Sequence[AuditRecord]) -> None:
        """Events the audit service writes about itself (exports, integrity alerts)."""
        await self.append(session, [Incoming(r, SERVICE_NAME) for r in records])

    # ---- reads for auditors ---------------------------------------------------------------

    @staticmethod
    def authorize_read(principal: Principal) -> None:
        authorize(principal, Action.AUDIT_READ, Resource(org_id=principal.org_id))

    @staticmethod
    def authorize_history(principal: Principal, user_id: str) -> None:
        """One user's accessHistory: everybody may read their own (audit.own_history.read),
        anyone else's needs audit.read as the rest of the trail does."""
        own = Resource(org_id=principal.org_id, user_id=user_id)
        if user_id and can(principal, Action.AUDIT_OWN_HISTORY_READ, own):
            return
        authorize(principal, Action.AUDIT_READ, Resource(org_id=principal.org_id))

    async def list_events(
        self,
        session: AsyncSession,
        principal: Principal,
        f: EventFilter,
        *,
        before_seq: int | None,
        limit: int,
    ) -> list[AuditEvent]:
        self.authorize_read(principal)
        return await Repository(session).list_events(
            principal.org_id, f, before_seq=before_seq, limit=limit
        )

    async def work_order_trails(
        self,
        reader: Reader,
        principal: Principal,
        work_order_ids: Sequence[str],
        make: Callable[[TrailRow], Event],
        columns: tuple[str, ...] = TRAIL_COLUMNS,
    ) -> dict[str, list[Event]]:
        """The newest TRAIL_LIMIT events of each work order of a batch (one query), each row
        made into the caller's object by `make` (repository.trail_event: a TrailEvent); only
        `columns` of them when the caller needs no more (repository.trail_sql)."""
        self.authorize_read(principal)
        return await recent_events_of_work_orders(
            reader, principal.org_id, work_order_ids, TRAIL_LIMIT, make, columns
        )

    async def access_history(
        self, session: AsyncSession, principal: Principal, user_id: str
    ) -> list[AuditEvent]:
        self.authorize_history(principal, user_id)
        return await Repository(session).recent_events(
            principal.org_id, EventFilter(actor_id=user_id), TRAIL_LIMIT
        )

    def stream(
        self, session: AsyncSession, principal: Principal, f: EventFilter
    ) -> AsyncIterator[dict[str, Any]]:
        self.authorize_read(principal)
        return Repository(session).stream_events(principal.org_id, f)

    async def export_metadata(
        self, session: AsyncSession, principal: Principal, signed_head: tuple[int, str] | None
    ) -> tuple[list[AuditCheckpoint], tuple[int, str] | None]:
        """Checkpoints and head of an export; with `signed_head` (sign_for_export's) the export
        stops there, and checkpoints signed meanwhile over later events are left out."""
        self.authorize_read(principal)
        repo = Repository(session)
        if signed_head is not None:
            return await repo.checkpoints(principal.org_id, signed_head[0]), signed_head
        checkpoints = await repo.checkpoints(principal.org_id)
        head = await repo.head(principal.org_id)
        return checkpoints, head

    async def record_export(
        self, session: AsyncSession, principal: Principal, fmt: str, source_ip: str
    ) -> None:
        self.authorize_read(principal)
        await self.append_own(
            session,
            [
                AuditRecord(
                    org_id=principal.org_id,
                    actor_id=principal.user_id,
                    action="audit.export",
                    outcome=Outcome.ALLOWED,
                    target_type="AuditTrail",
                    target_id=principal.org_id,
                    source_ip=source_ip,
                    details={"mode": fmt},
                )
            ],
        )

    async def alerts(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[SecurityAlert]:
        authorize(principal, Action.SECURITY_ALERT_READ, Resource(org_id=principal.org_id))
        return await Repository(session).list_alerts(principal.org_id, before=before, limit=limit)

    async def events_by_ids(
        self, session: AsyncSession, principal: Principal, event_ids: Sequence[str]
    ) -> dict[str, AuditEvent]:
        self.authorize_read(principal)
        repo = Repository(session)
        found: dict[str, AuditEvent] = {}
        for event_id in event_ids:
            row = await repo.event_by_id(principal.org_id, event_id)
            if row is not None:
                found[event_id] = row
        return found

    async def events_of_trace(
        self, session: AsyncSession, principal: Principal, trace_id: str
    ) -> list[AuditEvent]:
        """Trace.auditEvents: the caller's organisation's events of one trace, oldest first."""
        self.authorize_read(principal)
        return await Repository(session).events_of_trace(principal.org_id, trace_id, TRAIL_LIMIT)

    async def trace_ids_of_actor(
        self,
        session: AsyncSession,
        principal: Principal,
        actor_id: str,
        occurred_from: datetime | None,
        occurred_to: datetime | None,
    ) -> list[str]:
        """traces(filter: {actorId}): spans carry only a keyed pseudonym of the user, so the
        user's traces are the ones their audited actions name (the newest ACTOR_TRACE_LIMIT)."""
        self.authorize_read(principal)
        return await Repository(session).trace_ids_of_actor(
            principal.org_id, actor_id, occurred_from, occurred_to, ACTOR_TRACE_LIMIT
        )

    # ---- integrity ------------------------------------------------------------------------

    async def integrity(self, session: AsyncSession, principal: Principal) -> IntegrityReport:
        authorize(principal, Action.AUDIT_INTEGRITY_READ, Resource(org_id=principal.org_id))
        report, _ = await self.verify_org(session, principal.org_id)
        return report

    async def verify_and_alert(self, session: AsyncSession, org_id: str) -> IntegrityReport:
        """The scheduled whole-chain check (runtime.verification_loop): the checkpoint job
        starts from its last signature, so a change to an event it already signed is found
        here, and raised as an integrity_broken alert (once per broken seq)."""
        report, _ = await self.verify_org(session, org_id)
        if not report.ok:
            log.error(
                "audit chain broken",
                extra={"fields": {"org.id": org_id, "first_broken_seq": report.first_broken_seq}},
            )
            await self._integrity_alert(session, org_id, report)
        return report

    async def verify_org(
        self, session: AsyncSession, org_id: str
    ) -> tuple[IntegrityReport, tuple[int, str]]:
        """Walk the whole chain; returns the report and (tree size, Merkle root)."""
        report, verifier = await self._verify_whole(Repository(session), org_id)
        return report, verifier.root()

    async def _verify_whole(
        self, repo: Repository, org_id: str
    ) -> tuple[IntegrityReport, ChainVerifier]:
        # Checkpoints before the head: the head only grows, so every checkpoint read covers at
        # most the head read after it, and one over more events than remain is a lost tail.
        checkpoints = [checkpoint_of(c) for c in await repo.checkpoints(org_id)]
        pruned = await repo.latest_prune(org_id)
        head = await repo.head(org_id)
        up_to = head[0] if head else 0
        verifier = ChainVerifier(
            org_id,
            public_key=self.public_key,
            checkpoints=checkpoints,
            head=head,
            anchors=[anchor_of(pruned)] if pruned else [],
        )
        async for row in repo.stream_events(org_id, up_to_seq=up_to):
            verifier.feed(ChainEvent.from_mapping(row))
        return verifier.finish(), verifier

    async def prune_org(
        self,
        session: AsyncSession,
        org_id: str,
        before: datetime,
        now: datetime | None = None,
        held_ids: Sequence[str] = (),
    ) -> PruneResult:
        """Delete the org's events that happened before `before` (the longest prefix of the
        chain that did), leaving a signed prune anchor from which the rest verifies. Only over
        a chain that verifies, only with the signing key; the database itself refuses to
        delete anything younger than six months or without the anchor. Audited (`audit.prune`
        with counts and seq numbers) in the same chain."""
        if self.signer is None:
            return PruneResult()
        repo = Repository(session)
        # Never younger than six months, whatever the caller asks (the database agrees).
        before = min(before, (now or datetime.now(UTC)) - MIN_AUDIT_RETENTION)
        head_seq, _ = await repo.lock_head(org_id)  # no append while the prefix is cut
        first_kept = await repo.first_seq_since(org_id, before)
        through = head_seq if first_kept is None else first_kept - 1
        # A legal hold suspends deletion of the trail too: the prefix ends before the first
        # event about anything held (a prefix is all a signed prune anchor can cut).
        first_held = await repo.first_seq_naming(org_id, held_ids)
        if first_held is not None:
            through = min(through, first_held - 1)
        latest = await repo.latest_prune(org_id)
        done = latest.tree_size if latest else 0
        if through <= done:
            return PruneResult(through=done)
        verifier = ChainVerifier(
            org_id,
            public_key=self.public_key,
            checkpoints=[checkpoint_of(c) for c in await repo.checkpoints(org_id)],
            head=await repo.head(org_id),
            anchors=[anchor_of(latest)] if latest else [],
        )
        cut: tuple[str, str, list[tuple[int, str]]] | None = None
        async for row in repo.stream_events(org_id, up_to_seq=head_seq):
            verifier.feed(ChainEvent.from_mapping(row))
            if int(row["seq"]) == through:
                _, root = verifier.root()
                cut = (root, verifier.last_hash, verifier.frontier())
        report = verifier.finish()
        if not report.ok or cut is None:
            log.error(
                "audit chain does not verify: nothing pruned",
                extra={"fields": {"org.id": org_id, "first_broken_seq": report.first_broken_seq}},
            )
            await self._integrity_alert(session, org_id, report)
            return PruneResult(through=done)
        root, last_hash, frontier = cut
        anchor = self.signer.sign_prune(
            org_id, through, root, last_hash, frontier, now or datetime.now(UTC)
        )
        await repo.insert_prune(
            {
                "org_id": org_id,
                "tree_size": through,
                "root_hash": anchor.root_hash,
                "last_hash": anchor.last_hash,
                "frontier": [[size, node] for size, node in anchor.frontier],
                "signed_at": anchor.signed_at,
                "key_id": anchor.key_id,
                "signature": anchor.signature,
            }
        )
        deleted = await repo.prune_through(org_id, through)
        record = AuditRecord(
            org_id=org_id,
            actor_id="",
            action="audit.prune",
            outcome=Outcome.ALLOWED,
            target_type="AuditTrail",
            target_id=org_id,
            details={"count": str(deleted), "first_seq": str(done + 1), "last_seq": str(through)},
        )
        await self._append_org(repo, org_id, [Incoming(record, SERVICE_NAME)], watch=False)
        return PruneResult(through=through, deleted=deleted)

    async def prune_anchor(self, session: AsyncSession, principal: Principal) -> PruneAnchor | None:
        """The newest prune anchor of the caller's organisation (for exports)."""
        self.authorize_read(principal)
        row = await Repository(session).latest_prune(principal.org_id)
        return anchor_of(row) if row else None

    async def checkpoint_org(self, session: AsyncSession, org_id: str) -> Checkpoint | None:
        """Sign the org's current tree, but only over a chain that verifies."""
        checkpoint, _ = await self._sign(session, org_id)
        return checkpoint

    async def _sign(
        self, session: AsyncSession, org_id: str
    ) -> tuple[Checkpoint | None, IntegrityReport | None]:
        if self.signer is None:
            return None, None
        report, verifier = await self.verify_since_checkpoint(session, org_id)
        if not report.ok:
            log.error(
                "audit chain broken: no checkpoint signed",
                extra={"fields": {"org.id": org_id, "first_broken_seq": report.first_broken_seq}},
            )
            await self._integrity_alert(session, org_id, report)
            return None, report
        size, root = verifier.root()
        if size == 0:
            return None, report
        checkpoint = self.signer.sign(org_id, size, root, datetime.now(UTC))
        await Repository(session).insert_checkpoint(
            {
                "org_id": org_id,
                "tree_size": checkpoint.tree_size,
                "root_hash": checkpoint.root_hash,
                "signed_at": checkpoint.signed_at,
                "key_id": checkpoint.key_id,
                "signature": checkpoint.signature,
                # Where the next verification starts (verify_since_checkpoint).
                "last_hash": verifier.last_hash,
                "last_path": verifier.last_path(),
            }
        )
        return checkpoint, report

    async def verify_since_checkpoint(
        self, session: AsyncSession, org_id: str
    ) -> tuple[IntegrityReport, ChainVerifier]:
        """What the checkpoint job verifies before it signs: the events after the newest signed
        checkpoint, from that checkpoint's root. The service signed that checkpoint only after
        verifying every event it covers, and its signature (with its last event's hash and
        audit path, which must give its root) is checked here, so its tree is taken as good;
        the events after it are checked as in verify_org: each one's hash, its link to the one
        before (the first to the checkpoint's last hash), gaps, and the head. O(new events),
        not O(all events). A change to an event the checkpoint covers is found by
        auditIntegrity, offline verification and the scheduled whole-chain check
        (verify_and_alert, which raises the alert), not here.
        Without a usable checkpoint (none yet, one signed before the edges were kept, one that
        does not check out) this is verify_org."""
        repo = Repository(session)
        latest = await repo.latest_checkpoint(org_id)
        pruned = await repo.latest_prune(org_id)
        head = await repo.head(org_id)
        up_to = head[0] if head else 0
        edge = _edge_of(latest)
        usable = (
            edge is not None
            and edge.checkpoint.tree_size <= up_to
            and (pruned is None or pruned.tree_size < edge.checkpoint.tree_size)
        )
        verifier = ChainVerifier(
            org_id,
            public_key=self.public_key,
            head=head,
            anchors=[anchor_of(pruned)] if pruned and not usable else [],
            resume=edge if usable else None,
        )
        if not verifier.resumed:
            if latest is not None and latest.last_hash is not None:
                # Kept for this checkpoint, yet unusable: edited, or over a lowered head.
                log.warning(
                    "audit checkpoint edge unusable; verifying the whole chain",
                    extra={"fields": {"org.id": org_id, "tree_size": latest.tree_size}},
                )
            return await self._verify_whole(repo, org_id)
        # From the checkpoint's own last event: it is compared with the hash the checkpoint
        # vouches for (one row), the rest is fed.
        first = True
        async for row in repo.stream_events(
            org_id, up_to_seq=up_to, after_seq=verifier.resumed_from - 1
        ):
            event = ChainEvent.from_mapping(row)
            if first:
                first = False
                if event.seq == verifier.resumed_from:
                    verifier.check_resumed_event(event)
                    continue
                verifier.check_resumed_event(None)
            verifier.feed(event)
        if first:
            verifier.check_resumed_event(None)
        return verifier.finish(), verifier

    async def sign_for_export(
        self, session: AsyncSession, principal: Principal
    ) -> tuple[int, str] | None:
        """Sign a checkpoint over the whole trail for an unfiltered export and return the
        export's head (seq, hash): the export ends exactly where the signature does, so
        `doorward audit verify` finds every exported event vouched for by the key. None when
        no fresh checkpoint could be signed (no key, a broken chain: the export then shows
        what is missing or broken)."""
        self.authorize_read(principal)
        repo = Repository(session)
        head = await repo.head(principal.org_id)
        latest = await repo.latest_checkpoint(principal.org_id)
        if head is not None and latest is not None and latest.tree_size == head[0]:
            return head
        checkpoint, report = await self._sign(session, principal.org_id)
        if checkpoint is None or report is None:
            return None
        return report.head_seq, report.head_hash

    async def orgs_needing_checkpoint(self, session: AsyncSession) -> list[str]:
        return await Repository(session).orgs_needing_checkpoint()

    async def _integrity_alert(
        self, session: AsyncSession, org_id: str, report: IntegrityReport
    ) -> None:
        repo = Repository(session)
        broken = report.first_broken_seq or 0
        candidate = alerts.Candidate(
            alerts.Rule.INTEGRITY_BROKEN,
            "",
            "",
            datetime.now(UTC),
            f"{alerts.Rule.INTEGRITY_BROKEN}:{broken}",
            {"first_seq": str(broken)},
        )
        seq, prev = await repo.lock_head(org_id)
        item = await self._store_alert(repo, org_id, candidate, None)
        if item is None:
            return
        rows, seq, prev = _chain_rows(org_id, seq, prev, [item])
        await repo.append_events(org_id, rows, seq, prev)

    # ---- proofs ---------------------------------------------------------------------------

    async def _tree_size(
        self, repo: Repository, org_id: str, tree_size: int | None
    ) -> tuple[int, Checkpoint | None]:
        head = await repo.head(org_id)
        head_seq = head[0] if head else 0
        if tree_size is None:
            latest = await repo.latest_checkpoint(org_id)
            if latest is None:
                raise bad_input("no signed checkpoint yet: name a treeSize or wait for one")
            return latest.tree_size, checkpoint_of(latest)
        if not 0 < tree_size <= head_seq:
            raise bad_input(f"treeSize must be between 1 and {head_seq}")
        row = await repo.checkpoint_at(org_id, tree_size)
        return tree_size, checkpoint_of(row) if row else None

    async def _require_unpruned(self, repo: Repository, org_id: str) -> None:
        """Proofs need every leaf of the tree; after a prune only the anchor's frontier is
        left (verification still works from it, proofs do not)."""
        pruned = await repo.latest_prune(org_id)
        if pruned is not None:
            raise bad_input(
                f"events 1..{pruned.tree_size} were pruned past retention: Merkle proofs are "
                "not available any more; auditIntegrity verifies from the signed prune anchor"
            )

    async def inclusion_proof(
        self,
        session: AsyncSession,
        principal: Principal,
        event_id: str,
        tree_size: int | None = None,
    ) -> InclusionProof:
        authorize(principal, Action.AUDIT_INTEGRITY_READ, Resource(org_id=principal.org_id))
        repo = Repository(session)
        event = await repo.event_by_id(principal.org_id, event_id)
        if event is None:
            raise not_found("audit event")
        size, checkpoint = await self._tree_size(repo, principal.org_id, tree_size)
        await self._require_unpruned(repo, principal.org_id)
        if event.seq > size:
            raise bad_input("the event is newer than that tree: ask again after the next one")
        leaves = [
            merkle.leaf_hash(bytes.fromhex(h))
            for h in await repo.leaf_hashes(principal.org_id, size)
        ]
        return InclusionProof(
            event_id=event.id,
            seq=event.seq,
            event_hash=event.hash,
            leaf_index=event.seq - 1,
            tree_size=size,
            root_hash=merkle.root_from_leaf_hashes(leaves).hex(),
            path=[p.hex() for p in merkle.inclusion_proof(event.seq - 1, leaves)],
            checkpoint=checkpoint,
        )

    async def consistency_proof(
        self, session: AsyncSession, principal: Principal, old_size: int, new_size: int
    ) -> ConsistencyProof:
        authorize(principal, Action.AUDIT_INTEGRITY_READ, Resource(org_id=principal.org_id))
        repo = Repository(session)
        head = await repo.head(principal.org_id)
        head_seq = head[0] if head else 0
        if not 0 < old_size <= new_size <= head_seq:
            raise bad_input(f"need 1 <= fromTreeSize <= toTreeSize <= {head_seq}")
        await self._require_unpruned(repo, principal.org_id)
        leaves = [
            merkle.leaf_hash(bytes.fromhex(h))
            for h in await repo.leaf_hashes(principal.org_id, new_size)
        ]
        return ConsistencyProof(
            old_size=old_size,
            new_size=new_size,
            old_root=merkle.root_from_leaf_hashes(leaves[:old_size]).hex(),
            new_root=merkle.root_from_leaf_hashes(leaves).hex(),
            path=[p.hex() for p in merkle.consistency_proof(old_size, leaves)],
        )
