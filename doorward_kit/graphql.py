"""Strawberry helpers shared by the subgraphs: per-request context with the verified caller,
DoorwardError -> `extensions.code`, Relay-style connections and opaque cursors."""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

import orjson
import strawberry
import strawberry.federation
from fastapi.routing import APIRoute
from graphql import (
    ArgumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLNonNull,
    ObjectFieldNode,
    StringValueNode,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    visit,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from strawberry.dataloader import DataLoader
from strawberry.extensions import ParserCache, SchemaExtension, ValidationCache
from strawberry.fastapi import BaseContext, GraphQLRouter
from strawberry.federation.schema import FederationAny
from strawberry.types import ExecutionContext, Info

from doorward_kit.auth import Principal, TokenScope, TokenVerifier, bearer_token
from doorward_kit.entities import BatchResolver, batch_resolver, resolve_batches
from doorward_kit.errors import DoorwardError, ErrorCode, bad_input
from doorward_kit.execution import FastExecutionContext
from doorward_kit.gateway_signature import (
    SIGNATURE_HEADER,
    GatewayVerifier,
    NonceLedger,
    SignatureRefused,
    clean_address,
)
from doorward_kit.http import BodyTooLarge, read_body
from doorward_kit.settings import StackSettings
from doorward_kit.text import check_text, check_value, rule_for

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


@dataclass
class RequestContext(BaseContext):
    """What every resolver gets. The token is verified lazily, once per request.

    A strawberry BaseContext because its FastAPI router accepts no other custom context."""

    request: Request
    verifier: TokenVerifier
    services: Any = None
    source_ip: str = ""
    _principal: Principal | None = field(default=None, repr=False)
    _loaders: dict[str, DataLoader[Any, Any]] = field(default_factory=dict, repr=False)
    _verifying: dict[bool, asyncio.Future[Principal]] = field(default_factory=dict, repr=False)

    def loader(
        self, name: str, load: Callable[[list[Any]], Awaitable[Sequence[Any]]]
    ) -> DataLoader[Any, Any]:
        """One DataLoader per name per request: federation references resolve in one batch."""
        if name not in self._loaders:
            self._loaders[name] = DataLoader(load_fn=load)
        return self._loaders[name]

    @property
    def raw_token(self) -> str | None:
        return bearer_token(self.request.headers.get("authorization"))

    async def principal(self, *, allow_restricted: bool = False) -> Principal:
        if self._principal is not None and (
            allow_restricted or self._principal.scope.value == "full"
        ):
            return self._principal
        # One verification per request, however many resolvers ask at once: the 20 entities
        # of a batch used to verify (and check the session) 20 times, and, each resuming at a
        # different tick, split their DataLoader batch into several queries.
        pending = self._verifying.get(allow_restricted)
        if pending is None:
            pending = asyncio.ensure_future(
                self.verifier.verify(self.raw_token, allow_restricted=allow_restricted)
            )
            # Retrieved even if every waiter was cancelled: no "never retrieved" warning.
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._verifying[allow_restricted] = pending
        # A resolver cancelled while waiting must not cancel the others' verification.
        principal = await asyncio.shield(pending)
        self._principal = principal
        return principal

    async def principal_with(
        self, check: Callable[[Principal], Awaitable[T]]
    ) -> tuple[Principal, T | None]:
        """The verified caller (a full-scope token), as principal() gives it, but with the
        session check done by `check` (TokenVerifier.verify_with: identity folds it into the
        request's first read) when this request's caller is not verified yet; then also what
        `check` answered. When the caller is verified already, or being verified for another
        resolver, `check` is not called and the second item is None: read as usual. A
        resolver asking meanwhile verifies on its own (the same checks, once more)."""
        known = self._principal
        if (known is not None and known.scope is TokenScope.FULL) or False in self._verifying:
            return await self.principal(), None
        principal, found = await self.verifier.verify_with(self.raw_token, check)
        self._principal = principal
        return principal, found


async def caller(info: Info, *, allow_restricted: bool = False) -> Principal:
    """The verified caller of a resolver (through its RequestContext)."""
    context: RequestContext = info.context
    return await context.principal(allow_restricted=allow_restricted)


def client_ip(request: Request) -> str:
    """The end user's address: the one the gateway signed (see GatewayGate), else the TCP peer's.
    Never a header a caller can write (X-Forwarded-For is nobody's word here)."""
    signed = getattr(request.state, "client_address", None)
    if isinstance(signed, str):
        return signed
    return clean_address(request.client.host) if request.client else ""


class GatewayGate:
    """Who may send a subgraph GraphQL: only the gateway, proven by its signature.

    Without a key nothing is answered, unless the stack explicitly allows unsigned GraphQL
    (development only, StackSettings refuses it otherwise). With `nonces` (the subgraph's
    PostgresNonceLedger) a nonce is good once across all its replicas, not only per process.
    A body longer than `max_body_bytes` is refused (BodyTooLarge) as it arrives."""

    def __init__(
        self,
        verifier: GatewayVerifier | None,
        *,
        allow_unsigned: bool = False,
        nonces: NonceLedger | None = None,
        max_body_bytes: int = 8_000_000,
    ) -> None:
        if verifier is None and not allow_unsigned:
            raise RuntimeError(
                "DOORWARD_GATEWAY_PUBLIC_KEY_FILE is not set: the subgraph cannot tell the "
                "gateway's requests from anyone's (DOORWARD_ALLOW_UNSIGNED_GRAPHQL=true turns "
                "the check off, in development only)"
            )
        self.verifier = verifier
        self.allow_unsigned = allow_unsigned
        self.nonces = nonces
        self.max_body_bytes = max_body_bytes

    @classmethod
    def from_stack(cls, stack: StackSettings, *, nonces: NonceLedger | None = None) -> GatewayGate:
        key_file = stack.gateway_public_key_file
        verifier = GatewayVerifier.from_file(key_file) if key_file is not None else None
        return cls(
            verifier,
            allow_unsigned=stack.allow_unsigned_graphql,
            nonces=nonces,
            max_body_bytes=stack.subgraph_max_body_bytes,
        )

    async def check(self, request: Request) -> str:
        """The client address for this request; SignatureRefused when the gateway did not
        sign it, BodyTooLarge for a body over the limit. The header is looked at before the
        body is read: refusals stay cheap. The body is read here, counted as it arrives, and
        left where `request.body()` finds it."""
        signed = SIGNATURE_HEADER in request.headers
        if (not signed and not self.allow_unsigned) or (signed and self.verifier is None):
            raise SignatureRefused("no gateway signature")
        if signed and self.verifier is not None:
            self.verifier.precheck(request.headers)  # a junk or stale header: before the body
        body = await read_body(request, self.max_body_bytes)
        # Where Request.body() keeps what it has read: the GraphQL handler (FastAPI's route or
        # the edge) reads the body from there, the stream being spent.
        request._body = body
        if self.verifier is None or not signed:
            return clean_address(request.client.host) if request.client else ""
        target = _signed_target(request)
        signed_by = self.verifier.verified(request.method, target, body, request.headers)
        # Another replica may have served this very request: the nonce is claimed in the
        # database all replicas share (raises UNAVAILABLE when it cannot tell: fail closed).
        if self.nonces is not None and not await self.nonces.claim(
            signed_by.nonce, signed_by.stamp, 2 * self.verifier.max_age
        ):
            raise SignatureRefused("replayed gateway signature")
        return signed_by.address


# Characters a request path may have for its signed target to be the path as it came.
_PLAIN_PATH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-_.")


def _signed_target(request: Request) -> str:
    """PATH[?QUERY] of the request as the gateway signed it (gateway_signature.request_target):
    Starlette's `request.url` path and query. Building that URL (host header, netloc, a
    urlsplit) was a visible share of a small subgraph request; for a plain path without a
    query string (every request the gateway sends) it is the path itself, read from the
    scope. Anything else is read through `request.url` as before."""
    scope = request.scope
    path = scope["path"]
    if (
        not scope.get("query_string")
        and path.startswith("/")
        and not path.startswith("//")
        and _PLAIN_PATH.issuperset(path)
    ):
        return str(path)
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def refusal_body(error: DoorwardError) -> dict[str, Any]:
    """The answer to a request the gate refused: a GraphQL error with the error's code."""
    return {"errors": [{"message": error.message, "extensions": {"code": error.code.value}}]}


def body_too_large() -> DoorwardError:
    return DoorwardError(ErrorCode.PAYLOAD_TOO_LARGE, "the request body is too large")


def _refusal(error: DoorwardError) -> Response:
    return JSONResponse(refusal_body(error), status_code=error.http_status)


def _gateway_only(gate: GatewayGate) -> type[APIRoute]:
    """A route class whose handlers run only for requests the gate lets through."""

    class GatewayOnlyRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def checked(request: Request) -> Response:
                try:
                    request.state.client_address = await gate.check(request)
                except SignatureRefused as refused:
                    log.warning(
                        "subgraph request refused",
                        extra={"fields": {"reason": refused.reason}},
                    )
                    return _refusal(refused)
                except BodyTooLarge:
                    return _refusal(body_too_large())
                except DoorwardError as error:  # the nonce ledger could not answer
                    return _refusal(error)
                return await handler(request)

            return checked

    return GatewayOnlyRoute


def _is_doorward(error: GraphQLError) -> bool:
    return isinstance(error.original_error, DoorwardError)


class DoorwardErrors(SchemaExtension):
    """Put DoorwardError's code into extensions.code; mask everything unexpected."""

    def on_operation(self):  # type: ignore[no-untyped-def]
        yield
        result = self.execution_context.result
        if result is None or not result.errors:
            return
        result.errors = [self._translate(e, self.execution_context) for e in result.errors]

    @staticmethod
    def _translate(error: GraphQLError, _: ExecutionContext) -> GraphQLError:
        original = error.original_error
        if isinstance(original, DoorwardError):
            return GraphQLError(
                original.message,
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                path=error.path,
                extensions={"code": original.code.value},
            )
        if original is None:
            # Validation / parse errors: graphql-core's own message is safe.
            extensions = dict(error.extensions or {})
            extensions.setdefault("code", "GRAPHQL_VALIDATION_FAILED")
            return GraphQLError(
                error.message, nodes=error.nodes, path=error.path, extensions=extensions
            )
        log.error("resolver failed", exc_info=original)
        return GraphQLError(
            "internal error",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": ErrorCode.INTERNAL.value},
        )


class _TextInputs(Visitor):
    """Checks every string literal of a document and notes where each variable is used
    (argument or input-field path), so its value is checked under that field's rule."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.variables: dict[str, str] = {}

    def _path(self) -> str:
        return ".".join(self.names)

    def enter_argument(self, node: ArgumentNode, *_: Any) -> None:
        self.names = [node.name.value]

    def leave_argument(self, *_: Any) -> None:
        self.names = []

    def enter_variable_definition(self, node: VariableDefinitionNode, *_: Any) -> None:
        # Default values are literals too.
        self.names = [f"${node.variable.name.value}"]

    def leave_variable_definition(self, *_: Any) -> None:
        self.names = []

    def enter_object_field(self, node: ObjectFieldNode, *_: Any) -> None:
        self.names.append(node.name.value)

    def leave_object_field(self, *_: Any) -> None:
        self.names.pop()

    def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
        if self.names:
            check_text(self._path(), node.value)

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        if self.names and not self.names[0].startswith("$"):
            # A variable used in several places is checked under the strictest-named use:
            # the last one seen is good enough, every use goes through the same floor rule.
            self.variables.setdefault(node.name.value, self._path())


def _variable_fields(document: Any) -> dict[str, str]:
    """Checks the document's literals; returns where each variable is used (see _TextInputs)."""
    inputs = _TextInputs()
    visit(document, inputs)
    return inputs.variables


# A subgraph gets the same few documents (the gateway's cached plans) over and over: what a
# document's literals and variable uses are is worked out once per document text. Only
# documents whose literals passed are remembered; values are still checked on every request.
_DOCUMENT_FIELDS: OrderedDict[str, dict[str, str]] = OrderedDict()
DOCUMENT_CACHE_SIZE = 256


def _cached_variable_fields(query: str | None, document: Any) -> dict[str, str]:
    if query is None:
        return _variable_fields(document)
    found = _DOCUMENT_FIELDS.get(query)
    if found is not None:
        _DOCUMENT_FIELDS.move_to_end(query)
        return found
    found = _variable_fields(document)
    _DOCUMENT_FIELDS[query] = found
    if len(_DOCUMENT_FIELDS) > DOCUMENT_CACHE_SIZE:
        _DOCUMENT_FIELDS.popitem(last=False)
    return found


def check_operation_text(
    document: Any, variables: dict[str, Any] | None, *, query: str | None = None
) -> None:
    """The kit's text policy over one operation: literals and variable values. `query`, the
    document's text, lets the literal checks of a document already seen be skipped."""
    fields = _cached_variable_fields(query, document)
    for name, value in (variables or {}).items():
        field = fields.get(name, str(name))
        if isinstance(value, str):
            check_text(field, value, rule_for(field))
        else:
            check_value(field, value)


class TextPolicy(SchemaExtension):
    """doorward_kit.text's policy on every argument, before any resolver runs: a NUL or a
    bidirectional control never reaches a service or its database."""

    def on_execute(self):  # type: ignore[no-untyped-def]
        context = self.execution_context
        if context.graphql_document is not None:
            try:
                check_operation_text(
                    context.graphql_document, context.variables, query=context.query
                )
            except DoorwardError as error:
                # A result set here skips execution; DoorwardErrors gives it its code.
                context.result = ExecutionResult(
                    data=None, errors=[GraphQLError(error.message, original_error=error)]
                )
        yield


def schema_extensions() -> list[Any]:
    """Every subgraph's extensions. Parsing and validating a document cost more than running
    most of them, and a subgraph is sent the same few documents (the gateway's cached plans):
    both are cached per document text, bounded (a validation result depends only on the
    document and the schema, so a cached one is the same answer)."""
    return [
        lambda: ParserCache(maxsize=DOCUMENT_CACHE_SIZE),
        lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE),
        DoorwardErrors,
        TextPolicy,
    ]


