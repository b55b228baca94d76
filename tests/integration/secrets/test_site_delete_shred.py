"""Issue 14: an ADMIN's deletion of a site's secrets (DeleteSiteSecrets, which eraseCustomer
calls for each of the customer's sites) writes a pseudonymous shred-ledger entry per door code
(kind secret_delete) before it destroys the code's Vault data, so a restore of a backup taken
before the deletion cannot bring the code back. Before, the codes went without an entry of
their own: only the customer's erasure entry, written after every site with the key, covered
them, and an erasure that stopped in between left destroyed codes the ledger did not know.

The real secrets service (called as workorders calls it, with the ADMIN's token) and the real
`doorward backup restore` ledger replay; the backup and restore of the door codes are as in
test_secret_retention_shred.py (dev-mode OpenBao: no raft snapshot)."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import hvac.exceptions
import pytest
from doorward.secrets.v1 import secrets_pb2
from sqlalchemy import select

from deploy.backup.restore import carry_ledger, replay
from doorward_kit import shred_ledger
from doorward_kit.auth import Role
from services.secrets.models import SecretRef
from tests.integration.secrets.conftest import SecretsHarness
from tests.integration.secrets.shred_replay import (
    Databases,
    Vault,
    back_up,
    own_ledger,
    put_back,
    reveals,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

FRONT_CODE, BACK_CODE, OTHER_CODE = "3691#", "7412#", "8520#"


@pytest.fixture
def ledger(secrets_svc: SecretsHarness) -> Iterator[Path]:
    with own_ledger(secrets_svc) as path:
        yield path


async def _delete_site(h: SecretsHarness, org_id: str, site: str, role: Role) -> int:
    """DeleteSiteSecrets as workorders' eraseCustomer sends it: its certificate plus the
    token of the user it acts for."""
    reply = await h.call(
        "DeleteSiteSecrets",
        secrets_pb2.DeleteSiteSecretsRequest(site_id=site),
        h.token(str(uuid.uuid4()), org_id, (role,)),
    )
    return int(reply.deleted)


async def test_a_deleted_sites_door_codes_stay_destroyed_after_a_restore(
    secrets_svc: SecretsHarness, ledger: Path, postgres: Any, openbao: Any
) -> None:
    h = secrets_svc
    org_id = str(uuid.uuid4())
    front_ref, site = await h.new_secret(org_id, FRONT_CODE)
    back_ref, _ = await h.new_secret(org_id, BACK_CODE, site_id=site)
    other_ref, other_site = await h.new_secret(org_id, OTHER_CODE)
    kv_mount = h.service.vault.kv_mount
    kv = openbao.client().secrets.kv.v2

    # The backup: both door codes' KV data (as the raft snapshot holds it) and their rows.
    backups = [await back_up(h, openbao, ref) for ref in (front_ref, back_ref)]

    # Deny by default: a dispatcher cannot delete the site's secrets, and nothing is written.
    with pytest.raises(grpc.aio.AioRpcError):
        await _delete_site(h, org_id, site, Role.DISPATCHER)
    assert not ledger.exists()
    assert await reveals(h, org_id, front_ref, site) == FRONT_CODE

    assert await _delete_site(h, org_id, site, Role.ADMIN) == 2

    # Ledger first: one secret_delete entry per code, ids and the version, nothing else.
    entries = list(shred_ledger.entries(ledger))
    assert sorted(
        (e.kind, e.org_id, e.site_id, e.secret_ref_id, e.version, e.customer_id) for e in entries
    ) == sorted(
        (shred_ledger.SECRET_DELETE, org_id, site, ref, 1, "") for ref in (front_ref, back_ref)
    )
    text = ledger.read_text()
    for leak in (FRONT_CODE, BACK_CODE, "Back door", *(b.kv_path for b in backups)):
        assert leak not in text
    for backup in backups:
        with pytest.raises(hvac.exceptions.InvalidPath):
            kv.read_secret_metadata(path=backup.kv_path, mount_point=kv_mount)
    assert await reveals(h, org_id, front_ref, site) is None
    # The audit event still says who and why (the ledger does not: ids only).
    deleted = await h.audit.wait_for(org_id, "secret.delete", reason="site_deleted")
    assert deleted.actor_id and deleted.secret_ref_id in (front_ref, back_ref)

    # The restore: the Vault data and the rows as the backup had them. Without the ledger's
    # replay the deleted site's door codes would reveal again: the gap this closes.
    for backup in backups:
        await put_back(h, openbao, postgres, backup)
    assert await reveals(h, org_id, front_ref, site) == FRONT_CODE
    assert await reveals(h, org_id, back_ref, site) == BACK_CODE
    # A grant the restored copy holds (issued before the replay, not yet used).
    waiting_job = await h.job(org_id, back_ref, site)
    waiting = await h.grant(waiting_job, back_ref)

    said: list[str] = []
    databases, vault = Databases(postgres, h.db_url), Vault(openbao)
    replayed = await asyncio.to_thread(replay, ledger, databases, vault, said.append)
    assert replayed.entries == 2 and replayed.site_secrets == 2
    assert replayed.keys == 0 and replayed.customers == 0 and replayed.replayed == []
    assert sorted(e.secret_ref_id for e in replayed.retired) == sorted((front_ref, back_ref))
    assert {e.kind for e in replayed.retired} == {shred_ledger.SECRET_DELETE}

    # After the replay: the Vault data is gone, the references deleted, no grant reveals them.
    for backup in backups:
        with pytest.raises(hvac.exceptions.InvalidPath):
            kv.read_secret_metadata(path=backup.kv_path, mount_point=kv_mount)
    async with h.service.db.unit_of_work() as session:
        rows = (await session.execute(select(SecretRef).where(SecretRef.site_id == site))).scalars()
        assert all(row.deleted_at is not None for row in rows)
    assert (await h.reveal(waiting, waiting_job.token)).status_code != 200
    assert await reveals(h, org_id, front_ref, site) is None
    assert await reveals(h, org_id, back_ref, site) is None
    # Another site's code of the same organisation still reveals.
    assert await reveals(h, org_id, other_ref, other_site) == OTHER_CODE

    # Idempotent: a second replay changes nothing and destroying the gone paths is harmless.
    again = await asyncio.to_thread(replay, ledger, databases, vault, said.append)
    assert again.entries == 2 and again.site_secrets == 0 and again.retired == []
    assert await reveals(h, org_id, front_ref, site) is None
    assert await reveals(h, org_id, other_ref, other_site) == OTHER_CODE

    # The restored stack's own ledger gets the entries once, kind and ids intact.
    target = Path(tempfile.mkdtemp(prefix="doorward-ledger-")) / "own.jsonl"
    assert carry_ledger(ledger, target) == 2
    assert carry_ledger(ledger, target) == 0
    assert list(shred_ledger.entries(target)) == entries


async def test_another_organisation_cannot_delete_or_replay_a_sites_secrets(
    secrets_svc: SecretsHarness, ledger: Path, postgres: Any, openbao: Any
) -> None:
    """Both ways in: another organisation's ADMIN deleting the site (the organisation comes
    from the token, so nothing of this one is found, nothing written), and a ledger entry that
    names the real site and reference under the wrong organisation, or the right organisation
    and another site (a corrupt or forged line): the replay leaves the code alone."""
    h = secrets_svc
    org_id, intruder = str(uuid.uuid4()), str(uuid.uuid4())
    ref_id, site = await h.new_secret(org_id, OTHER_CODE)

    assert await _delete_site(h, intruder, site, Role.ADMIN) == 0
    assert list(shred_ledger.entries(ledger)) == []
    assert await reveals(h, org_id, ref_id, site) == OTHER_CODE

    kind = shred_ledger.SECRET_DELETE
    shred_ledger.append_secret(ledger, intruder, site, ref_id, 1, kind=kind)
    shred_ledger.append_secret(ledger, org_id, str(uuid.uuid4()), ref_id, 1, kind=kind)
    result = await asyncio.to_thread(
        replay, ledger, Databases(postgres, h.db_url), Vault(openbao), lambda _: None
    )
    assert result.entries == 2 and result.site_secrets == 0 and result.retired == []
    assert await reveals(h, org_id, ref_id, site) == OTHER_CODE
