"""Who a gRPC call acts for: the user whose access token it carries, never a request field.

A process's own credentials (its certificate, the internal token) say which service calls; they
never say which user. A call made for a user carries that user's access token in
`authorization: Bearer`, and the callee verifies it here exactly as the edge does (signature
against identity's JWKS, expiry, session epoch through the session guard, scope), then takes
organisation, user and roles from it.
"""

from __future__ import annotations

from typing import Any

from doorward_kit.auth import Principal, Role, TokenVerifier, bearer_token
from doorward_kit.errors import DoorwardError, ErrorCode, unauthenticated
from doorward_kit.grpc import AUTHORIZATION_KEY


def bearer_of(context: Any) -> str | None:
    """The bearer token of a grpc.aio call's metadata, if any (exactly one header allowed)."""
    values = [v for k, v in (context.invocation_metadata() or ()) if k == AUTHORIZATION_KEY]
    if len(values) != 1:
        return None
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return bearer_token(str(value))


async def acting_user(context: Any, verifier: TokenVerifier, *roles: Role) -> Principal:
    """The verified user this call acts for; with `roles`, they must hold one of them."""
    token = bearer_of(context)
    if token is None:
        raise unauthenticated("this call must carry the access token of the user it acts for")
    principal = await verifier.verify(token)
    if roles and not principal.has_role(*roles):
        raise DoorwardError(ErrorCode.FORBIDDEN, "the user this call acts for may not do this")
    return principal
