"""Access tokens (EdDSA JWT with the claims documented in doorward_kit.auth) and opaque refresh
tokens (random; only their SHA-256 is stored)."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Iterable

import jwt

from doorward_kit.auth import AUDIENCE, ISSUER, MAX_TOKEN_LIFETIME_SECONDS, TokenScope
from services.identity.keys import KeyRing


class AccessTokenIssuer:
    def __init__(self, keys: KeyRing, ttl: int) -> None:
        if not 0 < ttl <= MAX_TOKEN_LIFETIME_SECONDS:
            raise ValueError(f"access tokens live at most {MAX_TOKEN_LIFETIME_SECONDS} seconds")
        self.keys = keys
        self.ttl = ttl

    def issue(
        self,
        *,
        user_id: str,
        org_id: str,
        roles: Iterable[str],
        region_ids: Iterable[str],
        session_id: str,
        epoch: int,
        scope: TokenScope,
        now: float | None = None,
    ) -> tuple[str, int]:
        """The token and its expiry (unix seconds)."""
        issued_at = int(now if now is not None else time.time())
        expires_at = issued_at + self.ttl
        key = self.keys.current(issued_at)
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user_id,
            "org": org_id,
            "roles": sorted(roles),
            "regions": sorted(region_ids),
            "sid": session_id,
            "sep": epoch,
            "scope": scope.value,
            "iat": issued_at,
            "exp": expires_at,
            "jti": str(uuid.uuid4()),
        }
        token = jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
        return token, expires_at


def new_refresh_token() -> str:
    return "dwr_" + secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
