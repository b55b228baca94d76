"""The only door for secret values: PUT {uploadUrl} and POST {revealUrl} (CONTRACT.md).

Every response of these routes, errors included, carries Cache-Control: no-store. Bodies are
parsed here (not by FastAPI) so that nothing in a malformed body is ever echoed back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from doorward_kit.auth import Principal, TokenVerifier, bearer_token
from doorward_kit.errors import DoorwardError, ErrorCode, bad_input
from doorward_kit.http import BodyTooLarge, read_body
from doorward_kit.text import ID, check_text
from services.secrets.api.openapi import openapi_document
from services.secrets.ratelimit import Limiter
from services.secrets.service.secrets import SecretsService

log = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_BODY_BYTES = 16 * 1024


def _json(status: int, content: dict[str, Any]) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers=NO_STORE)


async def _guarded(handler: Callable[[], Awaitable[JSONResponse]]) -> JSONResponse:
    try:
        return await handler()
    except DoorwardError as error:
        return _json(error.http_status, error.to_json())
    except Exception:
        log.exception("value route failed")
        return _json(500, DoorwardError(ErrorCode.INTERNAL, "internal error").to_json())


async def _body(request: Request, fields: tuple[str, ...]) -> dict[str, str]:
    try:
        # Counted while it arrives: a chunked body (or one whose Content-Length lies) is cut
        # off at the limit instead of being read whole first.
        raw = await read_body(request, MAX_BODY_BYTES)
    except BodyTooLarge:
        raise DoorwardError(ErrorCode.PAYLOAD_TOO_LARGE, "the request body is too large") from None
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_input("the request body must be a JSON object") from None
    if not isinstance(parsed, dict):
        raise bad_input("the request body must be a JSON object")
    missing = [f for f in fields if not isinstance(parsed.get(f), str) or not parsed.get(f)]
    if missing:
        raise bad_input("invalid request body: " + ", ".join(missing))
    # The kit's text policy (no control characters, length floor) before anything is looked up.
    return {f: check_text(f, parsed[f]) for f in fields}


def build_router(service: SecretsService, verifier: TokenVerifier, limiter: Limiter) -> APIRouter:
    router = APIRouter()

    async def caller(request: Request) -> Principal:
        principal = await verifier.verify(bearer_token(request.headers.get("authorization")))
        await limiter.acquire(principal.user_id)
        return principal

    def source_ip(request: Request) -> str:
        # Clients call this port directly: the socket's peer is the address, not a header.
        return request.client.host if request.client else ""

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(openapi_document())

    @router.put("/v1/uploads/{slot_id}", include_in_schema=False)
    async def upload(slot_id: str, request: Request) -> JSONResponse:
        async def handle() -> JSONResponse:
            principal = await caller(request)
            check_text("slotId", slot_id, ID)
            body = await _body(request, ("uploadToken", "value"))
            ref_id, version = await service.upload(
                org_id=principal.org_id,
                user_id=principal.user_id,
                slot_id=slot_id,
                token=body["uploadToken"],
                value=body["value"],
                source_ip=source_ip(request),
            )
            return _json(201, {"secretRefId": ref_id, "version": version})

        return await _guarded(handle)

    @router.post("/v1/reveals/{grant_id}", include_in_schema=False)
    async def reveal(grant_id: str, request: Request) -> JSONResponse:
        async def handle() -> JSONResponse:
            principal = await caller(request)
            check_text("grantId", grant_id, ID)
            body = await _body(request, ("revealToken",))
            revealed = await service.reveal(
                org_id=principal.org_id,
                user_id=principal.user_id,
                grant_id=grant_id,
                token=body["revealToken"],
                source_ip=source_ip(request),
            )
            return _json(
                200,
                {
                    "secretRefId": revealed.secret_ref_id,
                    "kind": revealed.kind,
                    "label": revealed.label,
                    "version": revealed.version,
                    "value": revealed.value,
                },
            )

        return await _guarded(handle)

    return router
