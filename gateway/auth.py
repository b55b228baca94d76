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
    """Signature and expiry against identity's JWKS, then the session guard: a deactivated
    user's or a logged-out session's token is refused here, before planning, from the moment
    identity says so (the subgraphs check again in every resolver)."""
    from doorward_kit.grpc import InternalAuth
    from doorward_kit.session_guard import build_token_verifier

    built: list[Authenticator] = []

    async def authenticate(authorization: str | None) -> object:
        # Built on first use: the guard's gRPC channel belongs to the server's event loop.
        if not built:
            verifier: TokenVerifier = build_token_verifier(
                settings.stack, InternalAuth.from_stack(settings.stack, "gateway")
            )[0]
            built.append(authenticator_from_verifier(verifier))
        return await built[0](authorization)

    return authenticate
