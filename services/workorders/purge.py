"""The retention purge: deletes what the organisations' retention policies say is due and no
legal hold covers, on a schedule, inside the stack.

- Exactly once across restarts and replicas: a run holds a PostgreSQL session-level advisory
  lock on a connection of its own for its whole length (another replica's attempt gets "busy"
  and does nothing; a dead process's lock goes with its connection). Each batch also locks its
  rows with FOR UPDATE SKIP LOCKED, so even two runners could never delete a row twice.
- Resumable: every batch is one transaction (rows deleted + its audit events + the run's
  counters), and what is due is recomputed from the data each time. A run killed mid-way left
  only whole batches behind; the next run takes over the same run record (status RUNNING) and
  continues where it stopped.
- Audit events past the organisation's retention are pruned by the audit service itself
  (PruneEvents: a signed prune anchor stays, the six-month floor is the database's own).
- The grant registry (secrets' grants table) is pruned by the secrets service itself
  (PruneGrants with the organisation's grantDays and the ids of held sites and work orders;
  it audits its batches with counts).
- Site secrets of sites with no job within siteSecretDays and no hold are destroyed in Vault by
  the secrets service (RetireSiteSecrets; only versions not changed since the cut-off).
- Contact data goes the way of an erasure (crypto-shredding): the secrets service writes a
  shred-ledger entry (kind "retention") and destroys the customer's transit key
  (ShredRetainedCustomers) while this batch holds the customers' rows locked; then the rows are
  cleared. A backup taken before the purge holds the key and the ciphertexts, so without the
  ledger a restore would bring the contact data back; `doorward backup restore` replays it. A
  crash between the key and the commit leaves rows whose key is gone: the next run selects
  them again (shredding is idempotent) and clears them.
- Traces: the organisation's traceDays goes to the embedded trace store (SetOrgRetention),
  which keeps it in its own database and prunes that organisation's traces by it. With an
  external collector there is no store to tell (the process is built without one): the
  operator's backend keeps traces as long as it is configured to.
- Audited with counts and pseudonymous ids only: `retention.purge` per organisation, category
  and batch (kind, count, the run id), and `customer.erase` (reason retention) per customer whose
  contact data went. No name, address or free text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.audit_client import AuditRecord, Outcome, record_event
from doorward_kit.db import Database
from doorward_kit.errors import DoorwardError
from services.workorders.models import AuditOutbox, PurgeRun
from services.workorders.repository import Repository, advisory_unlock, try_advisory_lock
from services.workorders.retention import RetentionPolicy

log = logging.getLogger(__name__)

# pg advisory lock key of the purge ("dwpurge" as a number); one per database.
PURGE_LOCK_KEY = 0x6477707572676501
RUNNING, DONE = "RUNNING", "DONE"

# (org_id, cut-off, held site ids, held work order ids) -> grants deleted
GrantPruner = Callable[[str, datetime, list[str], list[str]], Awaitable[int]]
# (org_id, cut-off, site ids with no job within the period and no hold) -> secrets destroyed
SiteSecretRetirer = Callable[[str, datetime, list[str]], Awaitable[int]]
# (org_id, cut-off, customer ids with no job within the period and no hold) -> the ids whose key
# is gone now (shredded, shred-ledger entry written); only those rows are cleared.
CustomerShredder = Callable[[str, datetime, list[str]], Awaitable[list[str]]]
# (org_id, traceDays) -> the days the trace store keeps
TraceRetentionSetter = Callable[[str, int], Awaitable[float]]
# Customers per ShredRetainedCustomers call (the secrets service takes at most 100).
SHRED_CHUNK = 100


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class PurgeResult:
    run_id: str = ""
    # False when another runner held the lock (nothing was done here).
    ran: bool = False
    resumed: bool = False
    work_orders: int = 0
    customers: int = 0
    batches: int = 0
    # Audit events the audit service pruned for this run (it audits and signs that itself).
    audit_events: int = 0
    # Finished grants the secrets service deleted for this run (it audits that itself).
    grants: int = 0
    # Site secrets the secrets service destroyed for this run (it audits each itself).
    site_secrets: int = 0


class Purge:
    def __init__(
        self,
        db: Database,
        *,
        batch: int = 500,
        interval: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] = _utcnow,
        forget_key: Callable[[str], None] = lambda customer_id: None,
        prune_audit: Callable[[str, datetime, Sequence[str]], Awaitable[int]] | None = None,
        prune_grants: GrantPruner | None = None,
        retire_site_secrets: SiteSecretRetirer | None = None,
        shred_customers: CustomerShredder | None = None,
        set_trace_retention: TraceRetentionSetter | None = None,
        after_batch: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.batch = batch
        self.interval = interval
        self.clock = clock
        self.forget_key = forget_key
        self.prune_audit = prune_audit
        self.prune_grants = prune_grants
        self.retire_site_secrets = retire_site_secrets
        # None only in tests of the row logic: the process always wires the secrets service.
        self.shred_customers = shred_customers
        # None with an external OpenTelemetry collector (no embedded store to tell).
        self.set_trace_retention = set_trace_retention
        # Tests only: called after each committed batch (to kill a run mid-way).
        self.after_batch = after_batch

    async def due(self) -> bool:
        async with self.db.unit_of_work() as session:
            last = await Repository(session).last_purge_run()
        if last is None or last.status == RUNNING:
            return True
        return last.started_at <= self.clock() - self.interval

    async def run_once(self) -> PurgeResult:
        """One whole run (or the rest of an interrupted one); does nothing while another
        runner holds the lock."""
        async with self.db.engine.connect() as lock_conn:
            if not await try_advisory_lock(lock_conn, PURGE_LOCK_KEY):
                await lock_conn.rollback()
                return PurgeResult()
            await lock_conn.commit()  # the lock is the session's; no transaction stays open
            try:
                return await self._run_locked()
            finally:
                with contextlib.suppress(Exception):
                    await advisory_unlock(lock_conn, PURGE_LOCK_KEY)
                    await lock_conn.commit()

    async def _run_locked(self) -> PurgeResult:
        now = self.clock()
        result = PurgeResult(ran=True)
        async with self.db.unit_of_work() as session:
            repo = Repository(session)
            last = await repo.last_purge_run()
            if last is not None and last.status == RUNNING:
                # We hold the lock, so its runner is gone: take over where it stopped.
                run_id, result.resumed = last.id, True
            else:
                run_id = str(uuid.uuid4())
                repo.add(PurgeRun(id=run_id, started_at=now, status=RUNNING))
            orgs = await repo.orgs_with_data()
            # An organisation without customers may still have traces and its own traceDays.
            policy_only = sorted(set(await repo.orgs_with_retention_policy()) - set(orgs))
        result.run_id = run_id
        if self.set_trace_retention is not None:
            for org_id in policy_only:
                async with self.db.unit_of_work() as session:
                    row = await Repository(session).retention_policy(org_id)
                await self._traces(org_id, RetentionPolicy.of(row).trace_days)
        for org_id in orgs:
            async with self.db.unit_of_work() as session:
                policy = RetentionPolicy.of(await Repository(session).retention_policy(org_id))
            await self._batches(
                result, org_id, "work_order", policy.cutoff("work_order", now), self._orders
            )
            try:
                await self._batches(
                    result,
                    org_id,
                    "contact_data",
                    policy.cutoff("contact_data", now),
                    self._contacts,
                )
            except DoorwardError as error:
                # The batch rolled back (its rows stay, locks released); the next run asks again.
                log.warning(
                    "contact data retention not done",
                    extra={"fields": {"org.id": org_id, "code": error.code.value}},
                )
            if self.retire_site_secrets is not None:
                await self._site_secrets(result, org_id, policy.cutoff("site_secret", now))
            if self.prune_grants is not None:
                await self._grants(result, org_id, policy.cutoff("grant", now))
            if self.set_trace_retention is not None:
                await self._traces(org_id, policy.trace_days)
            if self.prune_audit is not None:
                # Held records keep their audit trail too (audit stops the prefix before them).
                async with self.db.unit_of_work() as session:
                    held = await Repository(session).held_ids(org_id)
                try:
                    result.audit_events += await self.prune_audit(
                        org_id, policy.cutoff("audit_event", now), held
                    )
                except DoorwardError as error:
                    # The trail stays as it is; the next run asks again.
                    log.warning(
                        "audit pruning not done",
                        extra={"fields": {"org.id": org_id, "code": error.code.value}},
                    )
        async with self.db.unit_of_work() as session:
            run = await Repository(session).purge_run(run_id)
            assert run is not None
            run.status, run.finished_at = DONE, self.clock()
            result.work_orders, result.customers = run.work_orders, run.customers
            result.batches = run.batches
        log.info(
            "retention purge finished",
            extra={
                "fields": {
                    "run_id": run_id,
                    "work_orders": result.work_orders,
                    "customers": result.customers,
                    "grants": result.grants,
                    "resumed": result.resumed,
                }
            },
        )
        return result

    async def _site_secrets(self, result: PurgeResult, org_id: str, cutoff: datetime) -> None:
        assert self.retire_site_secrets is not None
        after = ""
        while True:
            async with self.db.unit_of_work() as session:
                sites = await Repository(session).stale_sites(org_id, cutoff, after, 500)
            if not sites:
                return
            try:
                result.site_secrets += await self.retire_site_secrets(org_id, cutoff, sites)
            except DoorwardError as error:
                # The secrets stay; the next run asks again.
                log.warning(
                    "site secret retention not done",
                    extra={"fields": {"org.id": org_id, "code": error.code.value}},
                )
                return
            after = sites[-1]

    async def _traces(self, org_id: str, days: int) -> None:
        assert self.set_trace_retention is not None
        try:
            await self.set_trace_retention(org_id, days)
        except DoorwardError as error:
            # The store keeps its previous value (or its own limit); the next run tells it again.
            log.warning(
                "trace retention not handed to the trace store",
                extra={"fields": {"org.id": org_id, "code": error.code.value}},
            )

    async def _grants(self, result: PurgeResult, org_id: str, cutoff: datetime) -> None:
        assert self.prune_grants is not None
        async with self.db.unit_of_work() as session:
            sites, orders = await Repository(session).held_sites_and_work_orders(org_id)
        try:
            result.grants += await self.prune_grants(org_id, cutoff, sites, orders)
        except DoorwardError as error:
            # The registry stays as it is; the next run asks again.
            log.warning(
                "grant registry pruning not done",
                extra={"fields": {"org.id": org_id, "code": error.code.value}},
            )

    async def _batches(
        self,
        result: PurgeResult,
        org_id: str,
        kind: str,
        cutoff: datetime,
        step: Callable[[AsyncSession, str, str, datetime], Awaitable[int]],
    ) -> None:
        while True:
            async with self.db.unit_of_work() as session:
                count = await step(session, result.run_id, org_id, cutoff)
                if count:
                    await _record(
                        session,
                        org_id,
                        "retention.purge",
                        details={
                            "kind": kind,
                            "count": count,
                            "request_id": result.run_id,
                        },
                    )
                    run = await Repository(session).purge_run(result.run_id)
                    assert run is not None
                    run.batches += 1
                    if kind == "work_order":
                        run.work_orders += count
                    else:
                        run.customers += count
            if count and self.after_batch is not None:
                await self.after_batch()
            if count < self.batch:
                return

    async def _orders(
        self, session: AsyncSession, run_id: str, org_id: str, cutoff: datetime
    ) -> int:
        repo = Repository(session)
        ids = await repo.expired_work_orders(org_id, cutoff, self.batch)
        return await repo.delete_work_orders(org_id, ids)

    async def _contacts(
        self, session: AsyncSession, run_id: str, org_id: str, cutoff: datetime
    ) -> int:
        repo = Repository(session)
        ids = await repo.stale_customers(org_id, cutoff, self.batch)
        if self.shred_customers is not None and ids:
            # The keys first, as in an erasure, while this transaction holds the rows locked
            # (a legal hold being placed waits for it, Repository.lock_hold_cover).
            gone: set[str] = set()
            for start in range(0, len(ids), SHRED_CHUNK):
                gone.update(
                    await self.shred_customers(org_id, cutoff, ids[start : start + SHRED_CHUNK])
                )
            ids = [customer_id for customer_id in ids if customer_id in gone]
        count = await repo.purge_contact_data(org_id, ids, self.clock())
        for customer_id in ids:
            self.forget_key(customer_id)
            await _record(
                session,
                org_id,
                "customer.erase",
                target_type="Customer",
                target_id=customer_id,
                details={"reason": "retention", "request_id": run_id},
            )
        return count

    async def run_forever(self, poll_seconds: float = 60.0) -> None:
        """The scheduler: checks every poll whether a run is due (any replica may check; the
        lock lets one run)."""
        while True:
            try:
                if await self.due():
                    await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention purge failed; retrying at the next poll")
            await asyncio.sleep(poll_seconds)


async def _record(
    session: AsyncSession,
    org_id: str,
    action: str,
    *,
    target_type: str = "Organisation",
    target_id: str = "",
    details: dict[str, Any],
) -> None:
    await record_event(
        session,
        AuditOutbox,
        AuditRecord(
            org_id=org_id,
            actor_id="",
            action=action,
            outcome=Outcome.ALLOWED,
            target_type=target_type,
            target_id=target_id or org_id,
            details=details,
        ),
    )
