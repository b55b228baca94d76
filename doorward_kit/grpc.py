"""grpc.aio server and channel helpers shared by every service.

Server: standard health service, an interceptor that refuses calls without the internal token
(deny by default) and maps DoorwardError to a gRPC status (+ the precise code in trailing
metadata). Client: a channel whose calls carry the internal token, the caller's bearer token
when acting for a user, W3C trace context (via the OpenTelemetry instrumentation), a deadline,
and map failures back to DoorwardError.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from doorward_kit.errors import (
    GRPC_CODE_METADATA_KEY,
    DoorwardError,
    ErrorCode,
    error_code_from_grpc,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
Resp = TypeVar("Resp")

INTERNAL_TOKEN_KEY = "x-doorward-internal"
AUTHORIZATION_KEY = "authorization"
_UNPROTECTED_PREFIXES = ("/grpc.health.v1.Health/",)


class _InternalAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, internal_token: str) -> None:
        self._token = internal_token.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method.startswith(_UNPROTECTED_PREFIXES):
            return await continuation(handler_call_details)
        presented = dict(handler_call_details.invocation_metadata or ()).get(INTERNAL_TOKEN_KEY, "")
        if isinstance(presented, bytes):
            presented = presented.decode(errors="replace")
        if not hmac.compare_digest(presented.encode(), self._token):
            log.warning("internal gRPC call refused", extra={"fields": {"method": method}})
            return _deny_handler()
        return await continuation(handler_call_details)


def _deny_handler() -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "internal credential missing or wrong")

    return grpc.unary_unary_rpc_method_handler(deny)


async def abort_with(context: grpc.aio.ServicerContext, error: DoorwardError) -> None:
    """Turn a DoorwardError into the gRPC status and trailing code; never returns."""
    context.set_trailing_metadata(((GRPC_CODE_METADATA_KEY, error.code.value),))
    await context.abort(error.grpc_status, error.message)


def grpc_errors(
    method: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Decorator for servicer methods: DoorwardError -> status; anything else -> masked INTERNAL."""
    import functools

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        context = args[-1] if args else kwargs.get("context")
        try:
            return await method(*args, **kwargs)
        except DoorwardError as error:
            await abort_with(context, error)
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("gRPC handler failed", extra={"fields": {"method": method.__name__}})
            await abort_with(context, DoorwardError(ErrorCode.INTERNAL, "internal error"))
            raise

    return wrapper


class GrpcServer:
    """A grpc.aio server with health checking; add servicers, then start()."""

    def __init__(self, host: str, port: int, internal_token: str) -> None:
        self.server = grpc.aio.server(interceptors=[_InternalAuthInterceptor(internal_token)])
        self.health = (
            health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.address = f"{host}:{port}"
        bound = self.server.add_insecure_port(self.address)
        if bound == 0:
            raise OSError(f"gRPC port {port} on {host} is already in use")

    async def start(self) -> None:
        await self.server.start()
        await _set_health(self.health, "", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 2.0) -> None:
        await _set_health(self.health, "", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)


async def _set_health(servicer: Any, service: str, status: int) -> None:
    result = servicer.set(service, status)
    if hasattr(result, "__await__"):
        await result


class ServiceChannel:
    """A channel to one internal service; every call carries the internal token and a deadline."""

    def __init__(self, target: str, internal_token: str, default_deadline: float = 5.0) -> None:
        self.target = target
        self.channel = grpc.aio.insecure_channel(
            target, options=[("grpc.enable_retries", 1), ("grpc.keepalive_time_ms", 30_000)]
        )
        self._internal_token = internal_token
        self.default_deadline = default_deadline

    def metadata(self, bearer_token: str | None = None) -> Sequence[tuple[str, str]]:
        md = [(INTERNAL_TOKEN_KEY, self._internal_token)]
        if bearer_token:
            md.append((AUTHORIZATION_KEY, f"Bearer {bearer_token}"))
        return md

    async def call(
        self,
        method: Callable[..., Awaitable[Resp]],
        request: Any,
        *,
        bearer_token: str | None = None,
        deadline: float | None = None,
        what: str = "",
    ) -> Resp:
        """Call a stub method; map gRPC failures to DoorwardError naming the service."""
        try:
            return await method(
                request,
                metadata=self.metadata(bearer_token),
                timeout=deadline if deadline is not None else self.default_deadline,
            )
        except grpc.aio.AioRpcError as rpc_error:
            raise error_from_rpc(rpc_error, what or self.target) from None

    async def close(self) -> None:
        await self.channel.close(None)


def error_from_rpc(rpc_error: grpc.aio.AioRpcError, what: str) -> DoorwardError:
    trailing: dict[str, Any] = {k: v for k, v in (rpc_error.trailing_metadata() or ())}
    raw = trailing.get(GRPC_CODE_METADATA_KEY)
    code = error_code_from_grpc(rpc_error.code(), raw if isinstance(raw, str) else None)
    if code is ErrorCode.UNAVAILABLE and raw is None:
        return DoorwardError(code, f"{what} is unavailable")
    if code is ErrorCode.INTERNAL:
        return DoorwardError(code, f"{what} failed")
    return DoorwardError(code, rpc_error.details() or code.value)
