"""grpc.aio server and channel helpers shared by every service.

Server: mutual TLS (doorward_kit.tls), standard health service, an interceptor that runs a
call only when the method's allow-list names the calling service (deny by default; the caller
is the verified peer certificate), and DoorwardError mapped to a gRPC status (+ the precise code
in trailing metadata). Client: a channel that presents this process's certificate (reloaded when
renewed), carries the caller's bearer token when acting for a user, W3C trace context and a
deadline, and maps failures back to DoorwardError. Both sides make the call's span themselves
(doorward_kit.grpc_spans): a SERVER span around every handler, refused calls included, and a
CLIENT span around every call a stub makes on a ServiceChannel.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import trace

from doorward_kit.errors import (
    GRPC_CODE_METADATA_KEY,
    DoorwardError,
    ErrorCode,
    error_code_from_grpc,
)
from doorward_kit.grpc_spans import end_client_span, start_client_span, start_server_span
from doorward_kit.settings import StackSettings
from doorward_kit.tls import (
    SERVICES,
    CredentialFolder,
    CredentialsError,
    Stamp,
    channel_credentials,
    dns_name,
    is_tls,
    peer_service,
    server_credentials,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
Resp = TypeVar("Resp")

INTERNAL_TOKEN_KEY = "x-doorward-internal"
# Insecure development mode only: the name a caller claims next to the shared token.
SERVICE_KEY = "x-doorward-service"
AUTHORIZATION_KEY = "authorization"
_UNPROTECTED_PREFIXES = ("/grpc.health.v1.Health/",)
# How often a client looks at its certificate files (one stat() per check).
RELOAD_CHECK_SECONDS = 1.0
# A replaced client channel finishes its in-flight calls for this long, then is closed.
OLD_CHANNEL_GRACE_SECONDS = 30.0

AllowList = Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class InternalAuth:
    """How this process proves who it is on internal gRPC, and checks who calls it.

    Normally `tls_dir`: mutual TLS with the certificate in that folder (doorward_kit.tls).
    `tls_dir=None` is the insecure development mode (DOORWARD_INSECURE_INTERNAL=1): plain TCP,
    the one shared token plus the caller's *claimed* name. Allow-lists still apply there, but
    they only keep honest processes honest: any holder of the token can claim any name."""

    service: str
    tls_dir: Path | None
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.service not in SERVICES:
            raise ValueError(f"unknown service {self.service!r}")
        if self.tls_dir is None and not self.token:
            raise ValueError("insecure internal gRPC needs the internal token")

    @property
    def insecure(self) -> bool:
        return self.tls_dir is None

    @classmethod
    def from_stack(cls, stack: StackSettings, service: str) -> InternalAuth:
        if stack.insecure_internal:
            log.warning(
                "DOORWARD_INSECURE_INTERNAL is set: internal gRPC runs over plain TCP with a "
                "shared token and claimed service names; for development only"
            )
            return cls(service, None, stack.require_internal_token())
        if stack.tls_dir is None:
            raise RuntimeError(
                "DOORWARD_TLS_DIR is not set: this process has no certificate for internal "
                "gRPC (`doorward up` issues one; DOORWARD_INSECURE_INTERNAL=1 for development)"
            )
        return cls(service, Path(stack.tls_dir))


def allow_list(service: Any, callers: Mapping[str, Collection[str]]) -> AllowList:
    """A server's per-method allow-list from a protobuf service descriptor.

    Every method must be named (an empty set = nobody), so a method added to the .proto is
    refused until someone decides who may call it; names that are no method are an error."""
    methods = {m.name for m in service.methods}
    if set(callers) != methods:
        raise ValueError(
            f"allow-list of {service.full_name} must name exactly its methods: "
            f"missing {sorted(methods - set(callers))}, unknown {sorted(set(callers) - methods)}"
        )
    for who in callers.values():
        unknown = set(who) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services in allow-list: {sorted(unknown)}")
    return {f"/{service.full_name}/{name}": frozenset(who) for name, who in callers.items()}


def caller_service(context: grpc.aio.ServicerContext) -> str | None:
    """The service that makes this call: the verified peer certificate under mutual TLS, never
    metadata or a request field. Only on a plain-TCP server (insecure development mode, whose
    interceptor has checked the token) is it the name the caller claims."""
    auth = context.auth_context()
    if is_tls(auth):
        return peer_service(auth)
    claimed = _metadata_value(context.invocation_metadata(), SERVICE_KEY)
    return claimed if claimed in SERVICES else None


def _metadata_value(metadata: Any, key: str) -> str:
    for k, v in metadata or ():
        if k == key:
            return v.decode(errors="replace") if isinstance(v, bytes) else str(v)
    return ""


class _CallerInterceptor(grpc.aio.ServerInterceptor):
    """Deny by default: a call runs only when its method's allow-list names the caller. Every
    call, refused or not, runs inside its SERVER span (doorward_kit.grpc_spans)."""

    def __init__(self, auth: InternalAuth, allowed: dict[str, frozenset[str]]) -> None:
        self._token = auth.token.encode() if auth.insecure and auth.token else None
        self._allowed = allowed
        # method -> (the servicer's handler, our wrapper of it): the wrapper is built once per
        # method, not on every call (a servicer's handlers are made once, at registration).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        protected = not method.startswith(_UNPROTECTED_PREFIXES)
        if protected and self._token is not None:
            presented = _metadata_value(
                handler_call_details.invocation_metadata, INTERNAL_TOKEN_KEY
            )
            if not hmac.compare_digest(presented.encode(), self._token):
                log.warning("internal gRPC call refused", extra={"fields": {"method": method}})
                return _serving(
                    handler,
                    method,
                    _fixed_refusal(
                        grpc.StatusCode.UNAUTHENTICATED, "internal credential missing or wrong"
                    ),
                )
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        check = _allow_list_check(method, self._allowed) if protected else None
        wrapped = _serving(handler, method, check)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


# A check run before a call's handler: None lets it run, else the status that refuses it.
_Check = Callable[[grpc.aio.ServicerContext], "tuple[grpc.StatusCode, str] | None"]


def _allow_list_check(method: str, allowed: Mapping[str, frozenset[str]]) -> _Check:
    # The table is read on every call (not captured): allow() may add to it after a wrapper
    # was built.
    def check(context: grpc.aio.ServicerContext) -> tuple[grpc.StatusCode, str] | None:
        return _refusal(method, allowed.get(method, frozenset()), context)

    return check


def _fixed_refusal(code: grpc.StatusCode, message: str) -> _Check:
    def check(context: grpc.aio.ServicerContext) -> tuple[grpc.StatusCode, str]:
        return code, message

    return check


def _refusal(
    method: str, allowed: frozenset[str], context: grpc.aio.ServicerContext
) -> tuple[grpc.StatusCode, str] | None:
    caller = caller_service(context)
    if caller is None:
        log.warning(
            "internal gRPC call without a service identity refused",
            extra={"fields": {"method": method}},
        )
        return grpc.StatusCode.UNAUTHENTICATED, "no service identity"
    if caller not in allowed:
        log.warning(
            "internal gRPC call refused by the allow-list",
            extra={"fields": {"method": method, "caller": caller}},
        )
        return grpc.StatusCode.PERMISSION_DENIED, f"{caller} may not call {method}"
    return None


def _final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> Any:
    """The status a call ends with: what an abort or set_code() put on the context, else
    UNKNOWN for an escaping exception (what grpc answers), CANCELLED for a cancelled handler
    (the caller went away or its deadline passed), OK for a return."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if code is not None:  # grpc keeps the integer of the code
        return _CODES.get(code, grpc.StatusCode.UNKNOWN)
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


