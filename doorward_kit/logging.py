"""JSON logs on stderr, with a redaction filter as the last line of defence.

Code must not log secrets in the first place; the filter catches what slips: bearer tokens,
JWTs, Vault tokens, and any value registered at run time (e.g. the internal token).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

REDACTED = "[REDACTED]"

_PATTERNS: list[re.Pattern[str]] = [
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # JWT
    re.compile(r"\b(?:hvs|hvb|hvr|s|b|r)\.[A-Za-z0-9]{20,}\b"),  # Vault/OpenBao tokens
    re.compile(
        r"(?i)(\"?(?:password|passwd|secret|token|value|otp|uploadToken|revealToken|"
        r"refreshToken|accessToken|authorization|phone|email)\"?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
    ),
]
_known_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Redact this exact value from every log line from now on (long values only)."""
    if value and len(value) >= 8:
        _known_secrets.add(value)


def redact(text: str) -> str:
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


_SENSITIVE_KEYS = re.compile(
    r"(?i)password|passwd|secret|token|value|otp|authorization|phone|email|address"
)


def _redact_fields(fields: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in fields.items():
        if _SENSITIVE_KEYS.search(key):
            clean[key] = REDACTED
        elif isinstance(value, str):
            clean[key] = redact(value)
        else:
            clean[key] = value
    return clean


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        # Redact each string before encoding so the line stays valid JSON.
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(_redact_fields(extra))
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library loggers that would otherwise print request lines with query strings.
    for noisy in ("uvicorn.access", "httpx", "hvac", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
