"""GET /export: a filtered trail as JSON Lines or CSV, streamed (AUDITOR, ADMIN; bearer token).

Each line carries every field the hash covers, so an unfiltered JSON Lines export (which also
lists the signed checkpoints and the head, after signing a fresh checkpoint over every exported
event) is what `doorward audit verify --dump` reads.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from doorward_kit.auth import bearer_token
from doorward_kit.errors import DoorwardError, bad_input
from doorward_kit.graphql import client_ip
from doorward_kit.metrics import AUDIT_WRITE_FAILURES
from services.audit.chain import format_time
from services.audit.models import AuditCheckpoint
from services.audit.repository import EventFilter
from services.audit.runtime import AuditRuntime
from services.audit.verify import anchor_row

EXPORT_FIELDS = (
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
)


def export_record(row: dict[str, Any]) -> dict[str, Any]:
    record = {name: row[name] for name in EXPORT_FIELDS}
    record["occurred_at"] = format_time(row["occurred_at"])
    return record


def checkpoint_record(cp: AuditCheckpoint) -> dict[str, Any]:
    return {
        "record": "checkpoint",
        "org_id": cp.org_id,
        "tree_size": cp.tree_size,
        "root_hash": cp.root_hash,
        "signed_at": format_time(cp.signed_at),
        "key_id": cp.key_id,
        "signature": cp.signature,
    }


def _csv_line(values: list[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_input(f"{name} must be an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise bad_input(f"{name} needs a time zone offset")
    return parsed


def export_router(runtime: AuditRuntime) -> APIRouter:
    router = APIRouter()

    @router.get("/export")
    async def export(
        request: Request,
        format: Literal["jsonl", "csv"] = Query("jsonl"),
        actor_id: str | None = Query(None, alias="actorId"),
        work_order_id: str | None = Query(None, alias="workOrderId"),
        secret_ref_id: str | None = Query(None, alias="secretRefId"),
        action: str | None = Query(None),
        from_: str | None = Query(None, alias="from"),
        to: str | None = Query(None),
    ) -> StreamingResponse:
        principal = await runtime.verifier.verify(
            bearer_token(request.headers.get("authorization"))
        )
        runtime.service.authorize_read(principal)
        event_filter = EventFilter(
            actor_id=actor_id,
            work_order_id=work_order_id,
            secret_ref_id=secret_ref_id,
            action=action,
            occurred_from=_time(from_, "from"),
            occurred_to=_time(to, "to"),
        )
        unfiltered = event_filter == EventFilter()
        # The export itself goes on the trail before a single line leaves.
        try:
            async with runtime.db.unit_of_work() as session:
                await runtime.service.record_export(session, principal, format, client_ip(request))
        except DoorwardError:
            raise  # an answer (a refusal), not a failed write
        except Exception:
            # audit's own event could not be written (the export is refused with it): the same
            # metric as every other service's failed audit writes, so the alert sees it too.
            AUDIT_WRITE_FAILURES.add(1, path="own")
            raise
        signed_head = None
        if format == "jsonl" and unfiltered:
            # Signed in its own transaction (committed before a line leaves): the export's last
            # event, the audit.export just written included, is then covered by a signature.
            async with runtime.db.unit_of_work() as session:
                signed_head = await runtime.service.sign_for_export(session, principal)

        async def lines() -> AsyncIterator[str]:
            async with runtime.db.unit_of_work() as session:
                checkpoints, head = await runtime.service.export_metadata(
                    session, principal, signed_head
                )
                up_to = head[0] if head else 0
                if format == "csv":
                    yield _csv_line(list(EXPORT_FIELDS))
                async for row in runtime.service.stream(session, principal, event_filter):
                    if row["seq"] > up_to:
                        break
                    record = export_record(row)
                    if format == "csv":
                        record["details"] = json.dumps(record["details"], sort_keys=True)
                        yield _csv_line([record[name] for name in EXPORT_FIELDS])
                    else:
                        yield json.dumps(record, sort_keys=True) + "\n"
                if format == "jsonl" and unfiltered:
                    anchor = await runtime.service.prune_anchor(session, principal)
                    if anchor is not None:
                        # The signed stand-in for events pruned past retention.
                        prune_line = {"record": "prune", **anchor_row(anchor)}
                        yield json.dumps(prune_line, sort_keys=True) + "\n"
                    for cp in checkpoints:
                        yield json.dumps(checkpoint_record(cp), sort_keys=True) + "\n"
                    if head is not None:
                        head_line = {
                            "record": "head",
                            "org_id": principal.org_id,
                            "seq": head[0],
                            "hash": head[1],
                        }
                        yield json.dumps(head_line, sort_keys=True) + "\n"

        media = "text/csv" if format == "csv" else "application/x-ndjson"
        return StreamingResponse(
            lines(),
            media_type=media,
            headers={
                "Cache-Control": "no-store",
                "Content-Disposition": f'attachment; filename="audit-trail.{format}"',
            },
        )

    return router
