"""Plan execution: parallel subgraph calls, entity batching, merging and result shaping."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import httpx
import orjson
from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationType,
    SelectionNode,
    execute,
    is_abstract_type,
    is_leaf_type,
)
from graphql.execution.values import get_variable_values
from graphql.language import VariableNode
from opentelemetry import propagate, trace

from gateway.planning.builder import Fetch, OutSel
from gateway.planning.plan import (
    ConditionNode,
    FetchNode,
    FlattenNode,
    ParallelNode,
    Plan,
    PlanNode,
    SequenceNode,
)
from gateway.transport import SubgraphTransport
from gateway.upstreams import Upstream

_tracer = trace.get_tracer("doorward.gateway")

# Fields that are forwarded from the client request to every subgraph call; the client address
# is the one the gateway determined (gateway/server.py), never a header the client sent.
FORWARDED_HEADERS = ("authorization", "x-doorward-client-address")


class _Bubble:
    """A null that must propagate to the nearest nullable parent."""


BUBBLE = _Bubble()
NULLED = _Bubble()  # a null whose error is already recorded: propagates no further
Path = tuple[str | int, ...]


def deep_merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for k, v in other.items():
        mine = into.get(k)
        if isinstance(mine, dict) and isinstance(v, dict):
            deep_merge(mine, v)
        elif isinstance(mine, list) and isinstance(v, list) and len(mine) == len(v):
            for i, (a, b) in enumerate(zip(mine, v, strict=True)):
                if isinstance(a, dict) and isinstance(b, dict):
                    deep_merge(a, b)
                else:
                    mine[i] = b
        else:
            into[k] = v


def collect_targets(data: Any, path: tuple[str, ...], prefix: Path = ()
                    ) -> list[tuple[dict[str, Any], Path]]:
    """The objects at `path` (lists flattened), each with its response path, in document
    order: one level of the path at a time (no call per step of the walk)."""
    level = _objects_in(data, prefix, [])
    for key in path:
        found: list[tuple[dict[str, Any], Path]] = []
        for obj, at in level:
            if key in obj:
                _objects_in(obj[key], (*at, key), found)
        level = found
    return level


def _objects_in(value: Any, at: Path, out: list[tuple[dict[str, Any], Path]]
                ) -> list[tuple[dict[str, Any], Path]]:
    """The objects `value` is or holds (lists, and lists of lists, flattened), appended to
    `out` with their paths; nulls and leaves hold none."""
    if isinstance(value, dict):
        out.append((value, at))
    elif isinstance(value, list):
        for n, v in enumerate(value):
            _objects_in(v, (*at, n), out)
    return out


def collect_targets_in_context(data: Any, path: tuple[str, ...]
                               ) -> list[tuple[dict[str, Any], Path, list[Any]]]:
    """The objects at `path`, each with its enclosing objects by depth (0: the root data)."""
    out: list[tuple[dict[str, Any], Path, list[Any]]] = []

    def walk(value: Any, i: int, at: Path, chain: list[Any]) -> None:
        if value is None:
            return
        if isinstance(value, list):
            for n, v in enumerate(value):
                walk(v, i, (*at, n), chain)
            return
        if not isinstance(value, dict):
            return
        here = [*chain, value]
        if i == len(path):
            out.append((value, at, here))
            return
        if path[i] in value:
            walk(value[path[i]], i + 1, (*at, path[i]), here)

    walk(data, 0, (), [])
    return out


def _context_value(chain: list[Any], sources: list[Any]) -> Any:
    """The nearest enclosing object that sets the context, read along its selection; null
    when none does."""
    for depth in range(len(chain) - 1, -1, -1):
        obj = chain[depth]
        for src in sources:
            if src.depth != depth:
                continue
            if depth and obj.get("__typename") not in src.types:
                continue
            return _single_value(obj, src.sel)
    return None


def _single_value(obj: Any, sel: OutSel) -> Any:
    """The value at the end of a one-field-per-level selection."""
    if isinstance(obj, list):
        return [_single_value(o, sel) for o in obj]
    if not isinstance(obj, dict):
        return None
    fields = [(k, f) for k, f in sel.fields.items() if k != "__typename"]
    for cond, fsel in sel.fragments.items():
        if obj.get("__typename") == cond:
            fields += [(k, f) for k, f in fsel.fields.items() if k != "__typename"]
    if not fields:
        return None
    key, f = fields[0]
    value = obj.get(f.source or key)
    if f.sub is None or value is None:
        return value
    return _single_value(value, f.sub)


def project(obj: Any, sel: OutSel) -> Any:
    """The part of `obj` named by `sel` (builds `_entities` representations)."""
    if isinstance(obj, list):
        return [project(o, sel) for o in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for key, f in sel.fields.items():
        src = f.source or key
        if src not in obj:
            raise KeyError(src)
        v = obj[src]
        out[key] = project(v, f.sub) if f.sub is not None and v is not None else v
    typename = obj.get("__typename")
    for cond, fsel in sel.fragments.items():
        if typename == cond:
            out.update(project(obj, fsel))
    return out


_NESTED = object()  # a representation with nested selections: `project` builds it


def _rep_shape(rep: OutSel, keys: OutSel) -> Any:
    """How to build representations of one type, decided once per fetch: for a flat selection
    (the usual `__typename id`), the (response key, source key) pairs and the key fields among
    them; `project` and its copy of the key part would give the same dict and the same null
    check. Anything nested or with type conditions: _NESTED (the general path)."""
    if rep.fragments or keys.fragments:
        return _NESTED
    if any(f.sub is not None for f in (*rep.fields.values(), *keys.fields.values())):
        return _NESTED
    pairs = tuple((key, f.source or key) for key, f in rep.fields.items())
    key_pairs = tuple((key, f.source or key) for key, f in keys.fields.items())
    if not set(key_pairs) <= set(pairs):
        return _NESTED
    return pairs, tuple(key for key, _ in key_pairs)


def _has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return False


def _error(message: str, code: str, path: Path | None = None, **ext: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message}
    if path is not None:
        err["path"] = list(path)
    err["extensions"] = {"code": code, **ext}
    return err


class Executor:
    def __init__(self, urls: Mapping[str, str], schema: GraphQLSchema,
                 client: httpx.AsyncClient, timeout: float = 5.0,
                 transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
                 tracer: trace.Tracer | None = None,
                 upstreams: Mapping[str, Upstream] | None = None) -> None:
        self.urls = dict(urls)
        # Subgraphs with replicas: balanced, health-checked, reads retried (gateway/upstreams).
        self.upstreams = dict(upstreams or {})
        self.tracer = tracer or _tracer
        self._parsed_urls = {k: httpx.URL(v) for k, v in urls.items()}
        self.schema = schema
        self.client = client
        self.timeout = timeout
        # The client's own transports (one connection pool per subgraph, mounted on the client):
        # calling them directly skips the client's per-request cookie, auth and redirect
        # machinery, which subgraph calls never use. Small per-subgraph pools also keep
        # httpcore's per-request scan of its connections short.
        self.transports = dict(transports or {})
        self._timeouts = httpx.Timeout(timeout).as_dict()

    async def execute(self, plan: Plan, variables: Mapping[str, Any],
                      headers: Mapping[str, str]) -> dict[str, Any]:
        coerced: Mapping[str, Any] = variables
        if plan.operation.variable_definitions:
            result = get_variable_values(self.schema, plan.operation.variable_definitions,
                                         dict(variables))
            if isinstance(result, list):
                raise VariablesInvalid(result)
            coerced = result
        data: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        fwd = {h: headers[h] for h in FORWARDED_HEADERS if h in headers}
        # A mutation's root fetch is never retried on another replica; reads are.
        retry_roots = plan.operation.operation is not OperationType.MUTATION
        await self._run(plan.node, data, variables, coerced, fwd, errors, retry_roots)
        if plan.introspection is not None:
            intro = execute(self.schema, plan.introspection, variable_values=dict(variables),
                            operation_name=plan.operation.name.value if plan.operation.name
                            else None, root_value=_IntrospectionOnly())
            intro_data = intro.data or {}  # type: ignore[union-attr]
            for k in plan.extra.get("introspection_keys", ()):
                data[k] = intro_data.get(k)
        shaped, completion, refused = shape(self.schema, plan, data, coerced)
        errors.extend(refused)
        response: dict[str, Any] = {}
        if errors:
            response["errors"] = errors
        response["data"] = shaped
        if completion and not errors:
            # Like Apollo: post-processing null errors go to extensions, not errors.
            response["extensions"] = {"valueCompletion": completion}
        return response

    async def _run(self, node: PlanNode | None, data: dict[str, Any],
                   variables: Mapping[str, Any], coerced: Mapping[str, Any],
                   headers: dict[str, str], errors: list[dict[str, Any]],
                   retry_roots: bool = True) -> None:
        """Follow the typed plan: a node starts when the node before it in its sequence ends."""
        if node is None:
            return
        if isinstance(node, SequenceNode):
            for n in node.nodes:
                await self._run(n, data, variables, coerced, headers, errors, retry_roots)
        elif isinstance(node, ParallelNode):
            await asyncio.gather(*(self._run(n, data, variables, coerced, headers, errors,
                                             retry_roots)
                                   for n in node.nodes))
        elif isinstance(node, FlattenNode):
            await self._run(node.node, data, variables, coerced, headers, errors, retry_roots)
        elif isinstance(node, ConditionNode):
            branch = node.if_clause if coerced.get(node.variable) else node.else_clause
            await self._run(branch, data, variables, coerced, headers, errors, retry_roots)
        else:
            errors.extend(await self._run_batch(node, data, variables, headers,
                                                retry_roots or node.is_entity))

    async def _run_batch(self, batch: FetchNode, data: dict[str, Any], variables: Mapping[str, Any],
                         headers: dict[str, str], retry: bool = True) -> list[dict[str, Any]]:
        sub_vars = {v: variables[v] for v in batch.variables if v in variables}
        targets: list[list[list[tuple[dict[str, Any], Path]]]] = []
        query = batch.query
        units: list[Fetch] = []  # the fetch answered by each aliased `_entities` (`_<n>`)
        if batch.has_contexts:
            query, units, targets = self._context_units(batch, data, sub_vars)
            if not units:
                return []
        elif batch.is_entity:
            for f in batch.fetches:
                reps, rep_targets = self._representations(f, data)
                sub_vars[f"r{f.index}"] = reps
                targets.append(rep_targets)
                units.append(f)
            if not any(sub_vars[f"r{f.index}"] for f in batch.fetches):
                return []
        try:
            body = await self._post(batch.graph, query, sub_vars, headers, retry)
        except Exception:  # timeouts, refused connections, broken responses
            return self._unavailable(batch, targets, units)
        errors: list[dict[str, Any]] = []
        result = body.get("data")
        if batch.is_entity:
            if isinstance(result, dict):
                for n, rep_targets in enumerate(targets):
                    entities = result.get(f"_{n}") or []
                    for j, entity in enumerate(entities):
                        if isinstance(entity, dict) and j < len(rep_targets):
                            if not isinstance(self.schema.get_type(
                                    entity.get("__typename") or ""), GraphQLObjectType):
                                # An @interfaceObject answers with the interface's name: the
                                # object keeps its own runtime type.
                                entity = {k: v for k, v in entity.items() if k != "__typename"}
                            for obj, _ in rep_targets[j]:
                                deep_merge(obj, entity)
        elif isinstance(result, dict):
            deep_merge(data, result)
        for err in body.get("errors") or ():
            errors.append(self._reroot(err, batch, targets))
        return errors

    def _context_units(self, batch: FetchNode, data: dict[str, Any], sub_vars: dict[str, Any]
                       ) -> tuple[str, list[Fetch], list[list[list[tuple[dict[str, Any], Path]]]]]:
        """An entity batch with @fromContext arguments: the objects of each fetch grouped by
        their context values, one aliased `_entities` per group (as Apollo Router does), the
        query written for this request."""
        defs = list(batch.var_defs)
        parts: list[str] = []
        units: list[Fetch] = []
        targets: list[list[list[tuple[dict[str, Any], Path]]]] = []
        for f, body in zip(batch.fetches, batch.bodies, strict=True):
            groups: dict[bytes, tuple[tuple[Any, ...], list[tuple[dict[str, Any], Path]]]] = {}
            for obj, at, chain in collect_targets_in_context(data, f.path):
                values = tuple(_context_value(chain, c.sources) for c in f.contexts)
                key = orjson.dumps(values)
                groups.setdefault(key, (values, []))[1].append((obj, at))
            for values, objs in groups.values():
                reps, rep_targets = self._representations(f, data, objs)
                if not reps:
                    continue
                n = len(units)
                units.append(f)
                targets.append(rep_targets)
                sub_vars[f"r{n}"] = reps
                defs.append(f"$r{n}:[_Any!]!")
                text = body
                for c, value in zip(f.contexts, values, strict=True):
                    name = f"{c.variable}_{n}"
                    sub_vars[name] = value
                    defs.append(f"${name}:{c.type}")
                    text = re.sub(rf"\${c.variable}(?![_0-9A-Za-z])", f"${name}", text)
                parts.append(f"_{n}:_entities(representations:$r{n}){{__typename {text}}}")
        query = "query(" + ",".join(defs) + "){" + " ".join(parts) + "}"
        return query, units, targets

    def _representations(self, f: Fetch, data: dict[str, Any],
                         objects: list[tuple[dict[str, Any], Path]] | None = None
                         ) -> tuple[list[Any], list[list[tuple[dict[str, Any], Path]]]]:
        reps: list[Any] = []
        rep_targets: list[list[tuple[dict[str, Any], Path]]] = []
        index: dict[bytes, int] = {}
        for obj, at in collect_targets(data, f.path) if objects is None else objects:
            typename = obj.get("__typename")
            sel = f.reps.get(typename)  # type: ignore[arg-type]
            if sel is None:
                continue
            flat = f.rep_shapes.get(typename)  # type: ignore[arg-type]
            if flat is None:
                flat = f.rep_shapes[typename] = _rep_shape(sel, f.keys[typename])  # type: ignore[index]
            try:
                if flat is not _NESTED:
                    pairs, key_names = flat
                    rep = {key: obj[src] for key, src in pairs}
                    if any(_has_null(rep[key]) for key in key_names):
                        continue
                else:
                    rep = project(obj, sel)
                    if _has_null(project(obj, f.keys[typename])):  # type: ignore[index]
                        continue  # a null key identifies nothing: never sent to _entities
            except KeyError:
                continue  # a key field is missing (null parent): nothing to fetch
            renamed = f.rep_typename.get(typename)  # type: ignore[arg-type]
            if renamed is not None:
                rep["__typename"] = renamed
            k = orjson.dumps(rep)
            n = index.get(k)
            if n is None:
                index[k] = n = len(reps)
                reps.append(rep)
                rep_targets.append([])
            rep_targets[n].append((obj, at))
        return reps, rep_targets

    async def _post(self, graph: str, query: str, variables: dict[str, Any],
                    headers: dict[str, str], retry: bool = True) -> dict[str, Any]:
        with self.tracer.start_as_current_span(f"gateway.fetch {graph}",
                                          attributes={"graphql.subgraph": graph}):
            out_headers = {"content-type": "application/json", "accept": "application/json",
                           **headers}
            propagate.inject(out_headers)
            payload = orjson.dumps({"query": query, "variables": variables})
            async with asyncio.timeout(self.timeout):
                transport = self.transports.get(graph)
                upstream = self.upstreams.get(graph)
                if upstream is not None:
                    content = await upstream.post(payload, out_headers, self._timeouts,
                                                  retry=retry)
                elif isinstance(transport, SubgraphTransport):
                    # The gateway's own lean connections (gateway/transport.py).
                    _, content = await transport.post(self._parsed_urls[graph], payload,
                                                      out_headers)
                elif transport is None:
                    resp = await self.client.post(self.urls[graph], content=payload,
                                                  headers=out_headers)
                    content = resp.content
                else:
                    request = httpx.Request("POST", self._parsed_urls[graph], content=payload,
                                            headers=out_headers,
                                            extensions={"timeout": self._timeouts})
                    resp = await transport.handle_async_request(request)
                    try:
                        content = await resp.aread()
                    finally:
                        await resp.aclose()
            body = orjson.loads(content)
            if not isinstance(body, dict) or ("data" not in body and "errors" not in body):
                raise ValueError(f"bad response from {graph}")
            return body

    def _unavailable(self, batch: FetchNode, targets: list[list[list[tuple[dict[str, Any], Path]]]],
                     units: list[Fetch]) -> list[dict[str, Any]]:
        msg = f'Subgraph "{batch.graph}" is unavailable.'
        if not batch.is_entity:
            return [_error(msg, "UNAVAILABLE", (k,), serviceName=batch.graph)
                    for k in batch.fetches[0].root_fields]
        out = []
        for f, rep_targets in zip(units, targets, strict=True):
            if not rep_targets:
                continue
            first_field = next((k for sel in f.out.fragments.values() for k in sel.fields
                                if k != "__typename"), None)
            at = rep_targets[0][0][1]
            out.append(_error(msg, "UNAVAILABLE",
                              (*at, first_field) if first_field else at, serviceName=batch.graph))
        return out

    def _reroot(self, err: Any, batch: FetchNode,
                targets: list[list[list[tuple[dict[str, Any], Path]]]]) -> dict[str, Any]:
        if not isinstance(err, dict):
            err = {"message": str(err)}
        out: dict[str, Any] = {"message": err.get("message") or
                               f'Error while fetching subquery from service "{batch.graph}"'}
        path = err.get("path")
        if isinstance(path, list) and path:
            if batch.is_entity and isinstance(path[0], str) and path[0].startswith("_") \
                    and len(path) > 1 and isinstance(path[1], int):
                try:
                    fi = int(path[0][1:])
                    rep_targets = targets[fi]
                    out["path"] = [*rep_targets[path[1]][0][1], *path[2:]]
                except (ValueError, IndexError):
                    pass
            elif not batch.is_entity:
                out["path"] = path
        ext = dict(err.get("extensions") or {})
        ext.setdefault("code", "DOWNSTREAM_SERVICE_ERROR")
        ext["serviceName"] = batch.graph
        ext.pop("exception", None)  # never leak a subgraph's stack trace
        ext.pop("stacktrace", None)
        out["extensions"] = ext
        return out


class _IntrospectionOnly:
    """Root value for local introspection: every non-introspection field resolves to null."""


class VariablesInvalid(Exception):
    def __init__(self, errors: list[GraphQLError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


# ---------------------------------------------------------------------------------------------
# Result shaping: the merged subgraph data -> exactly what the operation asked, null-propagated


class _Shaper:
    def __init__(self, schema: GraphQLSchema, plan: Plan, variables: Mapping[str, Any]) -> None:
        self.schema = schema
        self.fragments = plan.fragments
        self.variables = variables
        self.errors: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []  # fields the caller may not see
        self.denied: frozenset[int] = plan.extra.get("denied", frozenset())
        # Keyed by the identity of selection tuples that the cache itself keeps alive; shared
        # across requests when the operation has no @include/@skip (results cannot vary).
        cache = plan.extra.get("shape_cache")
        self.cache: dict[tuple[int, str], list[_FieldPlan]]
        self.cache = cache if cache is not None else {}

    def _skip(self, node: Any) -> bool:
        for d in node.directives or ():
            name = d.name.value
            if name not in ("include", "skip"):
                continue
            arg = d.arguments[0].value
            val = self.variables.get(arg.name.value) if isinstance(arg, VariableNode) \
                else getattr(arg, "value", False)
            if (name == "skip" and val) or (name == "include" and not val):
                return True
        return False

    def _applies(self, cond: str | None, type_name: str) -> bool:
        if cond is None or cond == type_name:
            return True
        ct = self.schema.get_type(cond)
        ot = self.schema.get_type(type_name)
        return ct is not None and ot is not None and is_abstract_type(ct) and \
            self.schema.is_sub_type(ct, ot)  # type: ignore[arg-type]

    def fields(self, sels: tuple[SelectionNode, ...], type_: GraphQLObjectType
               ) -> list[_FieldPlan]:
        """What to do for each response key of `sels` on `type_`, worked out once per selection
        and type (and, without @include/@skip, once per operation across requests)."""
        key = (id(sels), type_.name)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        grouped: dict[str, tuple[FieldNode, list[SelectionNode]]] = {}
        self._collect(sels, type_.name, grouped)
        out: list[_FieldPlan] = []
        for k, (f, subs) in grouped.items():
            fname = f.name.value
            fdef = None if fname == "__typename" else type_.fields.get(fname)
            ftype = fdef.type if fdef is not None else None
            out.append(_field_plan(k, f, tuple(subs), fname, ftype))
        self.cache[key] = out
        return out

    def _collect(self, sels: tuple[SelectionNode, ...], type_name: str,
                 grouped: dict[str, tuple[FieldNode, list[SelectionNode]]]) -> None:
        for s in sels:
            if self._skip(s):
                continue
            if isinstance(s, FieldNode):
                k = s.alias.value if s.alias else s.name.value
                entry = grouped.get(k)
                if entry is None:
                    entry = grouped[k] = (s, [])
                if s.selection_set is not None:
                    entry[1].extend(s.selection_set.selections)
            elif isinstance(s, InlineFragmentNode):
                cond = s.type_condition.name.value if s.type_condition else None
                if self._applies(cond, type_name):
                    self._collect(s.selection_set.selections, type_name, grouped)
            elif isinstance(s, FragmentSpreadNode):
                frag = self.fragments.get(s.name.value)
                if frag is not None and self._applies(frag.type_condition.name.value, type_name):
                    self._collect(frag.selection_set.selections, type_name, grouped)

    def obj(self, value: dict[str, Any], type_: GraphQLObjectType,
            sels: tuple[SelectionNode, ...], path: _Path) -> dict[str, Any] | _Bubble:
        out: dict[str, Any] = {}
        bubble = False
        denied = self.denied
        for fp in self.fields(sels, type_):
            key = fp.key
            if fp.ftype is None:
                # __typename, or __schema / __type resolved locally
                out[key] = type_.name if fp.fname == "__typename" else value.get(key)
                continue
            if denied and id(fp.node) in denied:
                self.refused.append({"message": "Unauthorized field or type",
                                     "path": [*_flat(path), key],
                                     "extensions": {"code": "UNAUTHORIZED_FIELD_OR_TYPE"}})
                out[key] = None
                if isinstance(fp.ftype, GraphQLNonNull):
                    bubble = True
                continue
            v = value.get(key)
            kind = fp.kind
            if kind is _LEAF:
                if v is not None and fp.check(v):  # type: ignore[misc]
                    out[key] = v  # a valid leaf (most of an answer): nothing more to do
                    continue
            elif kind is _OBJECT:
                # An object of a known type (not a union or interface), as `value` would
                # complete it, minus the calls that only unwrap the type again.
                if isinstance(v, dict):
                    r = self.obj(v, fp.inner, fp.subs, (path, key))
                    if r is BUBBLE:
                        bubble = bubble or fp.non_null
                        out[key] = None
                    else:
                        out[key] = r
                    continue
            elif kind is _OBJECTS:
                if isinstance(v, list):
                    items = self._objects(v, fp, (path, key), type_.name)
                    if items is NULLED:
                        bubble = bubble or fp.non_null
                        out[key] = None
                    else:
                        out[key] = items
                    continue
            elif kind is _LEAVES and isinstance(v, list):
                check = fp.check
                for item in v:
                    if item is None or not check(item):  # type: ignore[misc]
                        break
                else:
                    out[key] = list(v)  # every item a valid leaf: the list as it came
                    continue
            r = self.value(v, fp.ftype, fp.subs, (path, key), type_.name, fp.fname)
            if r is BUBBLE:
                bubble = True
                out[key] = None
            elif r is NULLED:
                out[key] = None
            else:
                out[key] = r
        return BUBBLE if bubble else out

    def _objects(self, items: list[Any], fp: _FieldPlan, path: _Path, parent: str
                 ) -> list[Any] | _Bubble:
        """A list of objects of a known type, item by item as `value` completes a list: an
        item that bubbles nulls a non-null item's list (NULLED), a nullable item is null."""
        out: list[Any] = []
        otype, subs, item_non_null = fp.inner, fp.subs, fp.item_non_null
        r: Any
        for i, item in enumerate(items):
            if isinstance(item, dict):
                r = self.obj(item, otype, subs, (path, i))
                if r is BUBBLE:
                    if item_non_null:
                        return NULLED
                    r = None
            else:  # null or not an object: the general path (its errors, its bubbling)
                r = self.value(item, fp.item_type, subs, (path, i), parent, fp.fname)
                if r is BUBBLE:
                    return NULLED
                if r is NULLED:
                    r = None
            out.append(r)
        return out

    def value(self, value: Any, type_: Any, sels: tuple[SelectionNode, ...], path: _Path,
              parent: str, fname: str) -> Any:
        if isinstance(type_, GraphQLNonNull):
            r = self.value(value, type_.of_type, sels, path, parent, fname)
            if r is None:
                self.errors.append({"message": f"Cannot return null for non-nullable field "
                                    f"{parent}.{fname}.", "path": _flat(path),
                                    "extensions": {"code": "INVALID_GRAPHQL"}})
                return BUBBLE
            if r is BUBBLE or r is NULLED:
                return BUBBLE
            return r
        if value is None:
            return None
        if isinstance(type_, GraphQLList):
            if not isinstance(value, list):
                return None
            items = []
            for i, v in enumerate(value):
                r = self.value(v, type_.of_type, sels, (path, i), parent, fname)
                if r is BUBBLE:
                    return NULLED  # nullable list: the list itself becomes null
                items.append(None if r is NULLED else r)
            return items
        if is_leaf_type(type_):
            if _valid_leaf(type_, value):
                return value
            # Like Apollo: never pass on a value the API schema cannot have (an @inaccessible
            # enum value, a string for an Int); it becomes null with a completion error.
            self.errors.append({"message": f"Invalid value found for field {parent}.{fname}.",
                                "path": _flat(path), "extensions": {"code": "INVALID_GRAPHQL"}})
            return NULLED
        if not isinstance(value, dict):
            return None
        if is_abstract_type(type_):
            rt = self.schema.get_type(value.get("__typename") or "")
            if rt is type_ and isinstance(rt, GraphQLInterfaceType):
                # From an @interfaceObject, with no runtime type asked for: the interface's
                # own fields are all the selection can name.
                type_ = rt
            elif not isinstance(rt, GraphQLObjectType):
                return None  # unknown or @inaccessible runtime type
            else:
                type_ = rt
        r = self.obj(value, type_, sels, path)
        return NULLED if r is BUBBLE else r


