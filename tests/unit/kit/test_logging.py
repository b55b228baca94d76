import json
import logging

import pytest

from doorward_kit.logging import REDACTED, JsonFormatter, redact, register_secret

pytestmark = pytest.mark.unit


def test_bearer_tokens_and_jwts_are_redacted():
    jwt_like = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
    text = redact(f"header Authorization: Bearer abc.def.ghi and {jwt_like}")
    assert "abc.def.ghi" not in text
    assert jwt_like not in text


def test_vault_tokens_are_redacted():
    assert "hvs.CAESIJ" not in redact("token hvs.CAESIJabcdefghijklmnopqrstu was used")


def test_key_value_pairs_for_sensitive_names_are_redacted():
    text = redact('{"password": "hunter2hunter2", "revealToken": "r-123", "label": "front door"}')
    assert "hunter2hunter2" not in text
    assert "r-123" not in text
    assert "front door" in text


def test_registered_values_are_redacted_anywhere():
    register_secret("canary-7f3a9c1e")
    assert "canary-7f3a9c1e" not in redact("the value canary-7f3a9c1e leaked")
    assert REDACTED in redact("the value canary-7f3a9c1e leaked")


def test_json_formatter_redacts_message_and_fields():
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "login with %s", ("Bearer xyz123",), None
    )
    record.fields = {"password": "s3cret-s3cret"}
    line = JsonFormatter("test").format(record)
    parsed = json.loads(line)
    assert parsed["service"] == "test"
    assert "xyz123" not in line
    assert "s3cret-s3cret" not in line
