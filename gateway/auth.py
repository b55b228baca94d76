"""The Doorward authenticator: verifies `Authorization: Bearer <access token>` with the kit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.server import Authenticator
from gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from doorward_kit.auth import TokenVerifier


def authenticator_from_verifier(verifier: TokenVerifier) -> Authenticator:
    from doorward_kit.auth import bearer_token

    async def authenticate(authorization: str | None) -> object:
        # Restricted tokens pass: identity decides what they may do (changePassword, MFA).
        return await verifier.verify(bearer_token(authorization), allow_restricted=True)

    return authenticate


def doorward_authenticator(settings: GatewaySettings) -> Authenticator:
    """Signature and expiry are checked here, against identity's JWKS; subgraphs re-verify every
    token with the session guard (deactivation, restricted scope) in each resolver."""
    from doorward_kit.auth import HttpJwksSource, NoSessionGuard, TokenVerifier

    jwks = HttpJwksSource(f"{settings.stack.http_url('identity')}/.well-known/jwks.json")
    return authenticator_from_verifier(TokenVerifier(jwks, NoSessionGuard()))
