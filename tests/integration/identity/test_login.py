import pytest

from tests.integration.identity.conftest import (
    ADMIN_PASSWORD,
    CHANGE_PASSWORD,
    NEW_PASSWORD,
    USER_PASSWORD,
    create_staff,
    error_code,
    login,
    otp_now,
)

pytestmark = pytest.mark.integration


async def test_admin_logs_in_with_totp(running, org):
    no_code = await login(running, org.admin_email, ADMIN_PASSWORD)
    assert error_code(no_code) == "UNAUTHENTICATED"
    body = await login(
        running, org.admin_email, ADMIN_PASSWORD, otp_now(org.totp_secret, offset=30)
    )
    payload = body["data"]["login"]
    assert payload["passwordChangeRequired"] is False
    assert payload["mfaEnrollmentRequired"] is False
    assert payload["user"]["roles"] == ["ADMIN"]
    me = await running.gql("{ me { id email mfaEnabled } }", token=payload["accessToken"])
    assert me["data"]["me"] == {"id": org.admin_id, "email": org.admin_email, "mfaEnabled": True}


async def test_a_totp_code_is_good_once(running, org):
    code = otp_now(org.totp_secret, offset=30)
    first = await login(running, org.admin_email, ADMIN_PASSWORD, code)
    assert "errors" not in first, first
    replay = await login(running, org.admin_email, ADMIN_PASSWORD, code)
    assert error_code(replay) == "UNAUTHENTICATED"


async def test_initial_password_must_be_changed_and_restricted_token_does_nothing_else(
    running, org
):
    staff = await create_staff(running, org, ["TECHNICIAN"], [], log_in=False)
    first = (await login(running, staff.email, USER_PASSWORD))["data"]["login"]
    assert first["passwordChangeRequired"] is True
    restricted = first["accessToken"]
    # The restricted token: refused for everything but changePassword/enrollMfa/confirmMfa.
    for query in ("{ me { id } }", "{ regions { id } }", "{ users { id } }"):
        assert error_code(await running.gql(query, token=restricted)) == "FORBIDDEN"
    weak = await running.gql(
        CHANGE_PASSWORD, {"c": USER_PASSWORD, "n": "password1234"}, token=restricted
    )
    assert error_code(weak) == "BAD_USER_INPUT"
    assert "password1234" not in str(weak)
    wrong = await running.gql(
        CHANGE_PASSWORD, {"c": "not-my-password!", "n": NEW_PASSWORD}, token=restricted
    )
    assert error_code(wrong) == "BAD_USER_INPUT"
    done = await running.gql(
        CHANGE_PASSWORD, {"c": USER_PASSWORD, "n": NEW_PASSWORD}, token=restricted
    )
    assert done["data"]["changePassword"] is True
    # Every session ended with the change; the old password is dead, the new one works.
    assert error_code(await running.gql("{ me { id } }", token=restricted)) in {
        "UNAUTHENTICATED",
        "FORBIDDEN",
    }
    assert error_code(await login(running, staff.email, USER_PASSWORD)) == "UNAUTHENTICATED"
    full = (await login(running, staff.email, NEW_PASSWORD))["data"]["login"]
    assert full["passwordChangeRequired"] is False and full["mfaEnrollmentRequired"] is False
    me = await running.gql("{ me { id status } }", token=full["accessToken"])
    assert me["data"]["me"] == {"id": staff.id, "status": "ACTIVE"}


ENROLL = "mutation { enrollMfa { secret otpauthUri } }"
CONFIRM = "mutation($otp: String!) { confirmMfa(otp: $otp) { recoveryCodes } }"


