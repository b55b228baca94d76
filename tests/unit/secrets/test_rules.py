"""Pure rules of the secrets service: windows, job re-checks, tokens, names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from doorward_kit.errors import DoorwardError, ErrorCode
from services.secrets.service import rules
from services.secrets.service.rules import JobContext

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def job(**changes) -> JobContext:
    fields = {
        "work_order_id": "wo-1",
        "org_id": "org-1",
        "site_id": "site-1",
        "region_id": "region-1",
        "assignee_id": "tech-1",
        "status": "DISPATCHED",
        "window_start": NOW - timedelta(minutes=30),
        "window_end": NOW + timedelta(hours=1),
        "secret_ref_ids": frozenset({"ref-1"}),
    }
    fields.update(changes)
    return JobContext(**fields)


def deny(
    context: JobContext | None, user: str = "tech-1", ref: str = "ref-1", site: str = "x"
) -> str | None:
    return rules.job_denial(context, user_id=user, secret_ref_id=ref, site_id=site, now=NOW)


def test_assignee_of_a_dispatched_job_in_its_window_is_allowed() -> None:
    assert deny(job()) is None
    assert deny(job(status="IN_PROGRESS")) is None
    # A secret of the job's site counts as the job's even if not attached explicitly.
    assert deny(job(), ref="ref-2", site="site-1") is None


@pytest.mark.parametrize(
    ("context", "user", "reason"),
    [
        (None, "tech-1", "work_order_not_found"),
        (job(), "tech-2", "not_assignee"),
        (job(assignee_id=""), "", "not_assignee"),
        (job(status="SCHEDULED"), "tech-1", "status_scheduled"),
        (job(status="DRAFT"), "tech-1", "status_draft"),
        (job(status="COMPLETED"), "tech-1", "status_completed"),
        (job(status="CANCELLED"), "tech-1", "status_cancelled"),
        (job(window_start=NOW + timedelta(seconds=1)), "tech-1", "outside_window"),
        (job(window_end=NOW), "tech-1", "outside_window"),
        (job(window_start=None), "tech-1", "outside_window"),
    ],
)
def test_everybody_else_and_every_other_moment_is_refused(context, user, reason) -> None:
    assert deny(context, user=user) == reason


def test_unattached_secret_of_another_site_is_refused() -> None:
    assert deny(job(), ref="ref-2", site="site-2") == "secret_not_attached"


def test_grant_lifetime_never_passes_the_window_end() -> None:
    start, end = NOW - timedelta(minutes=1), NOW + timedelta(seconds=90)
    assert rules.grant_lifetime(NOW, start, end, ttl=900) == 90
    assert rules.grant_lifetime(NOW, start, NOW + timedelta(hours=5), ttl=900) == 900
    for window in ((NOW + timedelta(seconds=1), end), (start, NOW), (None, end), (start, None)):
        with pytest.raises(DoorwardError) as refused:
            rules.grant_lifetime(NOW, *window, ttl=900)
        assert refused.value.code is ErrorCode.OUTSIDE_ACCESS_WINDOW
    with pytest.raises(DoorwardError):
        rules.grant_lifetime(NOW, start, NOW + timedelta(milliseconds=500), ttl=900)


def test_intersect_takes_the_narrower_window() -> None:
    a = (NOW - timedelta(hours=2), NOW + timedelta(hours=2))
    b = (NOW - timedelta(hours=1), NOW + timedelta(hours=3))
    assert rules.intersect(a, b) == (NOW - timedelta(hours=1), NOW + timedelta(hours=2))
    assert rules.intersect(a, (None, NOW)) == (None, None)


def test_tokens_round_trip_and_are_checked_by_hash() -> None:
    token = rules.encode_token(rules.REVEAL_PREFIX, "vault:v1:abc+/=")
    assert token.startswith("dwr_")
    assert rules.decode_token(rules.REVEAL_PREFIX, token) == "vault:v1:abc+/="
    assert rules.decode_token(rules.UPLOAD_PREFIX, token) is None
    assert rules.decode_token(rules.REVEAL_PREFIX, "dwr_%%%") is None
    stored = rules.token_hash(token)
    assert len(stored) == 64 and token not in stored
    assert rules.token_matches(token, stored)
    assert not rules.token_matches(token + "x", stored)


def test_ids_that_reach_vault_paths_are_plain() -> None:
    assert rules.require_id("5f0c-AB_1", "x") == "5f0c-AB_1"
    for bad in ("", "../x", "a/b", "a b", "x" * 65, "-lead"):
        with pytest.raises(DoorwardError) as refused:
            rules.require_id(bad, "site_id")
        assert refused.value.code is ErrorCode.BAD_USER_INPUT
    path = rules.new_kv_path("org-1")
    assert path.startswith("orgs/org-1/secrets/") and len(path.rsplit("/", 1)[1]) == 32
    assert rules.new_kv_path("org-1") != path


def test_customer_keys_are_opaque_stable_and_per_org() -> None:
    name = rules.customer_key_name("org-1", "cust-1")
    assert name.startswith("cust-") and "org-1" not in name
    assert name == rules.customer_key_name("org-1", "cust-1")
    assert name != rules.customer_key_name("org-2", "cust-1")


def test_inputs_are_validated_without_echo() -> None:
    assert rules.require_kind("GATE_CODE") == "GATE_CODE"
    with pytest.raises(DoorwardError):
        rules.require_kind("PIN")
    assert rules.require_label("  Front gate ") == "Front gate"
    with pytest.raises(DoorwardError):
        rules.require_label(" ")
    with pytest.raises(DoorwardError) as refused:
        rules.require_value("x" * 5000)
    assert "xxxx" not in refused.value.message
    with pytest.raises(DoorwardError):
        rules.require_value(1234)


def test_revoke_reasons_are_short_words() -> None:
    assert rules.revoke_reason("Completed") == "completed"
    assert rules.revoke_reason("call +49 170 1234567") == "other"
    assert rules.revoke_reason("") == "other"


def test_only_uuids_reach_refusal_events() -> None:
    assert rules.uuid_or_empty("6f1d1a52-4f0e-4c55-9d8e-0d00a7d5ec12") == (
        "6f1d1a52-4f0e-4c55-9d8e-0d00a7d5ec12"
    )
    for junk in ("+4917012345678", "x", "", "6f1d1a524f0e4c559d8e0d00a7d5ec12"):
        assert rules.uuid_or_empty(junk) == ""