# A response path as links (parent link, key), root None: made as cheaply as a pair per field,
# and spelled out as a list only for an error.
_Path = tuple[Any, str | int] | None


def _flat(path: _Path) -> list[str | int]:
    out: list[str | int] = []
    while path is not None:
        path, key = path
        out.append(key)
    out.reverse()
    return out


class _Kind:
    """How the shaper completes a field when its value has the expected shape (anything else,
    and every other type, takes the general path, `_Shaper.value`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_OTHER = _Kind("other")
_LEAF = _Kind("leaf")  # a scalar or enum, nullable or not
_OBJECT = _Kind("object")  # an object type, nullable or not
_OBJECTS = _Kind("objects")  # a list (nullable or not) of an object type (nullable or not)
_LEAVES = _Kind("leaves")  # a list (nullable or not) of a scalar or enum (nullable or not)


class _FieldPlan(NamedTuple):
    """One response key of a selection on an object type, as the shaper needs it."""

    key: str
    node: FieldNode
    subs: tuple[SelectionNode, ...]
    fname: str
    ftype: Any  # the field's type; None for __typename and local introspection
    kind: _Kind
    check: Callable[[Any], bool] | None  # _LEAF, _LEAVES: the leaf type's check
    inner: Any  # _OBJECT, _OBJECTS: the object type
    non_null: bool  # the field's type is non-null
    item_type: Any  # _OBJECTS, _LEAVES: the list's item type (as declared)
    item_non_null: bool  # _OBJECTS, _LEAVES: the items are non-null


def _field_plan(key: str, node: FieldNode, subs: tuple[SelectionNode, ...], fname: str,
                ftype: Any) -> _FieldPlan:
    non_null = isinstance(ftype, GraphQLNonNull)
    named = ftype.of_type if non_null else ftype
    kind, check, inner, item_type, item_non_null = _OTHER, None, None, None, False
    if named is not None and is_leaf_type(named):
        kind, check = _LEAF, _leaf_check(named)
    elif isinstance(named, GraphQLObjectType):
        kind, inner = _OBJECT, named
    elif isinstance(named, GraphQLList):
        item_type = named.of_type
        item_non_null = isinstance(item_type, GraphQLNonNull)
        item = item_type.of_type if item_non_null else item_type
        if isinstance(item, GraphQLObjectType):
            kind, inner = _OBJECTS, item
        elif is_leaf_type(item):
            kind, check = _LEAVES, _leaf_check(item)
    return _FieldPlan(key, node, subs, fname, ftype, kind, check, inner, non_null, item_type,
                      item_non_null)


def _leaf_check(type_: Any) -> Callable[[Any], bool]:
    """`_valid_leaf` for one type, decided once (the same answers, tests/unit/gateway)."""
    if isinstance(type_, GraphQLEnumType):
        values = type_.values
        return lambda v: isinstance(v, str) and v in values
    name = type_.name
    if name == "String":
        return lambda v: isinstance(v, str)
    if name == "Boolean":
        return lambda v: isinstance(v, bool)
    return functools.partial(_valid_leaf, type_)


def _valid_leaf(type_: Any, value: Any) -> bool:
    if isinstance(type_, GraphQLEnumType):
        return isinstance(value, str) and value in type_.values
    name = type_.name
    if name == "String":
        return isinstance(value, str)
    if name == "Int":
        return isinstance(value, int) and not isinstance(value, bool) and \
            -(2**31) <= value < 2**31
    if name == "Float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "Boolean":
        return isinstance(value, bool)
    if name == "ID":
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    return True  # custom scalars: the subgraph owns their format


def shape(schema: GraphQLSchema, plan: Plan, data: dict[str, Any], variables: Mapping[str, Any]
          ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
    shaper = _Shaper(schema, plan, variables)
    root = schema.get_root_type(plan.operation.operation)
    assert root is not None
    sels: tuple[SelectionNode, ...] = plan.operation.selection_set.selections
    r = shaper.obj(data, root, sels, None)
    # A nullable child that bubbled already set itself to null; a bubble at the root nulls data.
    return (None if r is BUBBLE else r), shaper.errors, shaper.refused  # type: ignore[return-value]


__all__ = ["Executor", "VariablesInvalid", "collect_targets", "deep_merge", "project", "shape"]
