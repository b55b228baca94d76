"""Wiring shared by the adapters: the database and the rules, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from doorward_kit.auth import TokenVerifier
from doorward_kit.db import Database
from services.workorders.service import WorkOrdersService


@dataclass
class Runtime:
    db: Database
    service: WorkOrdersService
    verifier: TokenVerifier
