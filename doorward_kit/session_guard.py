"""SessionGuard backed by identity's gRPC: a deactivated user's tokens die everywhere at once.

First version: asks identity on every check (correct, not yet fast). The identity service's
owner replaces this with a short cache invalidated by the WatchSessions push.
"""

from __future__ import annotations

from doorward.identity.v1 import identity_pb2, identity_pb2_grpc

from doorward_kit.auth import HttpJwksSource, Principal, TokenVerifier
from doorward_kit.errors import unauthenticated
from doorward_kit.grpc import ServiceChannel
from doorward_kit.settings import StackSettings


class IdentitySessionGuard:
    def __init__(self, channel: ServiceChannel) -> None:
        self._channel = channel
        self._stub = identity_pb2_grpc.IdentityStub(channel.channel)

    async def check(self, principal: Principal) -> None:
        response = await self._channel.call(
            self._stub.CheckSession,
            identity_pb2.CheckSessionRequest(
                user_id=principal.user_id,
                org_id=principal.org_id,
                epoch=principal.epoch,
                session_id=principal.session_id,
            ),
            what="identity",
        )
        if not response.valid:
            raise unauthenticated("this session has ended; log in again")

    async def close(self) -> None:
        await self._channel.close()


def build_token_verifier(stack: StackSettings) -> tuple[TokenVerifier, IdentitySessionGuard]:
    """The verifier every process uses; close the guard at shutdown."""
    channel = ServiceChannel(
        stack.grpc_target("identity"), stack.require_internal_token(), stack.grpc_deadline
    )
    guard = IdentitySessionGuard(channel)
    jwks = HttpJwksSource(stack.http_url("identity") + "/.well-known/jwks.json")
    return TokenVerifier(jwks, guard), guard
