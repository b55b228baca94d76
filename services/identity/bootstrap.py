"""Create an organisation and its first ADMIN (`doorward bootstrap`). Refuses to run twice for
the same organisation. When the organisation requires MFA for admins (the default), the admin
is created with MFA already enrolled and the TOTP secret is returned once, to be printed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from doorward_kit.auth import Role
from doorward_kit.db import Database, run_migrations_async
from doorward_kit.errors import bad_input, conflict
from services.identity.models import Organisation
from services.identity.repository import Repository
from services.identity.runtime import build_keys, build_service
from services.identity.service import mfa
from services.identity.service.identity import DEFAULT_MFA_ROLES, AuditSink
from services.identity.settings import IdentitySettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True)
class BootstrapResult:
    org_id: str
    user_id: str
    totp_secret: str | None
    # One-time codes for when the authenticator is lost (only with totp_secret); shown once.
    recovery_codes: list[str] = field(default_factory=list)


async def bootstrap(
    db: Database,
    org_name: str,
    admin_email: str,
    password: str,
    *,
    settings: IdentitySettings,
    audit: AuditSink | None = None,
    migrate: bool = True,
) -> BootstrapResult:
    name = org_name.strip()
    if not name or len(name) > 200:
        raise bad_input("the organisation name must have 1 to 200 characters")
    if migrate:
        await run_migrations_async(MIGRATIONS, db.engine.url.render_as_string(hide_password=False))
    keys = await asyncio.to_thread(build_keys, settings)
    service = build_service(settings, keys, audit)
    try:
        async with db.unit_of_work() as session:
            repo = Repository(session)
            if await repo.org_by_name(name) is not None:
                raise conflict("this organisation has already been bootstrapped")
            org = Organisation(name=name, mfa_required_roles=list(DEFAULT_MFA_ROLES))
            await repo.add_org(org)
            secret = mfa.new_secret() if Role.ADMIN.value in org.mfa_required_roles else None
            admin = await service.add_user(
                repo,
                org_id=org.id,
                email=admin_email,
                display_name="Administrator",
                roles=[Role.ADMIN.value],
                region_ids=[],
                password=password,
                # The admin chose this password just now.
                password_change_required=False,
                mfa_secret=secret,
            )
            codes = mfa.new_recovery_codes() if secret else []
            if codes:
                await repo.replace_recovery_codes(
                    org.id, admin.id, [mfa.hash_recovery_code(c) for c in codes]
                )
            await service.audit(
                session,
                org_id=org.id,
                actor_id=admin.id,
                action="org.bootstrap",
                outcome="ALLOWED",
                target_type="User",
                target_id=admin.id,
                details={"roles": Role.ADMIN.value, "mfa": "totp" if secret else "none"},
            )
    except IntegrityError:
        # Two bootstraps racing for the same name: the unique constraint decides.
        raise conflict("this organisation has already been bootstrapped") from None
    return BootstrapResult(
        org_id=org.id, user_id=admin.id, totp_secret=secret, recovery_codes=codes
    )
