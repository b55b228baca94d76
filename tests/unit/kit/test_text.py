"""doorward_kit.text: the one input policy for caller text, and its GraphQL walk."""

from __future__ import annotations

import pytest
from graphql import parse
from hypothesis import given, settings
from hypothesis import strategies as st

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.graphql import check_operation_text
from doorward_kit.text import (
    _BIDI,
    _CONTROL_LINE,
    _CONTROL_TEXT,
    _SURROGATE,
    ID,
    LINE,
    NAME,
    TEXT,
    TextRule,
    check_text,
    check_value,
    rule_for,
)

pytestmark = pytest.mark.unit


def refused(fn, *args) -> str:
    with pytest.raises(DoorwardError) as caught:
        fn(*args)
    assert caught.value.code is ErrorCode.BAD_USER_INPUT
    return caught.value.message


def test_rules_by_field_name():
    assert rule_for("displayName") is NAME
    assert rule_for("input.label") is NAME
    assert rule_for("description") is TEXT
    assert rule_for("id") is ID and rule_for("regionIds") is ID and rule_for("siteId") is ID
    assert rule_for("refreshToken") is LINE and rule_for("after") is LINE


@pytest.mark.parametrize("bad", ["\x00", "\x01", "\x1b[31m", "\x7f", "\x85", "\x9f", "\ud800"])
def test_control_characters_and_surrogates_are_refused_everywhere(bad):
    for field in ("id", "displayName", "description", "password"):
        message = refused(check_text, field, f"a{bad}b")
        assert message.startswith(field) and bad not in message


@pytest.mark.parametrize(
    "bidi", ["\u202a", "\u202e", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c"]
)
def test_bidi_controls_are_refused_in_names_labels_and_ids_only(bidi):
    for field in ("displayName", "name", "label", "title", "address", "id"):
        refused(check_text, field, f"Zone {bidi} evil")
    assert check_text("description", f"note {bidi} rtl") == f"note {bidi} rtl"


def test_free_text_keeps_its_lines_names_do_not():
    assert check_text("description", "a\n\tb\r\n") == "a\n\tb\r\n"
    refused(check_text, "title", "a\nb")
    refused(check_text, "password", "a\tb")


def test_every_string_has_a_limit_and_honest_text_passes():
    refused(check_text, "id", "a" * 129)
    refused(check_text, "displayName", "a" * 501)
    refused(check_text, "otp", "1" * 5000)
    assert check_text("displayName", "Zoë O'Brien-Łukasz 李") == "Zoë O'Brien-Łukasz 李"
    assert check_text("name", "Zone שלום") == "Zone שלום"


def test_nested_values_are_checked_with_their_field_names():
    check_value("input", {"displayName": "Ann", "regionIds": ["r1", "r2"]})
    assert refused(check_value, "input", {"regionIds": ["ok", "b\x00"]}).startswith(
        "input.regionIds"
    )
    # A key is checked before it may appear in a message.
    assert "\x00" not in refused(check_value, "input", {"a\x00": "x"})


def test_the_operation_walk_checks_literals_defaults_and_variables_by_their_use():
    doc = parse('query($n: String!, $x: ID = "ok") { a(name: $n, id: $x) b(input: {label: "L"}) }')
    check_operation_text(doc, {"n": "North"})
    assert refused(check_operation_text, doc, {"n": "N\u202e"}).startswith("name")
    refused(check_operation_text, parse('{ a(input: {label: "L\\u202e"}) }'), {})
    refused(check_operation_text, parse('query($x: ID = "\\u0000") { a(id: $x) }'), {})
    # Variables nobody uses are still checked for control characters.
    refused(check_operation_text, parse("{ a }"), {"unused": "\x00"})


def test_a_document_seen_before_still_has_its_values_checked():
    # Subgraphs remember what a document's text looks like (its literals passed, where its
    # variables go): the values of every request are still checked.
    text = "query($n: String!) { a(name: $n) }"
    for _ in range(2):
        check_operation_text(parse(text), {"n": "North"}, query=text)
        assert refused(
            lambda: check_operation_text(parse(text), {"n": "N\u202e"}, query=text)
        ).startswith("name")
    # A document whose literal is refused is refused again (never remembered as good).
    bad = '{ a(input: {label: "L\\u202e"}) }'
    for _ in range(2):
        refused(lambda: check_operation_text(parse(bad), {}, query=bad))


def _by_expressions(value: str, rule: TextRule) -> bool:
    """The policy as its regular expressions say it (what the printable-ASCII shortcut skips)."""
    control = _CONTROL_TEXT if rule.multiline else _CONTROL_LINE
    return not (
        control.search(value) or _SURROGATE.search(value) or (not rule.bidi and _BIDI.search(value))
    )


@given(
    value=st.text(
        alphabet=st.one_of(
            st.characters(max_codepoint=0xA0),
            st.sampled_from("\u061c\u200e\u200f\u202a\u202e\u2066\u2069\ud800\udfffé李"),
        ),
        max_size=20,
    )
)
@settings(max_examples=400, deadline=None)
def test_the_ascii_shortcut_decides_as_the_expressions_do(value: str) -> None:
    for field, rule in (("id", ID), ("displayName", NAME), ("description", TEXT), ("x", LINE)):
        try:
            check_text(field, value)
            allowed = True
        except DoorwardError:
            allowed = False
        assert allowed == _by_expressions(value, rule), (field, value)
    # A key the shortcut lets by is a key check_text lets by.
    try:
        check_value("input", {value: "v"})
        key_allowed = True
    except DoorwardError:
        key_allowed = False
    assert key_allowed == _by_expressions(value, ID)
