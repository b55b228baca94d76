"""Wiring: the pieces every adapter of identity shares, built once per process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jwt import PyJWK

from doorward_kit.auth import Principal, TokenVerifier, parse_jwks
from doorward_kit.db import Database
from doorward_kit.errors import unauthenticated
from services.identity.keys import KeyRing
from services.identity.outbox import GrantRevoker
from services.identity.service.identity import (
    SESSION_ENDED,
    AuditSink,
    IdentityService,
    Throttling,
)
from services.identity.service.mfa import SecretBox
from services.identity.service.passwords import Passwords
from services.identity.service.tokens import AccessTokenIssuer
from services.identity.session_bus import SessionBus
from services.identity.session_hub import SessionChange, SessionHub
from services.identity.settings import IdentitySettings

log = logging.getLogger(__name__)

# Also how soon a replica picks up a key another replica created (well within the new key's
# prepublish time, so every replica publishes it before any signs with it).
KEY_MAINTENANCE_SECONDS = 5.0


@dataclass
class Identity:
    settings: IdentitySettings
    db: Database
    keys: KeyRing
    service: IdentityService
    hub: SessionHub
    revoker: GrantRevoker | None = None
    verifier: TokenVerifier | None = None
    # Across replicas (LISTEN/NOTIFY); None in tests of one in-process replica.
    bus: SessionBus | None = None

    async def publish(self, changes: Iterable[SessionChange]) -> None:
        """Tell every connected process, through every identity replica, and wait (briefly)
        until they have acted on it."""
        for change in changes:
            if self.bus is not None:
                await self.bus.publish(change)
            else:
                await self.hub.publish(change, ack_seconds=self.settings.identity_watch_ack_timeout)

    @property
    def accepts_watchers(self) -> bool:
        """A replica that cannot hear the others' changes must not let a guard trust a cache."""
        return self.bus is None or self.bus.listening

    async def maintain_keys(self) -> None:
        while True:
            await asyncio.sleep(KEY_MAINTENANCE_SECONDS)
            try:
                await asyncio.to_thread(self.keys.maintain)
            except Exception:
                log.exception("signing key maintenance failed")


def build_keys(settings: IdentitySettings) -> KeyRing:
    keys = KeyRing(
        settings.key_dir,
        max_age=settings.identity_signing_key_max_age,
        token_ttl=settings.identity_access_token_ttl,
    )
    keys.load()
    keys.maintain()
    return keys


def build_service(
    settings: IdentitySettings, keys: KeyRing, audit: AuditSink | None = None
) -> IdentityService:
    if audit is None:
        from services.identity.audit import record_audit

        audit = record_audit
    return IdentityService(
        passwords=Passwords(
            time_cost=settings.identity_argon2_time_cost,
            memory_cost=settings.identity_argon2_memory_cost,
            parallelism=settings.identity_argon2_parallelism,
        ),
        issuer=AccessTokenIssuer(keys, settings.identity_access_token_ttl),
        secret_box=SecretBox(keys.derived_key("totp-secrets")),
        throttle_key=keys.derived_key("login-throttle"),
        audit=audit,
        refresh_ttl=settings.identity_refresh_token_ttl,
        throttling=Throttling(
            free_failures_account=settings.identity_login_free_failures_account,
            free_failures_address=settings.identity_login_free_failures_address,
            block_base_seconds=settings.identity_login_block_base_seconds,
            block_max_seconds=settings.identity_login_block_max_seconds,
            failure_window_seconds=settings.identity_login_failure_window_seconds,
        ),
    )


class LocalJwks:
    """Identity verifies its own tokens from its key ring, not over HTTP.

    The ring's published keys are read at most every REREAD_SECONDS (building the JWKS
    document serialises every public key, on every request before): a key is published
    `prepublish` seconds (30) before it signs anything, so a second's delay never refuses a
    token, a retired key stays published until its last token has expired anyway, and a kid
    not seen makes the verifier ask again (`refresh`)."""

    REREAD_SECONDS = 1.0

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys
        self._kids: tuple[str, ...] = ()
        self._parsed: dict[str, PyJWK] = {}
        self._read_at = -self.REREAD_SECONDS

    async def keys(self, *, refresh: bool = False) -> dict[str, PyJWK]:
        now = time.monotonic()
        if now - self._read_at < self.REREAD_SECONDS and self._parsed and not refresh:
            return self._parsed  # `refresh`: a token names a kid not seen (read the ring again)
        document: dict[str, Any] = self._keys.jwks()
        kids = tuple(k["kid"] for k in document["keys"])
        if kids != self._kids:
            self._parsed, self._kids = parse_jwks(document), kids
        self._read_at = now
        return self._parsed


class LocalSessionGuard:
    """Identity asks its own database: the source of truth, no cache needed."""

    # TokenVerifier.verify_with may fold this check into a request's first read.
    source_of_truth = True

    def __init__(self, db: Database, service: IdentityService) -> None:
        self._db = db
        self._service = service

    async def check(self, principal: Principal) -> None:
        # One statement (user LEFT JOIN session family): no transaction needed around it.
        async with self._db.raw_reads() as conn:
            state = await self._service.check_session(
                conn,
                org_id=principal.org_id,
                user_id=principal.user_id,
                epoch=principal.epoch,
                session_id=principal.session_id,
            )
        if not state.valid:
            raise unauthenticated(SESSION_ENDED)


def build_identity(
    settings: IdentitySettings,
    db: Database,
    *,
    keys: KeyRing | None = None,
    revoker: GrantRevoker | None = None,
    audit: AuditSink | None = None,
) -> Identity:
    ring = keys or build_keys(settings)
    service = build_service(settings, ring, audit)
    identity = Identity(
        settings=settings, db=db, keys=ring, service=service, hub=SessionHub(), revoker=revoker
    )
    identity.verifier = TokenVerifier(LocalJwks(ring), LocalSessionGuard(db, service))
    return identity