_CODES = {code.value[0]: code for code in grpc.StatusCode}


async def _refuse_unless_allowed(check: _Check | None, context: grpc.aio.ServicerContext) -> None:
    """Abort the call with the check's refusal, if it refuses (before any handler runs)."""
    if check is not None:
        refused = check(context)
        if refused is not None:
            await context.abort(*refused)


def _serving(
    handler: grpc.RpcMethodHandler, method: str, check: _Check | None
) -> grpc.RpcMethodHandler:
    """The same handler inside the call's SERVER span, with `check` (the allow-list: it needs
    the context for the caller) run before it. Every kind of method gets both: the check
    comes before the handler whatever its kind."""
    factory = _HANDLER_FACTORIES[handler.request_streaming, handler.response_streaming]
    if handler.response_streaming:
        inner_stream = handler.unary_stream or handler.stream_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # The span covers the whole stream (WatchSessions: as long as the watcher stays).
            span = start_server_span(method, context.invocation_metadata())
            try:
                await _refuse_unless_allowed(check, context)
                result = inner_stream(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:  # a handler that writes with context.write() and returns
                    await result
            except BaseException as error:
                span.end(_final_code(context, error), _unexpected(error))
                raise
            span.end(_final_code(context, None))

        return factory(streaming, handler.request_deserializer, handler.response_serializer)

    inner_unary = handler.unary_unary or handler.stream_unary

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        span = start_server_span(method, context.invocation_metadata())
        try:
            await _refuse_unless_allowed(check, context)
            response = await inner_unary(request, context)
        except BaseException as error:
            span.end(_final_code(context, error), _unexpected(error))
            raise
        span.end(_final_code(context, None))
        return response

    return factory(unary, handler.request_deserializer, handler.response_serializer)


_HANDLER_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _unexpected(error: BaseException) -> BaseException | None:
    """The exception worth recording on the span: not gRPC's own abort (its code says it all),
    not a cancellation."""
    if isinstance(error, (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit)):
        return None
    return error


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
    """A grpc.aio server with health checking and per-method caller allow-lists.

    Mutual TLS on its port unless `auth` is the insecure development mode. Every method is
    refused (deny by default) until `allow()` names who may call it."""

    def __init__(self, host: str, port: int, auth: InternalAuth) -> None:
        self.auth = auth
        self._allowed: dict[str, frozenset[str]] = {}
        self.server = grpc.aio.server(interceptors=[_CallerInterceptor(auth, self._allowed)])
        self.health = (
            health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.address = f"{host}:{port}"
        if auth.tls_dir is None:
            bound = self.server.add_insecure_port(self.address)
        else:
            creds = server_credentials(CredentialFolder(auth.tls_dir))
            bound = self.server.add_secure_port(self.address, creds)
        if bound == 0:
            raise OSError(f"gRPC port {port} on {host} is already in use")

    def allow(self, table: AllowList) -> None:
        """Add a service's allow-list (see allow_list())."""
        self._allowed.update(table)

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
    """A channel to one internal service (`server`, e.g. "identity"); every call carries a
    deadline, and either this process's certificate (mutual TLS, the server's certificate
    checked against the Doorward CA and the name `<server>.doorward.internal`, whatever
    address is dialled) or, in the insecure development mode, the token and our name.

    Certificates are renewed on disk while we run: when the files change the underlying
    channel is rebuilt for new calls (grpc Python has no reloading client credentials) and the
    old one is closed once its calls had time to finish. Stubs built on `.channel` follow."""

    def __init__(
        self,
        target: str,
        auth: InternalAuth,
        default_deadline: float = 5.0,
        *,
        server: str,
    ) -> None:
        self.target = target
        self.server = server
        self.default_deadline = default_deadline
        self._auth = auth
        self._folder = CredentialFolder(auth.tls_dir) if auth.tls_dir is not None else None
        self._stamp: Stamp | None = None
        self._next_check = 0.0
        # Replaced channels still finishing their calls -> the task that closes each.
        self._retiring: dict[grpc.aio.Channel, asyncio.Task[None]] = {}
        self._current = self._build()
        self.channel = _ChannelProxy(self)

    def _build(self) -> grpc.aio.Channel:
        options: list[tuple[str, Any]] = [
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            # A rebuilt channel must not reuse the old one's connections (old certificate).
            ("grpc.use_local_subchannel_pool", 1),
            # Several replicas behind one target (an address list, or a DNS name resolving to
            # several): spread calls over every ready one, and skip one that went away.
            ("grpc.lb_policy_name", "round_robin"),
        ]
        if self._folder is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        self._stamp = self._folder.stamp()
        material = self._folder.load()
        options.append(("grpc.ssl_target_name_override", dns_name(self.server)))
        return grpc.aio.secure_channel(self.target, channel_credentials(material), options=options)

    def current(self) -> grpc.aio.Channel:
        """The channel for a new call: rebuilt first when the certificate files changed."""
        if self._folder is None:
            return self._current
        now = time.monotonic()
        if now < self._next_check:
            return self._current
        self._next_check = now + RELOAD_CHECK_SECONDS
        try:
            changed = self._folder.stamp() != self._stamp
            if changed:
                fresh = self._build()
        except CredentialsError as exc:
            log.warning("client certificate not reloaded", extra={"fields": {"why": str(exc)}})
            return self._current
        if changed:
            old, self._current = self._current, fresh
            self._retire(old)
            log.info("client certificate reloaded", extra={"fields": {"server": self.server}})
        return self._current

    def _retire(self, old: grpc.aio.Channel) -> None:
        task = asyncio.get_running_loop().create_task(old.close(OLD_CHANNEL_GRACE_SECONDS))
        self._retiring[old] = task
        task.add_done_callback(lambda _: self._retiring.pop(old, None))

    def metadata(self, bearer_token: str | None = None) -> Sequence[tuple[str, str]]:
        md: list[tuple[str, str]] = []
        if self._auth.insecure and self._auth.token:
            md += [(INTERNAL_TOKEN_KEY, self._auth.token), (SERVICE_KEY, self._auth.service)]
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
        for old, task in list(self._retiring.items()):
            task.cancel()
            await old.close(None)
        await self._current.close(None)


class _ChannelProxy:
    """Looks like a grpc.aio.Channel to generated stubs; every call goes to the owner's
    current channel, so a stub built once survives certificate renewals."""

    def __init__(self, owner: ServiceChannel) -> None:
        self._owner = owner

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _Callable:
        return _Callable(self._owner, "unary_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> _Callable:
        return _Callable(self._owner, "stream_stream", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _Callable:
        return _Callable(self._owner, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> _Callable:
        return _Callable(self._owner, "stream_unary", method, args, kwargs)

    async def close(self, grace: float | None = None) -> None:
        await self._owner.close()


class _Callable:
    """One method of a stub: every call goes to the owner's current channel, inside a CLIENT
    span whose trace context travels in the call's metadata (doorward_kit.grpc_spans)."""

    def __init__(
        self, owner: ServiceChannel, kind: str, method: str, args: tuple[Any, ...], kwargs: Any
    ) -> None:
        self._owner = owner
        self._make = (kind, method, args, kwargs)
        self._method = method
        self._unary = kind == "unary_unary"
        self._channel: grpc.aio.Channel | None = None
        self._callable: Any = None

    def __call__(self, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        channel = self._owner.current()
        if channel is not self._channel:
            kind, method, make_args, make_kwargs = self._make
            self._callable = getattr(channel, kind)(method, *make_args, **make_kwargs)
            self._channel = channel
        span, metadata = start_client_span(self._method, metadata)
        try:
            call = self._callable(*args, metadata=metadata, **kwargs)
        except BaseException:
            end_client_span(span, grpc.StatusCode.UNKNOWN)
            raise
        if self._unary:
            return _TracedUnaryCall(call, span)
        call.add_done_callback(functools.partial(_stream_done, span))
        return call


class _TracedUnaryCall:
    """A unary call as grpc returned it, whose CLIENT span ends when it is awaited: with the
    answer (OK), the AioRpcError's code, or CANCELLED. Everything else is the call's own."""

    __slots__ = ("_call", "_span")

    def __init__(self, call: Any, span: trace.Span) -> None:
        self._call = call
        self._span: trace.Span | None = span

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)

    def __await__(self) -> Generator[Any, None, Any]:
        span, self._span = self._span, None
        if span is None:  # awaited before: the span has ended
            return (yield from self._call.__await__())
        try:
            response = yield from self._call.__await__()
        except grpc.aio.AioRpcError as error:
            end_client_span(span, error.code())
            raise
        except asyncio.CancelledError:
            end_client_span(span, grpc.StatusCode.CANCELLED)
            raise
        except BaseException:
            end_client_span(span, grpc.StatusCode.UNKNOWN)
            raise
        end_client_span(span, grpc.StatusCode.OK)
        return response


# The tasks that read a finished stream's code (held until done: the loop keeps weak refs).
_STREAM_ENDINGS: set[asyncio.Task[None]] = set()


def _stream_done(span: trace.Span, call: grpc.aio.Call) -> None:
    """A streaming call finished: its code is read by a coroutine (grpc has no synchronous
    accessor), then its span ends. Streams are few and long (WatchSessions)."""
    try:
        task = asyncio.get_running_loop().create_task(_end_stream_span(span, call))
    except RuntimeError:  # no loop any more (shutdown): end without the code
        span.end()
        return
    _STREAM_ENDINGS.add(task)
    task.add_done_callback(_STREAM_ENDINGS.discard)


async def _end_stream_span(span: trace.Span, call: grpc.aio.Call) -> None:
    try:
        code = await call.code()
    except BaseException:
        span.end()
        raise
    # Ending a stream is the caller's choice (a watcher cancels it when it stops): not a fault.
    end_client_span(span, grpc.StatusCode.OK if code is grpc.StatusCode.CANCELLED else code)


def error_from_rpc(rpc_error: grpc.aio.AioRpcError, what: str) -> DoorwardError:
    trailing: dict[str, Any] = {k: v for k, v in (rpc_error.trailing_metadata() or ())}
    raw = trailing.get(GRPC_CODE_METADATA_KEY)
    code = error_code_from_grpc(rpc_error.code(), raw if isinstance(raw, str) else None)
    if code is ErrorCode.UNAVAILABLE and raw is None:
        return DoorwardError(code, f"{what} is unavailable")
    if code is ErrorCode.INTERNAL:
        return DoorwardError(code, f"{what} failed")
    return DoorwardError(code, rpc_error.details() or code.value)
