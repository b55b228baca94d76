"""Federation v2 composition: subgraph SDLs -> supergraph SDL (join v0.3) -> runtime model.

Both start-up paths (compose from live subgraphs, or read a supergraph file) end in
`Supergraph.from_sdl`, so the runtime model is always built from the supergraph SDL text.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DirectiveNode,
    DocumentNode,
    EnumTypeDefinitionNode,
    EnumTypeExtensionNode,
    FieldDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    InputObjectTypeDefinitionNode,
    InputObjectTypeExtensionNode,
    InputValueDefinitionNode,
    InterfaceTypeDefinitionNode,
    InterfaceTypeExtensionNode,
    ListTypeNode,
    NamedTypeNode,
    NameNode,
    NonNullTypeNode,
    ObjectTypeDefinitionNode,
    ObjectTypeExtensionNode,
    OperationType,
    ScalarTypeDefinitionNode,
    ScalarTypeExtensionNode,
    SchemaDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    TypeNode,
    UnionTypeDefinitionNode,
    UnionTypeExtensionNode,
    build_ast_schema,
    parse,
    print_ast,
    validate_schema,
)
from graphql.language import (
    DirectiveDefinitionNode,
    FieldNode,
    TypeDefinitionNode,
    TypeExtensionNode,
)

from gateway import contexts
from gateway.sdl import KIND as _KIND
from gateway.sdl import ROOT_KINDS, ROOT_NAMES, CompositionError, parse_field_set
from gateway.sdl import bool_arg as _bool_arg
from gateway.sdl import directives as _directives
from gateway.sdl import fed_name as _fed_name
from gateway.sdl import named_type as _named
from gateway.sdl import str_arg as _str_arg
from gateway.supergraph import (
    Access,
    Supergraph,
    access_directives,
    access_of,
    merge_access,
)

JOIN_URL = "https://specs.apollo.dev/join/v0.3"
# join v0.4 adds `overrideLabel` (progressive @override) and @join__directive.
JOIN_URL_LABELS = "https://specs.apollo.dev/join/v0.4"
JOIN_V04_EXTRA = ("directive @join__directive(graphs: [join__Graph!], name: String!, args: "
                  "join__DirectiveArguments) repeatable on SCHEMA | OBJECT | INTERFACE | "
                  "FIELD_DEFINITION\n\nscalar join__DirectiveArguments\n\n")

# Federation internals a subgraph exposes that never reach the supergraph.
FED_TYPES = {"_Any", "_Entity", "_Service", "FieldSet", "_FieldSet", "link__Import",
             "link__Purpose", "federation__FieldSet", "federation__Scope", "federation__Policy",
             "federation__ContextFieldValue"}
FED_ROOT_FIELDS = {"_entities", "_service"}

# Directive definitions used to validate a subgraph SDL with graphql-core. Unknown custom
# directives are stripped before validation: composition does not carry them (no @composeDirective).
FED_PRELUDE = """
scalar FieldSet
scalar link__Import
scalar _Any
scalar federation__Scope
scalar federation__Policy
scalar federation__ContextFieldValue
enum link__Purpose { SECURITY EXECUTION }
type _Service { sdl: String }
directive @key(fields: FieldSet!, resolvable: Boolean = true) repeatable on OBJECT | INTERFACE
directive @requires(fields: FieldSet!) on FIELD_DEFINITION
directive @provides(fields: FieldSet!) on FIELD_DEFINITION
directive @external(reason: String) on OBJECT | FIELD_DEFINITION
directive @shareable repeatable on OBJECT | FIELD_DEFINITION
directive @inaccessible on FIELD_DEFINITION | OBJECT | INTERFACE | UNION | ARGUMENT_DEFINITION \
| SCALAR | ENUM | ENUM_VALUE | INPUT_OBJECT | INPUT_FIELD_DEFINITION
directive @override(from: String!, label: String) on FIELD_DEFINITION
directive @tag(name: String!) repeatable on FIELD_DEFINITION | OBJECT | INTERFACE | UNION \
| ARGUMENT_DEFINITION | SCALAR | ENUM | ENUM_VALUE | INPUT_OBJECT | INPUT_FIELD_DEFINITION | SCHEMA
directive @extends on OBJECT | INTERFACE
directive @link(url: String, as: String, for: link__Purpose, import: [link__Import]) \
repeatable on SCHEMA
directive @composeDirective(name: String!) repeatable on SCHEMA
directive @interfaceObject on OBJECT
directive @context(name: String!) repeatable on INTERFACE | OBJECT | UNION
directive @fromContext(field: federation__ContextFieldValue) on ARGUMENT_DEFINITION
directive @authenticated on FIELD_DEFINITION | OBJECT | INTERFACE | SCALAR | ENUM
directive @requiresScopes(scopes: [[federation__Scope!]!]!) on FIELD_DEFINITION | OBJECT \
| INTERFACE | SCALAR | ENUM
directive @policy(policies: [[federation__Policy!]!]!) on FIELD_DEFINITION | OBJECT \
| INTERFACE | SCALAR | ENUM
"""
_PRELUDE_DOC = parse(FED_PRELUDE, no_location=True)
ACCESS_DEFINITIONS = {
    "authenticated": "directive @authenticated on FIELD_DEFINITION | OBJECT | INTERFACE | SCALAR "
                     "| ENUM\n\n",
    "requiresScopes": "directive @requiresScopes(scopes: [[requiresScopes__Scope!]!]!) on "
                      "FIELD_DEFINITION | OBJECT | INTERFACE | SCALAR | ENUM\n\n"
                      "scalar requiresScopes__Scope\n\n",
    "policy": "directive @policy(policies: [[policy__Policy!]!]!) on FIELD_DEFINITION | OBJECT "
              "| INTERFACE | SCALAR | ENUM\n\nscalar policy__Policy\n\n",
}
_QUERY_PLACEHOLDER = parse("type Query { _service: _Service }", no_location=True)
_PRELUDE_NAMES = {d.name.value for d in _PRELUDE_DOC.definitions if hasattr(d, "name")}


# ---------------------------------------------------------------------------------------------
# Subgraph model (input of composition)


@dataclass
class SubField:
    node: FieldDefinitionNode | InputValueDefinitionNode
    external: bool = False
    shareable: bool = False
    inaccessible: bool = False
    requires: str | None = None
    provides: str | None = None
    override: str | None = None
    override_label: str | None = None  # progressive @override(label:)
    access: Access = field(default_factory=Access)


@dataclass
class SubType:
    name: str
    kind: str  # object | interface | union | enum | input | scalar
    description: StringValueNode | None = None
    fields: dict[str, SubField] = field(default_factory=dict)
    keys: list[tuple[str, bool]] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    values: dict[str, bool] = field(default_factory=dict)  # enum value -> inaccessible
    value_nodes: dict[str, Any] = field(default_factory=dict)
    inaccessible: bool = False
    extension: bool = False
    access: Access = field(default_factory=Access)
    interface_object: bool = False
    contexts: list[str] = field(default_factory=list)  # @context names set on this type


@dataclass
class Subgraph:
    name: str
    url: str
    types: dict[str, SubType]
    roots: dict[str, str]  # operation kind -> type name in this subgraph


_DEF_OF = {
    ObjectTypeExtensionNode: ObjectTypeDefinitionNode,
    InterfaceTypeExtensionNode: InterfaceTypeDefinitionNode,
    UnionTypeExtensionNode: UnionTypeDefinitionNode,
    EnumTypeExtensionNode: EnumTypeDefinitionNode,
    InputObjectTypeExtensionNode: InputObjectTypeDefinitionNode,
    ScalarTypeExtensionNode: ScalarTypeDefinitionNode,
}


def _strip_unknown_directives(node: Any, known: set[str]) -> Any:
    """A copy of a definition node without directives graphql-core would not know."""
    if not hasattr(node, "directives") or node.directives is None:
        return node
    node = copy.copy(node)
    node.directives = tuple(d for d in node.directives if d.name.value in known)
    for attr in ("fields", "values", "arguments"):
        children = getattr(node, attr, None)
        if children:
            setattr(node, attr, tuple(_strip_unknown_directives(c, known) for c in children))
    return node


def _rename_fed(node: Any) -> Any:
    """`@federation__key` -> `@key` so one prelude validates both spellings."""
    if getattr(node, "directives", None):
        node = copy.copy(node)
        node.directives = tuple(
            DirectiveNode(name=NameNode(value=_fed_name(d.name.value)), arguments=d.arguments)
            for d in node.directives
        )
        for attr in ("fields", "values", "arguments"):
            children = getattr(node, attr, None)
            if children:
                setattr(node, attr, tuple(_rename_fed(c) for c in children))
    return node


def parse_subgraph(name: str, url: str, sdl: str) -> Subgraph:
    """Parse and validate one subgraph's `_service { sdl }`."""
    try:
        doc = parse(sdl, no_location=True)
    except GraphQLError as exc:
        raise CompositionError([f'subgraph "{name}": invalid SDL: {exc.message}']) from exc
    defs = [_rename_fed(d) for d in doc.definitions
            if not (hasattr(d, "name") and d.name and d.name.value in _PRELUDE_NAMES)]
    own_directives = {d.name.value for d in defs if isinstance(d, DirectiveDefinitionNode)}
    known = _PRELUDE_NAMES | own_directives | {"deprecated", "specifiedBy", "oneOf"}
    defs = [_strip_unknown_directives(d, known) for d in defs]
    # Federation 1 style `extend type X` with no base definition: make it a definition.
    defined = {d.name.value for d in defs if isinstance(d, TypeDefinitionNode)}
    fixed: list[Any] = []
    for d in defs:
        if isinstance(d, TypeExtensionNode) and d.name.value not in defined:
            base = _DEF_OF[type(d)]
            kwargs = {k: getattr(d, k, None) for k in base.keys if k != "description"}
            fixed.append(base(**kwargs))
            defined.add(d.name.value)
        else:
            fixed.append(d)
    # A subgraph may define no Query at all (it only adds fields to entities); graphql-core
    # validates a schema only with a query root, so it gets a placeholder the model drops.
    has_query = "Query" in defined or any(isinstance(d, SchemaDefinitionNode) for d in fixed)
    placeholder = () if has_query else _QUERY_PLACEHOLDER.definitions
    check_doc = DocumentNode(definitions=(*_PRELUDE_DOC.definitions, *fixed, *placeholder))
    try:
        schema = build_ast_schema(check_doc)
    except (GraphQLError, TypeError) as exc:
        msg = getattr(exc, "message", str(exc))
        raise CompositionError([f'subgraph "{name}": invalid schema: {msg}']) from exc
    problems = validate_schema(schema)
    if problems:
        raise CompositionError([f'subgraph "{name}": invalid schema: {e.message}'
                                for e in problems])
    model = _subgraph_model(name, url, fixed, schema)
    if not has_query:
        # Like Apollo: every subgraph has a Query (its _entities), with no field of its own.
        model.roots["query"] = "Query"
        model.types["Query"] = SubType("Query", "object")
    return model


