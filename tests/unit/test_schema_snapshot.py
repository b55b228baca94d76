"""`schema.graphql` (the committed public API schema that frontend teams generate types from)
is exactly what the subgraphs compose to. Any difference fails, and the message sorts it into
breaking, dangerous and additive changes (graphql-core's comparison): a breaking change must be
deliberate, announced in docs/api.md, and then the snapshot regenerated with
`.venv/bin/doorward gateway schema --out schema.graphql`."""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql import find_breaking_changes, find_dangerous_changes

from deploy.schema import api_schema_sdl, parse_sdl

pytestmark = pytest.mark.unit

SNAPSHOT = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_the_committed_schema_is_the_composed_one() -> None:
    current = api_schema_sdl()
    committed = SNAPSHOT.read_text()
    if current == committed:
        return
    old, new = parse_sdl(committed), parse_sdl(current)
    breaking = [f"  {c.type.name}: {c.description}" for c in find_breaking_changes(old, new)]
    dangerous = [f"  {c.type.name}: {c.description}" for c in find_dangerous_changes(old, new)]
    lines = ["schema.graphql is out of date."]
    if breaking:
        lines += ["BREAKING changes (clients built on the snapshot will fail):", *breaking]
    if dangerous:
        lines += ["dangerous changes:", *dangerous]
    if not breaking and not dangerous:
        lines.append("only additive changes.")
    lines.append("Regenerate: .venv/bin/doorward gateway schema --out schema.graphql")
    pytest.fail("\n".join(lines))


def test_no_type_in_the_public_schema_carries_a_secret_value() -> None:
    """CONTRACT: a SecretRef is a reference only; no type anywhere has a secret's value."""
    schema = parse_sdl(SNAPSHOT.read_text())
    secret_types = [name for name in schema.type_map if name.startswith(("Secret", "BreakGlass"))]
    assert "SecretRef" in secret_types
    for name in secret_types:
        fields = getattr(schema.type_map[name], "fields", None) or {}
        assert not {"value", "plaintext", "code"} & set(fields), f"{name} carries a value"
    assert "_entities" not in (schema.query_type.fields if schema.query_type else {})
