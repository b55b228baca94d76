"""Issue 10, finding 7 (changePassword is not throttled).

Whoever holds a user's access token (a stolen one, or a session left open) could guess the
current password through changePassword without limit. Wrong current passwords now count like
failed logins, per account and per client address, and a blocked caller is refused before any
password is checked. Against the real identity service."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.identity import conftest as identity_fixtures
from tests.integration.identity.conftest import (
    CHANGE_PASSWORD,
    NEW_PASSWORD,
    create_staff,
    error_code,
    login,
)

pytestmark = pytest.mark.integration

identity_service = identity_fixtures.identity_service
running = identity_fixtures.running
org = identity_fixtures.org

NEXT_PASSWORD = "Another-Passphrase-Entirely"


async def change(running, token: str, current: str, new: str = NEXT_PASSWORD, ip: str = ""):
    return await running.gql(CHANGE_PASSWORD, {"c": current, "n": new}, token=token, source_ip=ip)


async def test_guessing_the_current_password_is_throttled_per_account(running, org):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    free = running.settings.identity_login_free_failures_account
    # The attack: guesses through a valid session, each from a different address.
    for n in range(free):
        wrong = await change(running, staff.token, f"guess-number-{n}-xyz", ip=f"192.0.2.{n + 1}")
        assert error_code(wrong) == "BAD_USER_INPUT"
    # Blocked now: refused before any check, even with the right password.
    blocked = await change(running, staff.token, NEW_PASSWORD, ip="192.0.2.100")
    assert error_code(blocked) == "RATE_LIMITED"
    assert NEW_PASSWORD not in str(blocked)
    # The honest user, once the (short, in the tests) block is over, changes it; which also
    # shows the refused call changed nothing (NEW_PASSWORD is still the current one).
    await asyncio.sleep(running.settings.identity_login_block_base_seconds + 0.2)
    done = await change(running, staff.token, NEW_PASSWORD, ip="192.0.2.100")
    assert done.get("data") and done["data"]["changePassword"] is True, done
    ok = await login(running, staff.email, NEXT_PASSWORD)
    assert "errors" not in ok, ok


async def test_guessing_from_one_address_is_throttled_across_accounts(running, org):
    free = running.settings.identity_login_free_failures_address
    ip = "198.51.100.150"
    victims = [await create_staff(running, org, ["TECHNICIAN"], []) for _ in range(free)]
    honest = await create_staff(running, org, ["TECHNICIAN"], [])
    # One guess per account (under every account's own limit), many accounts, one address.
    for victim in victims:
        assert error_code(await change(running, victim.token, "guess-xyz-123", ip=ip)) == (
            "BAD_USER_INPUT"
        )
    # Right away (the block is short in the tests): that address is refused for everyone.
    blocked = await change(running, honest.token, NEW_PASSWORD, ip=ip)
    assert error_code(blocked) == "RATE_LIMITED"
    # From anywhere else the same user changes the password as usual.
    done = await change(running, honest.token, NEW_PASSWORD, ip="198.51.100.151")
    assert done.get("data") and done["data"]["changePassword"] is True, done


async def test_an_honest_typo_is_no_lockout(running, org):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    typo = await change(running, staff.token, "Changed-Passphrase-Of-Mne", ip="203.0.113.150")
    assert error_code(typo) == "BAD_USER_INPUT"
    done = await change(running, staff.token, NEW_PASSWORD, ip="203.0.113.150")
    assert done["data"]["changePassword"] is True, done
