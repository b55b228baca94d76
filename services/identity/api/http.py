"""Identity's plain HTTP: the JWKS every process verifies access tokens with."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.identity.keys import KeyRing


def jwks_router(keys: KeyRing) -> APIRouter:
    router = APIRouter()

    @router.get("/.well-known/jwks.json", include_in_schema=False)
    async def jwks() -> JSONResponse:
        # Short cache: verifiers refetch on an unknown kid anyway.
        return JSONResponse(keys.jwks(), headers={"Cache-Control": "public, max-age=60"})

    return router
