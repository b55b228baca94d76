"""No password, email, token or TOTP secret in any log line identity writes."""

import logging
import traceback

import pytest

from tests.integration.identity.conftest import (
    ADMIN_PASSWORD,
    create_staff,
    eventually,
    login,
    otp_now,
)

pytestmark = pytest.mark.integration


def _everything_logged(records):
    for record in records:
        yield record.getMessage()
        yield str(getattr(record, "fields", ""))
        if record.exc_info:
            yield "".join(traceback.format_exception(*record.exc_info))


async def test_logs_carry_no_personal_data_or_credentials(running, org, caplog):
    caplog.set_level(logging.DEBUG)
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    # The worst case: credentials written into the operation text instead of variables.
    inline = 'mutation {{ login(email: "{}", password: "{}") {{ accessToken }} }}'.format(
        org.admin_email,
        "Wrong-But-Secret-Passphrase",
    )
    await running.gql(inline)
    await login(running, org.admin_email, ADMIN_PASSWORD, otp_now(org.totp_secret, offset=30))
    await running.gql(
        f'mutation {{ refresh(refreshToken: "{staff.refresh_token}") {{ accessToken }} }}'
    )
    await running.gql(
        f'mutation {{ refresh(refreshToken: "{staff.refresh_token}") {{ accessToken }} }}'
    )
    await eventually(lambda: running.audit.of("auth.refresh.reuse", org.id))
    forbidden = [
        org.admin_email,
        staff.email,
        "Wrong-But-Secret-Passphrase",
        ADMIN_PASSWORD,
        org.totp_secret,
        staff.refresh_token,
        staff.token,
        org.admin_token,
    ]
    text = "\n".join(_everything_logged(caplog.records))
    for value in forbidden:
        assert value not in text
