"""Wiring shared by the adapters: the database and the rules, built once per process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from doorward_kit.auth import TokenVerifier
from doorward_kit.db import Database
from services.workorders.purge import Purge
from services.workorders.retention import TraceRetentionBy
from services.workorders.service import WorkOrdersService


@dataclass
class Runtime:
    db: Database
    service: WorkOrdersService
    verifier: TokenVerifier
    # Woken after every change so owed revocations go out at once, not at the next poll.
    wake_revoker: Callable[[], None] = lambda: None
    # The retention purge (its scheduler runs as a background task of the process).
    purge: Purge | None = None
    # Who enforces the traces' retention (the embedded store, or the operator's collector).
    trace_retention_by: TraceRetentionBy = TraceRetentionBy.TRACE_STORE
