"""identity's access decisions as `doorward.access.decide` spans: logins (allowed, wrong
password, code missing), never the email; the account's pseudonym only when it exists."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from doorward_kit.pseudonym import pseudonym
from tests.fixtures.spans import memory_spans, pseudonym_key_set
from tests.integration.identity.conftest import ADMIN_PASSWORD, error_code, login, otp_now

pytestmark = pytest.mark.integration


@pytest.fixture
def spans(running) -> Iterator[InMemorySpanExporter]:
    with pseudonym_key_set(b"i" * 32):
        yield memory_spans("identity-tests")


def _logins(memory: InMemorySpanExporter) -> list[ReadableSpan]:
    return [
        s
        for s in memory.get_finished_spans()
        if s.name == "doorward.access.decide"
        and (s.attributes or {}).get("doorward.access.action") == "auth.login"
    ]


async def test_logins_are_decisions(running, org, spans) -> None:
    wrong = await login(running, org.admin_email, "not the password at all")
    assert error_code(wrong) == "UNAUTHENTICATED"
    no_code = await login(running, org.admin_email, ADMIN_PASSWORD)
    assert error_code(no_code) == "UNAUTHENTICATED"
    stranger = await login(running, "nobody-here@example.com", "whatever-password")
    assert error_code(stranger) == "UNAUTHENTICATED"
    good = await login(
        running, org.admin_email, ADMIN_PASSWORD, otp_now(org.totp_secret, offset=30)
    )
    assert "errors" not in good, good

    seen = [dict(s.attributes or {}) for s in _logins(spans)]
    assert [(a["doorward.decision"], a["doorward.decision.reason"]) for a in seen] == [
        ("deny", "bad_credentials"),
        ("deny", "mfa_required"),
        ("deny", "bad_credentials"),
        ("allow", "authenticated"),
    ]
    admin = pseudonym(org.admin_id)
    assert [a.get("enduser.pseudo.id") for a in seen] == [admin, admin, None, admin]
    # The refused login's audit event is named; the email never appears.
    assert seen[0]["doorward.audit.event_id"]
    assert all(s.status.status_code is StatusCode.UNSET for s in _logins(spans))
    text = str([s.to_json() for s in spans.get_finished_spans()])
    assert org.admin_email not in text and "nobody-here" not in text


REFRESH = """
mutation($t: String!) { refresh(refreshToken: $t) { accessToken refreshToken user { id } } }"""


def _decisions(memory: InMemorySpanExporter, action: str) -> list[dict]:
    return [
        dict(s.attributes or {})
        for s in memory.get_finished_spans()
        if s.name == "doorward.access.decide"
        and (s.attributes or {}).get("doorward.access.action") == action
    ]


async def test_sign_in_denials_name_the_organisation_of_a_known_account_only(
    running, org, spans
) -> None:
    """T2: an auditor finds brute force on their organisation's accounts in
    traces(filter: {decision: DENY}): wrong passwords, the throttle that follows and a replayed
    refresh token name the organisation. An unknown email or an unknown refresh token never
    does (nothing tells whether an email has an account)."""
    from tests.integration.identity.conftest import new_org

    target = await new_org(running)  # a fresh account: its failure counter starts at zero
    for _ in range(running.settings.identity_login_free_failures_account + 1):
        await login(running, target.admin_email, "a wrong guess at the password")
    stranger = f"nobody-{target.id[:8]}@example.com"
    for _ in range(running.settings.identity_login_free_failures_account + 1):
        await login(running, stranger, "a wrong guess at the password")

    denied = [a for a in _decisions(spans, "auth.login") if a["doorward.decision"] == "deny"]
    known = [a for a in denied if a.get("enduser.pseudo.id") == pseudonym(target.admin_id)]
    unknown = [a for a in denied if "enduser.pseudo.id" not in a]
    assert {a["doorward.decision.reason"] for a in known} == {"bad_credentials", "rate_limited"}
    assert {a["doorward.decision.reason"] for a in unknown} == {"bad_credentials", "rate_limited"}
    assert all(a["doorward.org.id"] == target.id for a in known)
    assert all("doorward.org.id" not in a for a in unknown)

    # Refresh: a rotated token replayed names its organisation; a made-up one does not.
    signed_in = await login(
        running, org.admin_email, ADMIN_PASSWORD, otp_now(org.totp_secret, offset=30)
    )
    first = signed_in["data"]["login"]["refreshToken"]
    assert "errors" not in await running.gql(REFRESH, {"t": first})
    spans.clear()
    assert error_code(await running.gql(REFRESH, {"t": first})) == "UNAUTHENTICATED"
    assert error_code(await running.gql(REFRESH, {"t": "made-up-token"})) == "UNAUTHENTICATED"
    replay, made_up = _decisions(spans, "auth.refresh")
    assert (replay["doorward.decision.reason"], replay["doorward.org.id"]) == (
        "consumed",
        org.id,
    )
    assert made_up["doorward.decision.reason"] == "invalid_token"
    assert "doorward.org.id" not in made_up