def _subgraph_model(name: str, url: str, defs: list[Any], schema: GraphQLSchema) -> Subgraph:
    roots: dict[str, str] = {}
    for op_kind in ROOT_KINDS:
        t = schema.get_root_type(OperationType(op_kind))
        if t is not None:
            roots[op_kind] = t.name
    root_rename = {v: ROOT_NAMES[k] for k, v in roots.items()}
    types: dict[str, SubType] = {}
    for d in defs:
        kind = _KIND.get(type(d))
        if kind is None or d.name.value in FED_TYPES:
            continue
        tname = root_rename.get(d.name.value, d.name.value)
        st = types.get(tname)
        if st is None:
            if _directives(d, "interfaceObject"):
                # An entity interface this subgraph sees as an object type: an interface in
                # the supergraph, marked isInterfaceObject for this subgraph.
                kind = "interface"
            st = types[tname] = SubType(tname, kind)
            st.interface_object = kind == "interface" and bool(_directives(d, "interfaceObject"))
        if isinstance(d, TypeDefinitionNode):
            st.description = st.description or d.description
        if _directives(d, "extends"):
            st.extension = True
        type_shareable = bool(_directives(d, "shareable"))
        type_external = bool(_directives(d, "external"))
        st.inaccessible = st.inaccessible or bool(_directives(d, "inaccessible"))
        st.access = merge_access([st.access, access_of(d)])
        st.contexts += [n for n in contexts.context_names(d) if n not in st.contexts]
        for k in _directives(d, "key"):
            st.keys.append((_str_arg(k, "fields") or "", _bool_arg(k, "resolvable", True)))
        st.interfaces += [i.name.value for i in getattr(d, "interfaces", None) or ()]
        st.members += [m.name.value for m in getattr(d, "types", None) or ()]
        for v in getattr(d, "values", None) or ():
            if kind == "enum":
                st.values[v.name.value] = bool(_directives(v, "inaccessible"))
                st.value_nodes[v.name.value] = v
        for f in getattr(d, "fields", None) or ():
            if tname == "Query" and f.name.value in FED_ROOT_FIELDS:
                continue
            req = _directives(f, "requires")
            prov = _directives(f, "provides")
            ovr = _directives(f, "override")
            st.fields[f.name.value] = SubField(
                node=f,
                external=type_external or bool(_directives(f, "external")),
                shareable=type_shareable or bool(_directives(f, "shareable")),
                inaccessible=bool(_directives(f, "inaccessible")),
                requires=_str_arg(req[0], "fields") if req else None,
                provides=_str_arg(prov[0], "fields") if prov else None,
                override=_str_arg(ovr[0], "from") if ovr else None,
                override_label=_str_arg(ovr[0], "label") if ovr else None,
                access=access_of(f),
            )
    for st in types.values():
        # A subgraph always resolves its own key fields (Fed 1 marked them @external on
        # `extend type`); treating them as resolvable keeps jumps into it possible.
        for fields, _ in st.keys:
            for sel in parse_field_set(fields).selections:
                if isinstance(sel, FieldNode) and sel.name.value in st.fields:
                    st.fields[sel.name.value].external = False
    for st in types.values():  # root fields and renamed roots
        for sf in st.fields.values():
            if _named(sf.node.type) in root_rename:
                sf.node = copy.copy(sf.node)
                sf.node.type = _rename_named(sf.node.type, root_rename)
    model = Subgraph(name, url, types, {k: ROOT_NAMES[k] for k in roots})
    problems = contexts.validate_subgraph(model)
    if problems:
        raise CompositionError(problems)
    return model