class SubgraphSchema(strawberry.federation.Schema):
    """strawberry logs every error with the operation's source text, and an operation written
    without variables can carry a password or a contact detail in it: log the code only.

    `_entities` representations are checked before strawberry sees them: it indexes them
    blindly (`representation.pop("__typename")`, `resolve_reference(**representation)`), so a
    representation without a __typename, of an unknown type, with a missing or unknown key, or
    with a non-string key value was an INTERNAL_SERVER_ERROR (found by tests/fuzz).

    A type with a `resolve_references` classmethod gets all of a request's representations of
    it in one call (doorward_kit/entities.py): audit's board batch of 20 work orders was 20
    coroutines, each checking the caller, then 20 more for their trails.

    Execution is graphql-core's with plain leaf fields completed in one loop
    (doorward_kit/execution.py): a board's 400 audit leaf fields were most of audit's execution
    CPU. `execution_context_class=StrawberryGraphQLCoreExecutionContext` turns it off."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("execution_context_class", FastExecutionContext)
        super().__init__(*args, **kwargs)

    # The annotations are strawberry's own: it builds the `_entities` field from them.
    def entities_resolver(
        self, info: Info, representations: list[FederationAny]
    ) -> list[FederationAny]:
        """Types with a `resolve_references` are resolved a batch per type (doorward_kit.
        entities): then the answer is one awaitable for the whole list."""
        results: list[Any] = [None] * len(representations)
        good: list[tuple[int, Any]] = []
        batched: dict[str, list[int]] = {}
        batch_of = self._batch_resolvers
        for index, representation in enumerate(representations):
            problem = self._representation_problem(representation)
            if problem is not None:
                results[index] = bad_input(f"representations[{index}]: {problem}")
            elif (type_name := cast(dict[str, Any], representation)["__typename"]) in batch_of:
                batched.setdefault(type_name, []).append(index)
            else:
                good.append((index, representation))
        if good:
            resolved = super().entities_resolver(info, [r for _, r in good])
            for (index, _), result in zip(good, resolved, strict=True):
                results[index] = result
        if not batched:
            return results
        batches = [(batch_of[name], indexes) for name, indexes in batched.items()]
        # graphql-core awaits what a resolver returns; strawberry's annotation stays the list's.
        answer: Any = resolve_batches(info, results, batches, cast(list[Any], representations))
        return cast(list[FederationAny], answer)

    @functools.cached_property
    def _batch_resolvers(self) -> dict[str, BatchResolver]:
        """The entity types resolved a batch at a time, by name (worked out once per schema)."""
        found: dict[str, BatchResolver] = {}
        entity = self._schema.type_map.get("_Entity")
        for type_name in (t.name for t in getattr(entity, "types", ())):
            origin = self.schema_converter.type_map[type_name].definition.origin  # type: ignore[union-attr]
            resolve = batch_resolver(origin)
            if resolve is not None:
                found[type_name] = resolve
        return found

    def _representation_problem(self, representation: Any) -> str | None:
        if not isinstance(representation, dict):
            return "must be an object"
        type_name = representation.get("__typename")
        keys_of = self._entity_keys
        if not isinstance(type_name, str) or type_name not in keys_of:
            return "__typename must name an entity type of this subgraph"
        keys = set(representation) - {"__typename"}
        if any(not isinstance(representation[k], str) for k in keys):
            return "key values must be strings"
        allowed, required, any_key = keys_of[type_name]
        if any_key:
            allowed = allowed | keys
        if not required <= keys or not keys <= allowed:
            return f"the keys of {type_name} are " + ", ".join(sorted(required or allowed))
        return None

    @functools.cached_property
    def _entity_keys(self) -> dict[str, tuple[frozenset[str], frozenset[str], bool]]:
        """For each entity type: the keys its reference resolver takes, the ones it needs, and
        whether it takes any (**kwargs). Worked out once per schema: a board's `_entities`
        batch asked inspect.signature again for each of its 20 representations."""
        found: dict[str, tuple[frozenset[str], frozenset[str], bool]] = {}
        entity = self._schema.type_map.get("_Entity")
        for type_name in (t.name for t in getattr(entity, "types", ())):
            origin = self.schema_converter.type_map[type_name].definition.origin  # type: ignore[union-attr]
            resolve = getattr(origin, "resolve_reference", None)
            if resolve is not None:
                params = inspect.signature(resolve).parameters
                allowed = frozenset(n for n in params if n != "info")
                required = frozenset(
                    n
                    for n, p in params.items()
                    if n != "info"
                    and p.default is inspect.Parameter.empty
                    and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                )
                any_key = any(p.kind is p.VAR_KEYWORD for p in params.values())
            else:
                fields = self._schema.type_map[type_name].fields  # type: ignore[attr-defined]
                allowed = frozenset(fields)
                required = frozenset(
                    n for n, f in fields.items() if isinstance(f.type, GraphQLNonNull)
                )
                any_key = False
            found[type_name] = (allowed, required, any_key)
        return found

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            original = error.original_error
            if isinstance(original, DoorwardError):
                code = original.code.value
            elif original is not None:
                log.error("resolver failed", exc_info=original)
                code = ErrorCode.INTERNAL.value
            else:
                code = str((error.extensions or {}).get("code", "GRAPHQL_ERROR"))
            log.info("graphql request refused", extra={"fields": {"error.code": code}})


def encode_answer(data: object) -> bytes:
    """A subgraph's JSON answer, encoded by orjson: the standard library's encoder in pure
    Python was a visible share of a subgraph's CPU for a board's 200 audit events."""
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)


ContextFactory = Callable[[Request, str], RequestContext]


class SubgraphRouter(GraphQLRouter[Any, Any]):
    """strawberry's router with the answer encoded by orjson. It keeps its gate and how it
    makes a request's context, for the pure ASGI edge in front of it
    (doorward_kit.subgraph_edge.mount_subgraph), which answers POST the same way."""

    gate: GatewayGate
    new_context: ContextFactory

    def encode_json(self, data: object) -> bytes:
        return encode_answer(data)


def subgraph_router(
    schema: strawberry.federation.Schema,
    *,
    verifier: TokenVerifier,
    services: Any,
    gate: GatewayGate,
    development: bool = False,
) -> GraphQLRouter[Any, Any]:
    """/graphql of a subgraph: POST only, only from the gateway (`gate`), a fresh RequestContext
    per request. No GET, no websocket: the gateway uses neither, and each would be one more
    door to keep shut. GraphiQL only where unsigned GraphQL is allowed (development)."""

    def new_context(request: Request, source_ip: str) -> RequestContext:
        return RequestContext(
            request=request, verifier=verifier, services=services, source_ip=source_ip
        )

    async def context_getter(request: Request) -> RequestContext:
        return new_context(request, client_ip(request))

    router = SubgraphRouter(
        schema,
        context_getter=context_getter,
        graphql_ide="graphiql" if development and gate.allow_unsigned else None,
        allow_queries_via_get=False,
        subscription_protocols=(),
        route_class=_gateway_only(gate),
    )
    router.gate = gate
    router.new_context = new_context
    return router


# ---- Relay connections -------------------------------------------------------------------

NodeT = TypeVar("NodeT")


# Shareable: every subgraph with a connection defines the same PageInfo.
@strawberry.federation.type(shareable=True)
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[NodeT]):
    cursor: str
    node: NodeT


def encode_cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode("|".join(parts).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parts: int) -> list[str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
    except (ValueError, UnicodeDecodeError):
        raise bad_input("after: not a cursor from this API") from None
    if len(values) != parts:
        raise bad_input("after: not a cursor from this API")
    return values


def encode_time_cursor(at: datetime, key: str) -> str:
    """A keyset cursor for lists ordered by (time, id)."""
    return encode_cursor(at.isoformat(), key)


def decode_time_cursor(after: str | None) -> tuple[datetime, str] | None:
    """The (time, id) position of a cursor from encode_time_cursor; None when there is none."""
    if after is None:
        return None
    stamp, key = decode_cursor(after, 2)
    try:
        return datetime.fromisoformat(stamp), key
    except ValueError:
        raise bad_input("after: not a cursor from this API") from None


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE_SIZE
    if first < 0:
        raise bad_input("first must not be negative")
    return min(first, MAX_PAGE_SIZE)


def split_page(rows: Sequence[Any], size: int) -> tuple[list[Any], bool]:
    """Repositories fetch size+1 rows; the extra one only says there is a next page."""
    return list(rows[:size]), len(rows) > size


RowT = TypeVar("RowT")


def connection_page(
    rows: Sequence[RowT],
    size: int,
    cursor: Callable[[RowT], str],
    node: Callable[[RowT], NodeT],
) -> tuple[list[Edge[NodeT]], PageInfo]:
    """The edges and PageInfo of one page, from the size+1 rows a repository fetched."""
    page, has_next = split_page(rows, size)
    edges = [Edge(cursor=cursor(r), node=node(r)) for r in page]
    end_cursor = edges[-1].cursor if edges else None
    return edges, PageInfo(has_next_page=has_next, end_cursor=end_cursor)