async def test_mfa_enrolment_required_for_admins_then_recovery_codes_work_once(running, org):
    staff = await create_staff(running, org, ["ADMIN"], [])  # password already changed
    first = (await login(running, staff.email, NEW_PASSWORD))["data"]["login"]
    assert first["mfaEnrollmentRequired"] is True
    restricted = first["accessToken"]
    assert error_code(await running.gql("{ me { id } }", token=restricted)) == "FORBIDDEN"
    enrolment = (await running.gql(ENROLL, token=restricted))["data"]["enrollMfa"]
    assert enrolment["otpauthUri"].startswith("otpauth://totp/")
    secret = enrolment["secret"]
    bad = await running.gql(CONFIRM, {"otp": "000000"}, token=restricted)
    assert error_code(bad) == "BAD_USER_INPUT"
    codes = (await running.gql(CONFIRM, {"otp": otp_now(secret)}, token=restricted))["data"][
        "confirmMfa"
    ]["recoveryCodes"]
    assert len(codes) == 10
    # The secret is not stored in clear.
    from sqlalchemy import text

    async with running.identity.db.unit_of_work() as session:
        stored = (
            await session.execute(
                text("select mfa_secret_enc from users where id = :id"), {"id": staff.id}
            )
        ).scalar_one()
        hashes = (
            (
                await session.execute(
                    text("select code_hash from recovery_codes where user_id = :id"),
                    {"id": staff.id},
                )
            )
            .scalars()
            .all()
        )
    assert secret.encode() not in bytes(stored)
    assert not set(codes) & set(hashes)

    with_code = await login(running, staff.email, NEW_PASSWORD, otp_now(secret, offset=30))
    assert with_code["data"]["login"]["mfaEnrollmentRequired"] is False
    recovery = await login(running, staff.email, NEW_PASSWORD, codes[0].lower())
    assert "errors" not in recovery, recovery
    again = await login(running, staff.email, NEW_PASSWORD, codes[0])
    assert error_code(again) == "UNAUTHENTICATED"


async def test_unknown_email_and_wrong_password_look_the_same(running, org):
    unknown = await login(
        running, "nobody-here@example.com", "whatever-password-1", source_ip="198.51.100.7"
    )
    wrong = await login(running, org.admin_email, "whatever-password-1", source_ip="198.51.100.7")
    assert error_code(unknown) == error_code(wrong) == "UNAUTHENTICATED"
    assert unknown["errors"][0]["message"] == wrong["errors"][0]["message"]
    assert "nobody-here" not in str(unknown)


async def test_brute_force_on_one_account_is_slowed(running, org):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    ip = "203.0.113.9"
    for _ in range(3):  # the free failures of the test settings
        body = await login(running, staff.email, "guess-password-xyz", source_ip=ip)
        assert error_code(body) == "UNAUTHENTICATED"
    # Blocked now: even the right password is refused while the block lasts.
    blocked = await login(running, staff.email, NEW_PASSWORD, source_ip="203.0.113.10")
    assert error_code(blocked) == "RATE_LIMITED"
    assert staff.email not in str(blocked)
    # An unknown email is throttled exactly the same way (no hint that it does not exist).
    ghost = "ghost-account@example.com"
    for _ in range(3):
        await login(running, ghost, "guess-password-xyz", source_ip="203.0.113.11")
    assert (
        error_code(await login(running, ghost, "guess", source_ip="203.0.113.12")) == "RATE_LIMITED"
    )
    # The delay grows: the next failure after the block blocks longer.
    import asyncio

    await asyncio.sleep(1.1)
    await login(running, staff.email, "guess-password-xyz", source_ip=ip)
    await asyncio.sleep(1.1)
    assert error_code(await login(running, staff.email, NEW_PASSWORD)) == "RATE_LIMITED"
    await asyncio.sleep(1.0)
    ok = await login(running, staff.email, NEW_PASSWORD)
    assert "errors" not in ok, ok


async def test_brute_force_from_one_address_is_slowed(running, org):
    ip = "192.0.2.77"
    for n in range(25):
        await login(running, f"spray-{n}@example.com", "guess-password-xyz", source_ip=ip)
    staff_login = await login(
        running, org.admin_email, ADMIN_PASSWORD, otp_now(org.totp_secret), source_ip=ip
    )
    assert error_code(staff_login) == "RATE_LIMITED"


async def test_login_events_are_audited_without_the_email(running, org):
    from tests.integration.identity.conftest import eventually

    await login(running, org.admin_email, "wrong-password-123", source_ip="198.51.100.20")
    # The org fixture's login (ALLOWED) and this one (DENIED).
    await eventually(lambda: len(running.audit.of("auth.login", org.id)) >= 2)
    events = running.audit.of("auth.login", org.id)
    outcomes = {e.outcome for e in events}
    from doorward.audit.v1 import audit_pb2

    assert audit_pb2.ALLOWED in outcomes and audit_pb2.DENIED in outcomes
    denied = [e for e in events if e.outcome == audit_pb2.DENIED]
    assert denied[0].actor_id == org.admin_id
    for event in running.audit.events:
        assert org.admin_email not in str(event)
        assert "@" not in str(event)