def _rename_named(t: TypeNode, mapping: Mapping[str, str]) -> TypeNode:
    if isinstance(t, NonNullTypeNode):
        return NonNullTypeNode(type=_rename_named(t.type, mapping))
    if isinstance(t, ListTypeNode):
        return ListTypeNode(type=_rename_named(t.type, mapping))
    assert isinstance(t, NamedTypeNode)
    return NamedTypeNode(name=NameNode(value=mapping.get(t.name.value, t.name.value)))


# ---------------------------------------------------------------------------------------------
# Composition


def _graph_enum(name: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in name).upper()
    return out if not out[:1].isdigit() else "_" + out


def _nullable(t: TypeNode) -> TypeNode:
    return t.type if isinstance(t, NonNullTypeNode) else t


def _merge_output_type(a: TypeNode, b: TypeNode) -> TypeNode | None:
    """The supergraph type of an output field defined as `a` and `b`: the more nullable one."""
    if print_ast(a) == print_ast(b):
        return a
    na, nb = _nullable(a), _nullable(b)
    if isinstance(na, ListTypeNode) and isinstance(nb, ListTypeNode):
        inner = _merge_output_type(na.type, nb.type)
        return None if inner is None else ListTypeNode(type=inner)
    if print_ast(na) == print_ast(nb):
        return na
    return None


def _is_subtype(a: TypeNode, b: TypeNode) -> bool:
    """Whether output type `a` may stand where `b` is expected (equal or stricter nullability)."""
    if isinstance(a, NonNullTypeNode) and not isinstance(b, NonNullTypeNode):
        return _is_subtype(a.type, b)
    if isinstance(a, NonNullTypeNode) and isinstance(b, NonNullTypeNode):
        return _is_subtype(a.type, b.type)
    if isinstance(a, ListTypeNode) and isinstance(b, ListTypeNode):
        return _is_subtype(a.type, b.type)
    if isinstance(a, NamedTypeNode) and isinstance(b, NamedTypeNode):
        return a.name.value == b.name.value
    return False


def _field_set_fields(fields: str) -> Iterable[tuple[str, SelectionSetNode | None]]:
    for sel in parse_field_set(fields).selections:
        if isinstance(sel, FieldNode):
            yield sel.name.value, sel.selection_set


