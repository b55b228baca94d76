"""`doorward trace <trace-id | audit-event-id>`: a trace's span tree in the terminal.

An operator's tool, run beside the stack like `doorward audit verify`: it reads the trace store's
database (and, for an audit event id, the audit database to find the event's trace id).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# Attributes worth a glance in the tree (all allow-listed; see doorward_kit.span_policy).
SHOWN = (
    "doorward.decision",
    "doorward.decision.reason",
    "doorward.work_order.id",
    "doorward.secret_ref.id",
    "doorward.grant.id",
    "doorward.audit.event_id",
    "enduser.pseudo.id",
    "rpc.method",
    "http.status_code",
)


@dataclass(frozen=True)
class SpanLine:
    span_id: str
    parent_span_id: str | None
    service: str
    name: str
    started_at: datetime
    duration_us: int
    status: str
    attributes: dict[str, object]


def render_tree(spans: Sequence[SpanLine]) -> list[str]:
    """Children under their parents (by start time); spans whose parent is missing (not yet
    arrived, or another process's root) are shown as roots."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanLine]] = {}
    for span in sorted(spans, key=lambda s: (s.started_at, s.span_id)):
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children.setdefault(parent, []).append(span)
    if not spans:
        return []
    t0 = min(s.started_at for s in spans)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            offset = (span.started_at - t0).total_seconds() * 1000
            shown = " ".join(f"{k}={span.attributes[k]}" for k in SHOWN if k in span.attributes)
            status = "" if span.status == "UNSET" else f" [{span.status}]"
            lines.append(
                f"{'  ' * depth}{span.service} {span.name}  +{offset:.1f}ms "
                f"{span.duration_us / 1000:.1f}ms{status}{'  ' + shown if shown else ''}"
            )
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return lines


def _plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _trace_id_of(reference: str, audit_url: str) -> str:
    value = reference.strip().lower()
    if TRACE_ID.match(value):
        return value
    try:
        event_id = str(uuid.UUID(value))
    except ValueError:
        raise LookupError(
            f"{reference!r} is neither a trace id (32 hex digits) nor an audit event id (a UUID)"
        ) from None
    conn = await asyncpg.connect(_plain_dsn(audit_url))
    try:
        trace_id = await conn.fetchval(
            "SELECT trace_id FROM audit_events WHERE id = $1 LIMIT 1", event_id
        )
    finally:
        await conn.close()
    if not trace_id:
        raise LookupError(f"no audit event {event_id} with a trace id")
    return str(trace_id)


async def load_trace(reference: str, traces_url: str, audit_url: str) -> tuple[str, list[SpanLine]]:
    trace_id = await _trace_id_of(reference, audit_url)
    conn = await asyncpg.connect(_plain_dsn(traces_url))
    try:
        rows = await conn.fetch(
            "SELECT span_id, parent_span_id, service, name, started_at, duration_us, status, "
            "attributes FROM spans WHERE trace_id = $1",
            trace_id,
        )
    finally:
        await conn.close()
    spans = [
        SpanLine(
            r["span_id"],
            r["parent_span_id"],
            r["service"],
            r["name"],
            r["started_at"],
            r["duration_us"],
            r["status"],
            json.loads(r["attributes"]),
        )
        for r in rows
    ]
    return trace_id, spans


def run_trace(reference: str, traces_url: str, audit_url: str, echo: Callable[[str], None]) -> int:
    try:
        trace_id, spans = asyncio.run(load_trace(reference, traces_url, audit_url))
    except LookupError as error:
        echo(f"error: {error}")
        return 1
    except (OSError, asyncpg.PostgresError) as error:
        echo(
            f"error: cannot read the trace store ({type(error).__name__}): is the stack up, "
            "with the same DOORWARD_DATA_DIR?"
        )
        return 1
    if not spans:
        echo(f"trace {trace_id}: no spans stored (expired, not yet exported, or unknown)")
        return 1
    services = sorted({s.service for s in spans})
    echo(f"trace {trace_id}: {len(spans)} spans from {', '.join(services)}")
    for line in render_tree(spans):
        echo(line)
    return 0
