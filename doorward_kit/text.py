"""The one input policy for text that comes from a caller (GraphQL arguments and variables, the
secrets REST door): checked at the edge of every service, before anything reaches a database.

- No control characters: C0 (NUL included: PostgreSQL refuses it in text and the request would
  end as an internal error), DEL and C1. Free text (descriptions, reasons, notes) may hold tab,
  line feed and carriage return; nothing else may.
- No lone UTF-16 surrogates (JSON can spell them, UTF-8 cannot encode them).
- No Unicode bidirectional controls in names and labels: "Zone \u202e evil" renders reversed in a
  dispatcher's list, the classic spoofing trick. Free text may keep them (right-to-left writing
  needs them), ids, tokens and passwords never need them.
- A length limit on every string. Services keep their own, tighter rules (a title's 200
  characters, a password's policy); this is the floor under all of them.

Errors are BAD_USER_INPUT and name the field, never echo the value.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from doorward_kit.errors import bad_input


@dataclass(frozen=True)
class TextRule:
    max_length: int
    multiline: bool = False  # tab, LF, CR allowed
    bidi: bool = False  # bidirectional controls allowed


# Ids: UUIDs, org ids, opaque keys. 128 fits every id column.
ID = TextRule(max_length=128)
# Names and labels shown to other people: display names, region/customer names, titles,
# secret labels, addresses, contact details.
NAME = TextRule(max_length=500)
# Long free text: descriptions, notes, reasons.
TEXT = TextRule(max_length=10_000, multiline=True, bidi=True)
# Anything else a caller sends (tokens, passwords, cursors, filters): one line, no controls.
LINE = TextRule(max_length=4096, bidi=True)

# GraphQL argument / input-field names (and REST body fields) -> rule. One table for every
# service: the same name means the same kind of text everywhere.
FIELD_RULES: Mapping[str, TextRule] = {
    "name": NAME,
    "displayName": NAME,
    "label": NAME,
    "title": NAME,
    "address": NAME,
    "email": NAME,
    "phone": NAME,
    "timezone": NAME,
    "description": TEXT,
    "reason": TEXT,
    "text": TEXT,
    "note": TEXT,
    "notes": TEXT,
    # A secret's value (REST upload): multi-line is fine (an OTHER secret can be a note); its
    # own 4096-character limit is enforced by the secrets rules.
    "value": TextRule(max_length=4096, multiline=True, bidi=True),
}

_ID_NAME = re.compile(r"(^id$|Ids?$|^__typename$)")

_CONTROL_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_BIDI = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@functools.lru_cache(maxsize=1024)
def rule_for(name: str) -> TextRule:
    """The rule of a field, by its name (the last part of a dotted path). Remembered per name:
    the same few names come with every request (a board's 20 representations are 40)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in FIELD_RULES:
        return FIELD_RULES[leaf]
    if _ID_NAME.search(leaf):
        return ID
    return LINE


def check_text(field: str, value: str, rule: TextRule | None = None) -> str:
    """`value` if it keeps the policy of `field`; else BAD_USER_INPUT naming the field."""
    rule = rule or rule_for(field)
    if len(value) > rule.max_length:
        raise bad_input(f"{field} may be at most {rule.max_length} characters")
    if value.isascii() and value.isprintable():
        # Printable ASCII (every id, most text) holds no control character, surrogate or
        # bidirectional control: one scan in C instead of three regular expressions.
        return value
    control = _CONTROL_TEXT if rule.multiline else _CONTROL_LINE
    if control.search(value):
        raise bad_input(f"{field} must not contain control characters")
    if _SURROGATE.search(value):
        raise bad_input(f"{field} is not valid Unicode text")
    if not rule.bidi and _BIDI.search(value):
        raise bad_input(f"{field} must not contain bidirectional control characters")
    return value


def check_value(field: str, value: Any) -> None:
    """Every string inside a JSON-like value (dicts by key, lists item by item)."""
    if isinstance(value, str):
        check_text(field, value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            key = str(key)
            # The key is checked before it may appear in a message (its message built only
            # for a key that may fail: a printable ASCII id-length key cannot).
            if len(key) > ID.max_length or not (key.isascii() and key.isprintable()):
                check_text(f"a field name in {field or 'the input'}", key, ID)
            check_value(f"{field}.{key}" if field else key, item)
    elif isinstance(value, list | tuple):
        for item in value:
            check_value(field, item)


def audit_target_id(value: str) -> str:
    """A caller-typed id goes into an audit event only if it is a UUID (every Doorward id is):
    anything else may be junk or personal data someone typed there, which the audit client
    refuses outright (found by tests/fuzz: a refusal of `deactivateUser(id: "1000000")` became
    INTERNAL_SERVER_ERROR)."""
    try:
        return str(uuid.UUID(value)) if len(value) == 36 else ""
    except (ValueError, TypeError):
        return ""
