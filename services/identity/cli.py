"""`doorward bootstrap`: the body of the command (deploy/cli.py only declares it)."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Callable
from typing import TextIO

from pydantic import ValidationError

from doorward_kit.db import Database
from doorward_kit.errors import DoorwardError
from services.identity.bootstrap import bootstrap
from services.identity.service import mfa
from services.identity.settings import IdentitySettings


def read_password(stdin: TextIO = sys.stdin) -> str:
    """From a terminal: asked twice, without echo. Otherwise: the first line of stdin."""
    if stdin.isatty():
        first = getpass.getpass("Admin password: ")
        if getpass.getpass("Again: ") != first:
            raise ValueError("the two passwords differ")
        return first
    return stdin.readline().rstrip("\r\n")


async def _run(org: str, email: str, password: str, settings: IdentitySettings) -> list[str]:
    db = Database(settings.db_url, pool_size=2)
    try:
        result = await bootstrap(db, org, email, password, settings=settings)
    finally:
        await db.dispose()
    lines = [f"organisation id: {result.org_id}", f"admin user id:   {result.user_id}"]
    if result.totp_secret:
        lines += [
            f"TOTP secret:     {result.totp_secret}",
            f"otpauth URI:     {mfa.otpauth_uri(result.totp_secret, email)}",
            "recovery codes:  " + " ".join(result.recovery_codes),
            "Add the secret to an authenticator app and keep the recovery codes somewhere safe",
            "now: they are not shown again.",
        ]
    return lines


def run_bootstrap(
    org: str,
    admin_email: str,
    *,
    echo: Callable[[str], None],
    echo_err: Callable[[str], None],
    stdin: TextIO = sys.stdin,
) -> int:
    try:
        settings = IdentitySettings()  # type: ignore[call-arg]
    except ValidationError as error:
        names = sorted({"DOORWARD_" + str(e["loc"][0]).upper() for e in error.errors()})
        echo_err(f"error: set {', '.join(names)}")
        return 2
    try:
        password = read_password(stdin)
        lines = asyncio.run(_run(org, admin_email, password, settings))
    except (DoorwardError, ValueError) as error:
        message = error.message if isinstance(error, DoorwardError) else str(error)
        echo_err(f"error: {message}")
        return 1
    for line in lines:
        echo(line)
    return 0
