"""The OTLP/HTTP receiver: POST /v1/traces and /v1/metrics, protobuf or JSON, gzip or not.

Answers as the OTLP specification asks: 200 with an (empty) Export*ServiceResponse in the
request's encoding; 400 for a body that is not OTLP (not retryable), 403 for telemetry of
another service than the client certificate's, 413 for one over the limit,
415 for another content type, 503 while the database cannot store it (retryable).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from doorward_kit.db import Database
from doorward_kit.http import BodyTooLarge
from doorward_kit.http import read_body as read_limited
from doorward_kit.https_peer import peer_service_of
from services.traces.otlp import JSON, PROTOBUF, PayloadError, decode_metrics, decode_traces
from services.traces.service import TraceStore

log = logging.getLogger(__name__)


class Refusal(Exception):
    """An OTLP request refused with `status`; the message names no content of the body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        code = "BAD_USER_INPUT" if self.status < 500 else "UNAVAILABLE"
        # Retry-After: the exporter waits that long instead of its own first backoff.
        headers = {"retry-after": "1"} if self.status == 503 else None
        return JSONResponse(
            {"error": {"code": code, "message": self.message}}, self.status, headers=headers
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, streamed against `limit` (the kit's read_body), then gzip inflated against the
    same limit, so a small bomb cannot inflate past it either."""
    try:
        body = await read_limited(request, limit)
    except BodyTooLarge:
        raise Refusal(413, f"body over {limit} bytes") from None
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise Refusal(415, "content encoding must be gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise Refusal(400, "the gzip body is corrupt") from error
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise Refusal(413, f"body over {limit} bytes inflated")
    return inflated


def _answer(message: Message, content_type: str) -> Response:
    if content_type.split(";", 1)[0].strip().lower() == JSON:
        return Response(json_format.MessageToJson(message), media_type=JSON)
    return Response(message.SerializeToString(), media_type=PROTOBUF)


def _media(request: Request) -> str:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in (PROTOBUF, JSON):
        raise Refusal(415, f"use {PROTOBUF} or {JSON} for OTLP/HTTP")
    return media


# SQLSTATEs of a transaction PostgreSQL aborted for a conflict with another one: running it
# again is the documented remedy (deadlock_detected, serialization_failure).
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})
_ATTEMPTS = 3


def _sqlstate(error: BaseException) -> str | None:
    original = getattr(error, "orig", None)
    return getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)


async def _store(
    db: Database, ingest: Callable[[AsyncSession, Any], Awaitable[int]], records: Any
) -> None:
    """One statement, run again when PostgreSQL aborted it for a conflict. Whatever still
    fails at the database is 503: the exporter keeps the batch and retries (OTLP's retryable
    answer), where a 500 made it drop the batch for good.

    An export is a single statement (spans and their summaries, or the metric points), atomic
    on its own: it runs in autocommit, without the BEGIN and COMMIT round trips a transaction
    around it would add."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with db.reads() as session:
                await ingest(session, records)
            return
        except (DBAPIError, OSError, TimeoutError) as error:
            state = _sqlstate(error)
            if state in _RETRY_SQLSTATES and attempt < _ATTEMPTS:
                continue
            # The error's class and SQLSTATE only: its text can quote the rows (span content).
            log.warning(
                "OTLP export not stored",
                extra={"fields": {"error": type(error).__name__, "sqlstate": state}},
            )
            raise Refusal(503, "the trace store cannot store this now; retry") from None


def check_sender(records: Sequence[Any], peer: str | None, *, tls: bool) -> None:
    """With mutual TLS a span's service is the one its sender's certificate names: a process
    stating another's `service.name` (to put words in its mouth, or to hide its own spans among
    another's) is refused whole, and nothing of the request is stored. Without TLS (the
    insecure development mode) there is no proven name and the stated one is kept."""
    if not tls:
        return
    if peer is None:
        raise Refusal(403, "the client certificate names no Doorward service")
    expected = f"doorward-{peer}"
    claimed = sorted({record.service for record in records} - {expected})
    if claimed:
        # Service names only: they are not secret and say what was attempted.
        log.warning(
            "OTLP export refused: service.name differs from the certificate",
            extra={"fields": {"certificate": peer, "claimed": claimed[:5]}},
        )
        raise Refusal(403, f"{peer}'s certificate may send only {expected}'s telemetry")


def otlp_router(
    db: Database, store: TraceStore, max_body_bytes: int, *, tls: bool = False
) -> APIRouter:
    """`tls`: the receiver runs with mutual TLS, so every request's sender is proven by its
    certificate (doorward_kit.https_peer) and must match what its telemetry claims."""
    router = APIRouter()

    async def export(
        request: Request,
        decode: Callable[[bytes, str], Sequence[Any]],
        ingest: Callable[[AsyncSession, Any], Awaitable[int]],
        answer: Message,
    ) -> Response:
        """One OTLP export: media type, streamed body, decode, store in one statement."""
        try:
            media = _media(request)
            body = await read_body(request, max_body_bytes)
            try:
                records = decode(body, media)
            except PayloadError as error:
                raise Refusal(400, str(error)) from None
            check_sender(records, peer_service_of(request.scope), tls=tls)
            await _store(db, ingest, records)
            return _answer(answer, media)
        except Refusal as refusal:
            return refusal.response()

    @router.post("/v1/traces")
    async def traces(request: Request) -> Response:
        return await export(
            request, decode_traces, store.ingest_spans, ExportTraceServiceResponse()
        )

    @router.post("/v1/metrics")
    async def metrics(request: Request) -> Response:
        return await export(
            request, decode_metrics, store.ingest_metrics, ExportMetricsServiceResponse()
        )

    return router
