"""Every GraphQL document the console sends is valid against the committed schema.graphql and
inside the gateway's default limits (depth, aliases, fields, estimated cost), so a schema change
or a greedy screen fails here, not in front of a dispatcher."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from graphql import build_schema, parse, validate

from gateway.limits import Limits, check_document
from gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
DOCUMENT = re.compile(r"graphql\(`(.*?)`\)", re.S)


def documents() -> list[tuple[str, str]]:
    found = []
    for source in sorted((ROOT / "web" / "src").glob("*.ts*")):
        for text in DOCUMENT.findall(source.read_text()):
            name = re.search(r"(?:query|mutation)\s+(\w+)", text)
            found.append((f"{source.name}:{name.group(1) if name else '?'}", text))
    return found


DOCS = documents()


def test_the_console_has_documents():
    assert len(DOCS) > 20


@pytest.mark.parametrize(("where", "text"), DOCS, ids=[w for w, _ in DOCS])
def test_console_document_is_valid_and_within_the_gateways_limits(where, text):
    schema = build_schema((ROOT / "schema.graphql").read_text())
    document = parse(text)
    assert not validate(schema, document), where
    s = GatewaySettings()
    limits = Limits(s.max_depth, s.max_aliases, s.max_fields, s.max_cost, s.default_list_size,
                    False, s.max_directives, s.max_tokens, s.max_document_chars)
    check_document(schema, document, limits)
