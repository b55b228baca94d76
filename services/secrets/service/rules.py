"""Pure rules: ids, tokens, windows, job re-checks. No I/O, no framework imports."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from doorward_kit.errors import DoorwardError, ErrorCode, bad_input

KINDS = frozenset({"DOOR_CODE", "ALARM_CODE", "KEY_SAFE", "GATE_CODE", "OTHER"})
ACTIVE_STATUSES = frozenset({"DISPATCHED", "IN_PROGRESS"})
MAX_LABEL_LENGTH = 200
MAX_VALUE_LENGTH = 4096
MAX_BREAK_GLASS_REASON = 500

REVEAL_PREFIX = "dwr_"
UPLOAD_PREFIX = "dwu_"

# Ids travel into Vault paths and key names: only plain id characters, never "/" or "..".
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_REASON = re.compile(r"^[a-z][a-z_]{0,39}$")
_CUSTOMER_KEYS = uuid.UUID("6f1d1a52-4f0e-4c55-9d8e-0d00a7d5ec12")


def require_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise bad_input(f"{what} must be an id")
    return value


def uuid_or_empty(value: str) -> str:
    """Ids from a URL or a caller go into refusal events only if they are real UUIDs: anything
    else could be junk, or personal data someone typed there."""
    try:
        return str(uuid.UUID(value)) if len(value) == 36 else ""
    except (ValueError, TypeError):
        return ""


def require_kind(kind: str) -> str:
    if kind not in KINDS:
        raise bad_input("kind must be one of " + ", ".join(sorted(KINDS)))
    return kind


def require_label(label: str) -> str:
    label = (label or "").strip()
    if not label or len(label) > MAX_LABEL_LENGTH:
        raise bad_input(f"label must be 1 to {MAX_LABEL_LENGTH} characters")
    return label


def require_value(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_VALUE_LENGTH:
        raise bad_input(f"value must be a string of 1 to {MAX_VALUE_LENGTH} characters")
    return value


def revoke_reason(reason: str) -> str:
    """Revocation reasons go into audit details: a short enum-like word or 'other'."""
    reason = (reason or "").strip().lower()
    return reason if _REASON.match(reason) else "other"


def customer_key_name(org_id: str, customer_id: str) -> str:
    """The transit key of one customer: opaque, stable, and different in every org."""
    require_id(org_id, "org_id")
    require_id(customer_id, "customer_id")
    return "cust-" + uuid.uuid5(_CUSTOMER_KEYS, f"{org_id}/{customer_id}").hex


def new_kv_path(org_id: str) -> str:
    import secrets

    return f"orgs/{require_id(org_id, 'org_id')}/secrets/{secrets.token_hex(16)}"


# ---- tokens ------------------------------------------------------------------------------
# An upload/reveal token is a prefix plus the wrapping token sealed by transit (derived key,
# context = slot/grant id): useless at Vault directly and useless for any other grant. The
# database keeps only its SHA-256.


def encode_token(prefix: str, sealed: str) -> str:
    return prefix + base64.urlsafe_b64encode(sealed.encode()).decode().rstrip("=")


def decode_token(prefix: str, token: str) -> str | None:
    if not isinstance(token, str) or not token.startswith(prefix) or len(token) > 2048:
        return None
    body = token[len(prefix) :]
    if not body:
        return None
    try:
        padded = body + "=" * (-len(body) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored_hash)


# ---- windows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobContext:
    """What workorders says about a job right now (GetAccessContext)."""

    work_order_id: str
    org_id: str
    site_id: str
    region_id: str
    assignee_id: str
    status: str
    window_start: datetime | None
    window_end: datetime | None
    secret_ref_ids: frozenset[str]


def outside_window() -> DoorwardError:
    return DoorwardError(
        ErrorCode.OUTSIDE_ACCESS_WINDOW, "the work order is outside its access window"
    )


def job_denial(
    job: JobContext | None,
    *,
    user_id: str,
    secret_ref_id: str,
    site_id: str,
    now: datetime,
) -> str | None:
    """Why this user may not (any more) get this secret for this job; None if they may."""
    if job is None:
        return "work_order_not_found"
    if not job.assignee_id or job.assignee_id != user_id:
        return "not_assignee"
    if job.status not in ACTIVE_STATUSES:
        return "status_" + job.status.lower() if job.status else "status_unknown"
    if secret_ref_id not in job.secret_ref_ids and site_id != job.site_id:
        return "secret_not_attached"
    if job.window_start is None or job.window_end is None:
        return "outside_window"
    if not job.window_start <= now < job.window_end:
        return "outside_window"
    return None


def grant_lifetime(
    now: datetime,
    window_start: datetime | None,
    window_end: datetime | None,
    *,
    ttl: int,
) -> int:
    """Whole seconds the grant may live: at most `ttl`, never past the window's end.
    Raises OUTSIDE_ACCESS_WINDOW when now is outside [start, end)."""
    if window_start is None or window_end is None or not window_start <= now < window_end:
        raise outside_window()
    seconds = math.floor(min(float(ttl), (window_end - now).total_seconds()))
    if seconds < 1:
        raise outside_window()
    return seconds


def intersect(
    a: tuple[datetime | None, datetime | None], b: tuple[datetime | None, datetime | None]
) -> tuple[datetime | None, datetime | None]:
    """The narrower of two windows (None on either side means unknown, i.e. closed)."""
    if None in a or None in b:
        return None, None
    start = max(a[0], b[0])  # type: ignore[type-var]
    end = min(a[1], b[1])  # type: ignore[type-var]
    return start, end


def expiry(now: datetime, seconds: int) -> datetime:
    return now + timedelta(seconds=seconds)
