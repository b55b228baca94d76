"""The hash chain: one canonical encoding of an event, hashed with the previous event's hash.

Pure (no database): `doorward audit verify` uses it offline. Changing anything here breaks every
stored chain, so the encoding carries a version.

hash(n) = SHA-256(canonical JSON of {v, org_id, seq, id, occurred_at, actor_id, action, outcome,
work_order_id, secret_ref_id, target_type, target_id, trace_id, source_ip, details, service,
prev_hash}), keys sorted, no spaces, ASCII only; occurred_at as UTC with microseconds and a Z;
prev_hash of seq 1 is GENESIS_HASH.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ENCODING_VERSION = 1
GENESIS_HASH = "0" * 64

TEXT_FIELDS = (
    "org_id",
    "id",
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
)


def format_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("occurred_at must carry a time zone")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | datetime) -> datetime:
    """ISO 8601 from an export, or PostgreSQL's text form (`2026-01-02 03:04:05.6+00`)."""
    if isinstance(value, datetime):
        parsed = value
    else:
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("a time without a zone cannot be verified")
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class ChainEvent:
    """Everything the hash covers, plus the stored hash."""

    org_id: str
    seq: int
    id: str
    occurred_at: datetime
    actor_id: str
    action: str
    outcome: str
    work_order_id: str
    secret_ref_id: str
    target_type: str
    target_id: str
    trace_id: str
    source_ip: str
    service: str
    prev_hash: str
    details: dict[str, str] = field(default_factory=dict)
    hash: str = ""

    def canonical(self) -> bytes:
        body: dict[str, Any] = {name: getattr(self, name) for name in TEXT_FIELDS}
        body.update(
            v=ENCODING_VERSION,
            seq=self.seq,
            occurred_at=format_time(self.occurred_at),
            details={str(k): str(v) for k, v in self.details.items()},
            prev_hash=self.prev_hash,
        )
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def compute_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> ChainEvent:
        """From a database row, an export line or a dump line (values may all be text)."""
        details = row.get("details") or {}
        if isinstance(details, str):
            details = json.loads(details) if details.strip() else {}
        if not isinstance(details, dict):
            raise ValueError("details must be an object")
        texts = {name: _text(row.get(name)) for name in TEXT_FIELDS}
        return cls(
            **texts,
            seq=int(row["seq"]),
            occurred_at=parse_time(row["occurred_at"]),
            prev_hash=_text(row.get("prev_hash")),
            details={str(k): str(v) for k, v in details.items()},
            hash=_text(row.get("hash")),
        )


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value)
