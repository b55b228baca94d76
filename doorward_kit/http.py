"""FastAPI app factory for every HTTP process: health probes, error mapping, tracing."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.telemetry import instrument_fastapi

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]


def error_response(error: DoorwardError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.to_json(), status_code=error.http_status, headers=headers)


def create_app(
    title: str,
    *,
    readiness: ReadinessCheck | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
) -> FastAPI:
    app = FastAPI(title=title, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ready = await readiness() if readiness else True
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.exception_handler(DoorwardError)
    async def doorward_error(_: Request, error: DoorwardError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        # Name the fields that were wrong, never echo their values.
        fields = sorted(
            {".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in error.errors()}
        )
        message = (
            "invalid request body: " + ", ".join(f for f in fields if f)
            if fields
            else "invalid request"
        )
        return error_response(DoorwardError(ErrorCode.BAD_USER_INPUT, message))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(DoorwardError(ErrorCode.INTERNAL, "internal error"))

    instrument_fastapi(app)
    return app