def _check_field_set(sg: Subgraph, tname: str, fields: str, what: str, errors: list[str]) -> None:
    try:
        sels = parse_field_set(fields)
    except GraphQLError as exc:
        errors.append(f'subgraph "{sg.name}": invalid {what} "{fields}" on "{tname}": '
                      f'{exc.message}')
        return
    _check_selection(sg, tname, sels, what, fields, errors)


def _check_selection(sg: Subgraph, tname: str, sels: SelectionSetNode, what: str, fields: str,
                     errors: list[str]) -> None:
    st = sg.types.get(tname)
    for sel in sels.selections:
        if not isinstance(sel, FieldNode):
            # inline fragments in field sets (on abstract types)
            cond = getattr(sel, "type_condition", None)
            if cond is not None and sel.selection_set is not None:  # type: ignore[attr-defined]
                _check_selection(sg, cond.name.value, sel.selection_set,  # type: ignore[attr-defined]
                                 what, fields, errors)
            continue
        fname = sel.name.value
        if fname == "__typename":
            continue
        if st is None or fname not in st.fields:
            errors.append(f'subgraph "{sg.name}": {what} "{fields}" on "{tname}" selects unknown '
                          f'field "{tname}.{fname}"')
            continue
        if sel.selection_set is not None:
            _check_selection(sg, _named(st.fields[fname].node.type), sel.selection_set, what,
                             fields, errors)


def compose(subgraphs: Mapping[str, tuple[str, str]]) -> str:
    """Compose {name: (url, sdl)} into a supergraph SDL; raise CompositionError on conflicts."""
    errors: list[str] = []
    parsed: list[Subgraph] = []
    for name, (url, sdl) in subgraphs.items():
        try:
            parsed.append(parse_subgraph(name, url, sdl))
        except CompositionError as exc:
            errors += exc.errors
    if errors:
        raise CompositionError(errors)
    composer = _Composer(parsed)
    sdl = composer.run()
    if composer.uses_access:
        from gateway.transitive_access import transitive_access_errors

        problems = transitive_access_errors(Supergraph.from_sdl(sdl))
        if problems:
            raise CompositionError(problems)
    return sdl


class _Composer:
    def __init__(self, subgraphs: list[Subgraph]) -> None:
        self.sgs = subgraphs
        self.by_name = {s.name: s for s in subgraphs}
        self.enum_of = {s.name: _graph_enum(s.name) for s in subgraphs}
        self.errors: list[str] = []
        self.out: list[str] = []
        self.uses_inaccessible = False
        self.uses_access: set[str] = set()
        self.uses_labels = False
        self.uses_context = False
        self.inaccessible_types: set[str] = set()
        self.input_types_used: set[str] = set()

    def run(self) -> str:
        enum_names = list(self.enum_of.values())
        if len(set(enum_names)) != len(enum_names):
            self.errors.append("two subgraph names map to the same join__Graph value: "
                               + ", ".join(sorted(self.enum_of)))
        names: dict[str, list[Subgraph]] = {}
        for sg in self.sgs:
            for tname in sg.types:
                names.setdefault(tname, []).append(sg)
            for st in sg.types.values():
                for sf in st.fields.values():
                    for a in getattr(sf.node, "arguments", None) or ():
                        self.input_types_used.add(_named(a.type))
                    if st.kind == "input":
                        self.input_types_used.add(_named(sf.node.type))
        for tname, sgs in names.items():
            kinds = {sg.types[tname].kind for sg in sgs}
            if len(kinds) > 1:
                detail = ", ".join(f'{sg.types[tname].kind.upper()} in subgraph "{sg.name}"'
                                   for sg in sgs)
                self.errors.append(f'type "{tname}" has mismatched kinds: {detail}')
                continue
            if any(sg.types[tname].inaccessible for sg in sgs):
                self.inaccessible_types.add(tname)
            if all(sg.types[tname].interface_object for sg in sgs):
                self.errors.append(
                    f'type "{tname}" is @interfaceObject in every subgraph that defines it ('
                    + ", ".join(f'"{sg.name}"' for sg in sgs) + "): one subgraph must define "
                    "it as an interface with @key")
        if self.errors:
            raise CompositionError(self.errors)
        if "Query" not in names:
            raise CompositionError(["no subgraph defines a Query type"])
        bodies: list[str] = []
        for tname in sorted(names, key=lambda n: (n not in ROOT_NAMES.values(), n)):
            bodies.append(self._type(tname, names[tname]))
        self._check_satisfiable(names)
        self.errors += contexts.unset_context_errors(
            self.sgs, [ROOT_NAMES[k] for k in ROOT_KINDS if ROOT_NAMES[k] in names])
        if self.errors:
            raise CompositionError(self.errors)
        return self._header(names) + "\n\n".join(b for b in bodies if b) + "\n"

    # -- printing helpers -------------------------------------------------------------------

    def _desc(self, node: StringValueNode | None, indent: str = "") -> str:
        if node is None:
            return ""
        printed = print_ast(StringValueNode(value=node.value, block=True))
        return "\n".join(indent + line for line in printed.split("\n")) + "\n"

    def _jt(self, graph: str, **kw: Any) -> str:
        args = [f"graph: {self.enum_of[graph]}"]
        for k, v in kw.items():
            if v is None:
                continue
            args.append(f"{k}: {_gql_literal(v)}")
        return "@join__type(" + ", ".join(args) + ")"

    def _header(self, names: Mapping[str, list[Subgraph]]) -> str:
        roots = [f"  {k}: {ROOT_NAMES[k]}" for k in ROOT_KINDS if ROOT_NAMES[k] in names]
        security_defs: list[str] = []
        links = ['@link(url: "https://specs.apollo.dev/link/v1.0")',
                 f'@link(url: "{self._join_url()}", for: EXECUTION)']
        if self.uses_context:
            links.append(f'@link(url: "{contexts.CONTEXT_URL}", for: SECURITY)')
            security_defs.append(contexts.CONTEXT_DEFINITIONS)
        if self.uses_inaccessible:
            links.append('@link(url: "https://specs.apollo.dev/inaccessible/v0.2", for: SECURITY)')
        for name in sorted(self.uses_access):
            links.append(f'@link(url: "https://specs.apollo.dev/{name}/v0.1", for: SECURITY)')
            inacc_defs = ACCESS_DEFINITIONS[name]
            security_defs.append(inacc_defs)
        graphs = "\n".join(
            f'  {self.enum_of[sg.name]} @join__graph(name: {_gql_literal(sg.name)}, '
            f'url: {_gql_literal(sg.url)})' for sg in sorted(self.sgs, key=lambda s: s.name))
        inacc = ("directive @inaccessible on FIELD_DEFINITION | OBJECT | INTERFACE | UNION | "
                 "ARGUMENT_DEFINITION | SCALAR | ENUM | ENUM_VALUE | INPUT_OBJECT | "
                 "INPUT_FIELD_DEFINITION\n\n") if self.uses_inaccessible else ""
        return (
            "schema\n  " + "\n  ".join(links) + "\n{\n" + "\n".join(roots) + "\n}\n\n" + inacc +
            "".join(security_defs) + (JOIN_V04_EXTRA if self._join_url() != JOIN_URL else "") +
            "directive @join__enumValue(graph: join__Graph!) repeatable on ENUM_VALUE\n\n"
            "directive @join__field(graph: join__Graph, requires: join__FieldSet, provides: "
            "join__FieldSet, type: String, external: Boolean, override: String, usedOverridden: "
            "Boolean" + (", overrideLabel: String" if self._join_url() != JOIN_URL else "") +
            (", contextArguments: [join__ContextArgument!]" if self.uses_context else "") +
            ") repeatable on FIELD_DEFINITION | INPUT_FIELD_DEFINITION\n\n" +
            "directive @join__graph(name: String!, url: String!) on ENUM_VALUE\n\n"
            "directive @join__implements(graph: join__Graph!, interface: String!) repeatable on "
            "OBJECT | INTERFACE\n\n"
            "directive @join__type(graph: join__Graph!, key: join__FieldSet, extension: Boolean! "
            "= false, resolvable: Boolean! = true, isInterfaceObject: Boolean! = false) repeatable "
            "on OBJECT | INTERFACE | UNION | ENUM | INPUT_OBJECT | SCALAR\n\n"
            "directive @join__unionMember(graph: join__Graph!, member: String!) repeatable on "
            "UNION\n\n"
            "directive @link(url: String, as: String, for: link__Purpose, import: "
            "[link__Import]) repeatable on SCHEMA\n\n" +
            (contexts.JOIN_CONTEXT_ARGUMENT if self.uses_context else "") +
            "scalar join__FieldSet\n\n"
            "enum join__Graph {\n" + graphs + "\n}\n\n"
            "scalar link__Import\n\n"
            "enum link__Purpose {\n  \"\"\"\n  `SECURITY` features provide metadata necessary to "
            "securely resolve fields.\n  \"\"\"\n  SECURITY\n\n  \"\"\"\n  `EXECUTION` features "
            "provide metadata necessary for operation execution.\n  \"\"\"\n  EXECUTION\n}\n\n"
        )

    def _join_url(self) -> str:
        if self.uses_context:
            return contexts.JOIN_URL_CONTEXT
        return JOIN_URL_LABELS if self.uses_labels else JOIN_URL

    def _contexts(self, sgs: list[Subgraph], subs: list[SubType]) -> str:
        names = [contexts.supergraph_context(sg.name, n)
                 for sg, st in zip(sgs, subs, strict=True) for n in st.contexts]
        if names:
            self.uses_context = True
        return "".join(f"\n  @context(name: {_gql_literal(n)})" for n in names)

    def _access(self, access: Access, sep: str) -> str:
        text = access_directives(access)
        if not text:
            return ""
        for name in ("authenticated", "requiresScopes", "policy"):
            if f"@{name}" in text:
                self.uses_access.add(name)
        return text if not sep else "".join(sep + " @" + d for d in text.split(" @")[1:])

    def _inacc(self, flag: bool) -> str:
        if flag:
            self.uses_inaccessible = True
            return " @inaccessible"
        return ""

    # -- types --------------------------------------------------------------------------------

    def _type(self, tname: str, sgs: list[Subgraph]) -> str:
        kind = sgs[0].types[tname].kind
        subs = [sg.types[tname] for sg in sgs]
        desc = next((s.description for s in subs if s.description), None)
        inacc = self._inacc(tname in self.inaccessible_types)
        head = self._desc(desc)
        jts: list[str] = []
        for sg, st in zip(sgs, subs, strict=True):
            ext = True if st.extension else None
            if kind in ("object", "interface") and st.keys:
                for fields, resolvable in st.keys:
                    _check_field_set(sg, tname, fields, "@key", self.errors)
                    jts.append(self._jt(sg.name, key=fields, extension=ext,
                                        resolvable=None if resolvable else False,
                                        isInterfaceObject=True if st.interface_object
                                        else None))
            else:
                jts.append(self._jt(sg.name, extension=ext))
        directives = "".join("\n  " + j for j in jts) + self._access(
            merge_access([st.access for st in subs]), "\n ") + self._contexts(sgs, subs)
        if kind == "scalar":
            return f"{head}scalar {tname}{directives}{inacc}"
        if kind == "union":
            members: list[str] = []
            jm: list[str] = []
            for sg, st in zip(sgs, subs, strict=True):
                for m in st.members:
                    if m not in members:
                        members.append(m)
                    jm.append(f"@join__unionMember(graph: {self.enum_of[sg.name]}, "
                              f"member: {_gql_literal(m)})")
            members = [m for m in members if m not in self.inaccessible_types] + \
                [m for m in members if m in self.inaccessible_types]
            return (f"{head}union {tname}{directives}" + "".join("\n  " + j for j in jm) +
                    f"{inacc}\n  = " + " | ".join(members))
        if kind == "enum":
            return head + f"enum {tname}{directives}{inacc}\n{{\n" + self._enum_values(
                tname, sgs, subs) + "\n}"
        if kind == "input":
            return head + f"input {tname}{directives}{inacc}\n{{\n" + self._input_fields(
                tname, sgs, subs) + "\n}"
        impls: list[str] = []
        ji: list[str] = []
        for sg, st in zip(sgs, subs, strict=True):
            for i in st.interfaces:
                if i not in impls:
                    impls.append(i)
                ji.append(f"@join__implements(graph: {self.enum_of[sg.name]}, "
                          f"interface: {_gql_literal(i)})")
        keyword = "type" if kind == "object" else "interface"
        impl = (" implements " + " & ".join(impls)) if impls else ""
        fields = self._fields(tname, kind, sgs, subs)
        if kind == "object":
            fields += self._interface_object_fields(tname, impls, subs)
        return (f"{head}{keyword} {tname}{impl}" + "".join("\n  " + j for j in ji) + directives +
                f"{inacc}\n{{\n" + fields + "\n}")

    def _interface_object_fields(self, tname: str, impls: list[str], subs: list[SubType]
                                 ) -> str:
        """Fields an @interfaceObject adds to an interface reach its implementations too;
        no subgraph of the implementation resolves them (a bare @join__field)."""
        own = {n for st in subs for n in st.fields}
        lines: list[str] = []
        for iface in impls:
            for sg in self.sgs:
                st = sg.types.get(iface)
                if st is None or not st.interface_object:
                    continue
                for fname, sf in st.fields.items():
                    if fname in own or not isinstance(sf.node, FieldDefinitionNode):
                        continue
                    own.add(fname)
                    lines.append(f"  {fname}{self._args(tname, fname, [(sg, sf)])}: "
                                 f"{print_ast(sf.node.type)} @join__field"
                                 + self._access(sf.access, ""))
        return "".join("\n" + line for line in lines)

    def _enum_values(self, tname: str, sgs: list[Subgraph], subs: list[SubType]) -> str:
        order: list[str] = []
        for st in subs:
            order += [v for v in st.values if v not in order]
        if tname in self.input_types_used and len(subs) > 1:
            sets = {sg.name: set(st.values) for sg, st in zip(sgs, subs, strict=True)}
            if len({frozenset(s) for s in sets.values()}) > 1:
                detail = ", ".join(f'{sorted(v)} in subgraph "{n}"' for n, v in sets.items())
                self.errors.append(f'enum "{tname}" is used as an input and its values differ '
                                   f'across subgraphs: {detail}')
        lines: list[str] = []
        for v in order:
            node = next(st.value_nodes[v] for st in subs if v in st.value_nodes)
            joins = "".join(f" @join__enumValue(graph: {self.enum_of[sg.name]})"
                            for sg, st in zip(sgs, subs, strict=True) if v in st.values)
            inacc = self._inacc(any(st.values.get(v) for st in subs))
            lines.append(self._desc(node.description, "  ") + f"  {v}{joins}{inacc}"
                         + _deprecation(node))
        return "\n".join(lines)

    def _input_fields(self, tname: str, sgs: list[Subgraph], subs: list[SubType]) -> str:
        names = [n for n in subs[0].fields if all(n in st.fields for st in subs)]
        for sg, st in zip(sgs, subs, strict=True):
            for n, sf in st.fields.items():
                required = isinstance(sf.node.type, NonNullTypeNode) and \
                    getattr(sf.node, "default_value", None) is None
                if n not in names and required:
                    missing = [o.name for o, ot in zip(sgs, subs, strict=True)
                               if n not in ot.fields]
                    self.errors.append(
                        f'input field "{tname}.{n}" is required in subgraph "{sg.name}" but '
                        f'missing in subgraph(s) ' + ", ".join(f'"{m}"' for m in missing))
        lines = []
        for n in names:
            nodes = [st.fields[n].node for st in subs]
            types = {print_ast(nd.type) for nd in nodes}
            if len(types) > 1:
                self.errors.append(f'input field "{tname}.{n}" has incompatible types across '
                                   f'subgraphs: ' + ", ".join(
                                       f'"{print_ast(nd.type)}" in subgraph "{sg.name}"'
                                       for sg, nd in zip(sgs, nodes, strict=True)))
            node = nodes[0]
            assert isinstance(node, InputValueDefinitionNode)
            inacc = self._inacc(any(st.fields[n].inaccessible for st in subs))
            lines.append(self._desc(node.description, "  ") + "  " + _input_value(node) + inacc)
        return "\n".join(lines)

    def _fields(self, tname: str, kind: str, sgs: list[Subgraph], subs: list[SubType]) -> str:
        order: list[str] = []
        for st in subs:
            order += [n for n in st.fields if n not in order]
        key_fields: dict[str, set[str]] = {}
        for sg, st in zip(sgs, subs, strict=True):
            key_fields[sg.name] = {n for fs, _ in st.keys for n, _ in _field_set_fields(fs)}
        lines: list[str] = []
        for fname in order:
            defs = [(sg, st.fields[fname]) for sg, st in zip(sgs, subs, strict=True)
                    if fname in st.fields]
            # @external copies do not widen the type: only resolving definitions decide it.
            typing_defs = [d for d in defs if not d[1].external] or defs
            ftype: TypeNode | None = typing_defs[0][1].node.type
            for _sg, sf in typing_defs[1:]:
                merged = _merge_output_type(ftype, sf.node.type) if ftype is not None else None
                if merged is None:
                    self.errors.append(
                        f'field "{tname}.{fname}" has incompatible types across subgraphs: '
                        + ", ".join(f'"{print_ast(f.node.type)}" in subgraph "{g.name}"'
                                    for g, f in defs))
                    break
                ftype = merged
            if ftype is None:
                continue
            for sg, sf in defs:
                if sf.external and not _is_subtype(sf.node.type, ftype):
                    self.errors.append(
                        f'type of field "{tname}.{fname}" is incompatible across subgraphs (where '
                        f'marked @external): it has type "{print_ast(ftype)}" where resolved but '
                        f'type "{print_ast(sf.node.type)}" in subgraph "{sg.name}"')
            self._check_field(tname, kind, fname, defs, key_fields)
            self.errors += contexts.contextual_argument_conflicts(tname, fname, defs)
            resolving = [sg for sg, sf in defs if not sf.external]
            overridden = {sf.override for _, sf in defs if sf.override}
            labels = {sf.override: sf.override_label for _, sf in defs
                      if sf.override and sf.override_label}
            # A field with identical definitions in every subgraph of the type needs no join__field.
            plain = (len(defs) == len(sgs) and not overridden and all(
                not sf.external and not sf.requires and not sf.provides and
                not any(contexts.from_context(a) is not None
                        for a in getattr(sf.node, "arguments", None) or ()) and
                print_ast(sf.node.type) == print_ast(ftype) for _, sf in defs))
            joins: list[str] = []
            if not plain:
                for sg, sf in defs:
                    parts = [f"graph: {self.enum_of[sg.name]}"]
                    if sf.requires:
                        _check_field_set(sg, tname, sf.requires, "@requires", self.errors)
                        parts.append(f"requires: {_gql_literal(sf.requires)}")
                    if sf.provides:
                        target = _named(sf.node.type)
                        _check_field_set(sg, target, sf.provides, "@provides", self.errors)
                        parts.append(f"provides: {_gql_literal(sf.provides)}")
                    if print_ast(sf.node.type) != print_ast(ftype):
                        parts.append(f"type: {_gql_literal(print_ast(sf.node.type))}")
                    if sf.external:
                        parts.append("external: true")
                    ctx_args = contexts.contextual_arguments(sg, tname, fname)
                    if ctx_args:
                        self.uses_context = True
                        parts.append(contexts.join_field_argument(ctx_args))
                    if sf.override:
                        parts.append(f"override: {_gql_literal(sf.override)}")
                        if sf.override_label:
                            self.uses_labels = True
                            parts.append(f"overrideLabel: {_gql_literal(sf.override_label)}")
                    label = labels.get(sg.name)
                    if label is not None and not sf.override:
                        # Progressive: the overridden subgraph still answers while it is off.
                        parts.append(f"overrideLabel: {_gql_literal(label)}")
                    elif sg.name in overridden and not sf.override:
                        # The overridden copy only stays if that subgraph still needs it (key).
                        if fname not in key_fields.get(sg.name, set()):
                            continue
                        parts.append("usedOverridden: true")
                    joins.append("@join__field(" + ", ".join(parts) + ")")
            if not resolving:
                self.errors.append(f'field "{tname}.{fname}" is marked @external in every '
                                   f'subgraph that defines it: ' + ", ".join(
                                       f'"{sg.name}"' for sg, _ in defs))
            node = defs[0][1].node
            assert isinstance(node, FieldDefinitionNode)
            args = self._args(tname, fname, defs)
            inacc = self._inacc(any(sf.inaccessible for _, sf in defs))
            if not inacc and _named(ftype) in self.inaccessible_types and \
                    tname not in self.inaccessible_types:
                self.errors.append(f'field "{tname}.{fname}" returns @inaccessible type '
                                   f'"{_named(ftype)}" but is not @inaccessible itself')
            lines.append(self._desc(node.description, "  ") + f"  {fname}{args}: "
                         f"{print_ast(ftype)}" + "".join(" " + j for j in joins) + inacc
                         + self._access(merge_access([sf.access for _, sf in defs]), "")
                         + _deprecation(node))
        return "\n".join(lines)

    def _args(self, tname: str, fname: str, defs: list[tuple[Subgraph, SubField]]) -> str:
        # Contextual arguments are the gateway's to fill: not in the supergraph's field.
        per = [{a.name.value: a for a in getattr(sf.node, "arguments", None) or ()
                if contexts.from_context(a) is None} for _, sf in defs]
        names = [n for n in per[0] if all(n in p for p in per)]
        for (sg, _), p in zip(defs, per, strict=True):
            for n, a in p.items():
                required = isinstance(a.type, NonNullTypeNode) and a.default_value is None
                if n not in names and required:
                    self.errors.append(f'argument "{tname}.{fname}({n}:)" is required in subgraph '
                                       f'"{sg.name}" but missing in other subgraphs defining the '
                                       f'field')
        out = []
        for n in names:
            types = {print_ast(p[n].type) for p in per}
            if len(types) > 1:
                self.errors.append(f'argument "{tname}.{fname}({n}:)" has incompatible types '
                                   f'across subgraphs: ' + ", ".join(
                                       f'"{print_ast(p[n].type)}" in subgraph "{sg.name}"'
                                       for (sg, _), p in zip(defs, per, strict=True)))
            inacc = self._inacc(any(_directives(p[n], "inaccessible") for p in per))
            out.append(_input_value(per[0][n]) + inacc)
        return ("(" + ", ".join(out) + ")") if out else ""

    def _check_field(self, tname: str, kind: str, fname: str,
                     defs: list[tuple[Subgraph, SubField]],
                     key_fields: dict[str, set[str]]) -> None:
        if kind != "object":
            return
        resolving = [(sg, sf) for sg, sf in defs if not sf.external and not sf.override]
        overridden = {sf.override for _, sf in defs if sf.override}
        resolving = [(sg, sf) for sg, sf in resolving if sg.name not in overridden] + \
            [(sg, sf) for sg, sf in defs if sf.override]
        if len(resolving) < 2:
            return
        non_shareable = [sg.name for sg, sf in resolving
                         if not sf.shareable and fname not in key_fields.get(sg.name, set())]
        if non_shareable:
            self.errors.append(
                f'non-shareable field "{tname}.{fname}" is resolved from multiple subgraphs: it '
                f'is resolved from subgraphs ' + ", ".join(f'"{sg.name}"' for sg, _ in resolving)
                + " and defined as non-shareable in subgraph(s) "
                + ", ".join(f'"{n}"' for n in non_shareable))

    def _check_satisfiable(self, names: Mapping[str, list[Subgraph]]) -> None:
        """Each field of an object type must be reachable from every subgraph where a query
        can arrive at that type, through keys.

        A query arrives at T in subgraph s when s resolves (not @external) a field returning T,
        or an interface or union s knows T by. From there, a subgraph h is reachable when the
        fields of one of h's resolvable keys are resolved by s or by subgraphs already reached
        (multi-hop, as the planner does)."""
        arrivals = _arrivals(self.sgs)
        for tname, sgs in names.items():
            if sgs[0].types[tname].kind != "object" or tname in ROOT_NAMES.values():
                continue
            resolves = {sg.name: {n for n, sf in sg.types[tname].fields.items()
                                  if not sf.external} for sg in sgs}
            keys = {sg.name: [{f for f, _ in _field_set_fields(fs)}
                              for fs, ok in sg.types[tname].keys if ok] for sg in sgs}
            reach: dict[str, set[str]] = {}
            for sg in sgs:
                reached = {sg.name}
                grew = True
                while grew:
                    available = set().union(*(resolves[r] for r in reached))
                    new = {h for h in resolves if h not in reached and
                           any(k <= available for k in keys[h])}
                    reached |= new
                    grew = bool(new)
                reach[sg.name] = set().union(*(resolves[r] for r in reached))
            for group in sorted(arrivals.get(tname, ()), key=sorted):
                # A field several subgraphs resolve (a shared root field, say) leads here from
                # any of them: one that reaches everything is enough.
                starts = [g for g in sorted(group) if g in reach]
                if not starts:
                    continue
                for other in sgs:
                    for fname in sorted(resolves[other.name]):
                        if not any(fname in reach[g] for g in starts):
                            self.errors.append(
                                f'cannot satisfy "{tname}.{fname}": it is resolved only by '
                                f'subgraph "{other.name}", which has no resolvable @key whose '
                                f'fields subgraph ' + " or ".join(f'"{g}"' for g in starts)
                                + " can reach")
                            break


def _arrivals(sgs: list[Subgraph]) -> dict[str, set[frozenset[str]]]:
    """Object type -> the ways a query arrives at it: per field returning it (or an interface
    or union it belongs to), the subgraphs resolving that field (not @external)."""
    by_field: dict[tuple[str, str], set[str]] = {}
    targets: dict[tuple[str, str], set[str]] = {}
    for sg in sgs:
        members: dict[str, set[str]] = {}
        for st in sg.types.values():
            for i in st.interfaces:
                members.setdefault(i, set()).add(st.name)
            if st.kind == "union":
                members.setdefault(st.name, set()).update(st.members)
        for st in sg.types.values():
            if st.kind not in ("object", "interface"):
                continue
            for fname, sf in st.fields.items():
                if sf.external or not isinstance(sf.node, FieldDefinitionNode):
                    continue
                target = _named(sf.node.type)
                by_field.setdefault((st.name, fname), set()).add(sg.name)
                targets.setdefault((st.name, fname), set()).update(
                    {target} | members.get(target, set()))
    out: dict[str, set[frozenset[str]]] = {}
    for key, graphs in by_field.items():
        for t in targets[key]:
            out.setdefault(t, set()).add(frozenset(graphs))
    return out


def _deprecation(node: Any) -> str:
    for d in node.directives or ():
        if d.name.value == "deprecated":
            return " " + print_ast(d)
    return ""


def _input_value(node: InputValueDefinitionNode) -> str:
    out = f"{node.name.value}: {print_ast(node.type)}"
    if node.default_value is not None:
        out += " = " + print_ast(node.default_value)
    return out + _deprecation(node)


def _gql_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return print_ast(StringValueNode(value=str(v)))


def print_supergraph_sdl(subgraphs: Mapping[str, tuple[str, str]]) -> str:
    """The standard supergraph SDL (join v0.3) for {name: (url, sdl)}."""
    return compose(subgraphs)


def load_supergraph(subgraphs: Mapping[str, tuple[str, str]]) -> Supergraph:
    return Supergraph.from_sdl(compose(subgraphs))
