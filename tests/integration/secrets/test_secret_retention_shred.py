"""Issue 14: the retention of site secrets (RetireSiteSecrets) writes a pseudonymous
shred-ledger entry (kind secret_retention) before it destroys a door code's Vault data, so a
restore of a backup taken before the retirement cannot bring the code back.

The real secrets service (its Vault, its database, its grants and reveal endpoint) and the real
`doorward backup restore` ledger replay. The test's OpenBao runs in dev mode (no raft snapshot),
so the "backup" of the door code is its KV data read with the root token and the "restore" puts
it and the reference's row back as they were: the state a restored archive starts from."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac.exceptions
import pytest
from doorward.secrets.v1 import secrets_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select

from deploy.backup.restore import carry_ledger, replay
from doorward_kit import shred_ledger
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

DAY = timedelta(days=1)
RETIRED_CODE, FRESH_CODE, OTHER_CODE = "2580#", "1379#", "4646#"


@pytest.fixture
def ledger(secrets_svc: SecretsHarness) -> Iterator[Path]:
    with own_ledger(secrets_svc) as path:
        yield path


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


async def _aged(h: SecretsHarness, ref_id: str, age: timedelta) -> None:
    async with h.service.db.unit_of_work() as session:
        ref = await session.get(SecretRef, ref_id)
        assert ref is not None
        ref.updated_at = datetime.now(UTC) - age


async def test_a_retired_door_code_stays_destroyed_after_a_restore(
    secrets_svc: SecretsHarness, ledger: Path, postgres: Any, openbao: Any
) -> None:
    h = secrets_svc
    org_id = str(uuid.uuid4())
    retired_ref, site = await h.new_secret(org_id, RETIRED_CODE)
    fresh_ref, _ = await h.new_secret(org_id, FRESH_CODE, site_id=site)
    other_ref, other_site = await h.new_secret(org_id, OTHER_CODE)
    # Both old enough to retire; only `site` is named (workorders decides which are stale).
    for ref_id in (retired_ref, other_ref):
        await _aged(h, ref_id, 800 * DAY)
    await _aged(h, fresh_ref, 10 * DAY)
    kv_mount = h.service.vault.kv_mount
    kv = openbao.client().secrets.kv.v2

    # The backup: the door code's KV data (as the raft snapshot holds it) and its row.
    backup = await back_up(h, openbao, retired_ref)
    kv_path = backup.kv_path
    assert backup.version == 1

    reply = await h.call(
        "RetireSiteSecrets",
        secrets_pb2.RetireSiteSecretsRequest(
            org_id=org_id, before=_ts(datetime.now(UTC) - 730 * DAY), site_ids=[site]
        ),
    )
    assert reply.destroyed == 1

    # Ledger first: one secret_retention entry of ids and the version, nothing else.
    entries = list(shred_ledger.entries(ledger))
    assert [
        (e.kind, e.org_id, e.site_id, e.secret_ref_id, e.version, e.customer_id) for e in entries
    ] == [(shred_ledger.SECRET_RETENTION, org_id, site, retired_ref, 1, "")]
    text = ledger.read_text()
    assert RETIRED_CODE not in text and "Back door" not in text and kv_path not in text
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_metadata(path=kv_path, mount_point=kv_mount)
    assert await reveals(h, org_id, retired_ref, site) is None

    # The restore: the Vault data and the row as the backup had them. Without the ledger's
    # replay the retired door code would reveal again: the gap this closes.
    await put_back(h, openbao, postgres, backup)
    assert await reveals(h, org_id, retired_ref, site) == RETIRED_CODE
    # A grant the restored copy holds (issued before the replay, not yet used).
    waiting_job = await h.job(org_id, retired_ref, site)
    waiting = await h.grant(waiting_job, retired_ref)

    said: list[str] = []
    databases, vault = Databases(postgres, h.db_url), Vault(openbao)
    replayed = await asyncio.to_thread(replay, ledger, databases, vault, said.append)
    assert replayed.entries == 1 and replayed.site_secrets == 1
    assert replayed.keys == 0 and replayed.customers == 0 and replayed.replayed == []
    assert [e.secret_ref_id for e in replayed.retired] == [retired_ref]

    # After the replay: the Vault data is gone, the reference retired, no grant reveals it.
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_metadata(path=kv_path, mount_point=kv_mount)
    async with h.service.db.unit_of_work() as session:
        row = (
            await session.execute(select(SecretRef).where(SecretRef.id == retired_ref))
        ).scalar_one()
        assert row.deleted_at is not None
    assert (await h.reveal(waiting, waiting_job.token)).status_code != 200
    assert await reveals(h, org_id, retired_ref, site) is None
    # The same site's younger secret and another site's not-retired one still reveal.
    assert await reveals(h, org_id, fresh_ref, site) == FRESH_CODE
    assert await reveals(h, org_id, other_ref, other_site) == OTHER_CODE

    # Idempotent: a second replay changes nothing and destroying the gone path is harmless.
    again = await asyncio.to_thread(replay, ledger, databases, vault, said.append)
    assert again.site_secrets == 0 and again.retired == []
    assert await reveals(h, org_id, other_ref, other_site) == OTHER_CODE

    # The restored stack's own ledger gets the entry once, kind and ids intact.
    target = Path(tempfile.mkdtemp(prefix="doorward-ledger-")) / "own.jsonl"
    assert carry_ledger(ledger, target) == 1
    assert carry_ledger(ledger, target) == 0
    assert list(shred_ledger.entries(target)) == entries


async def test_an_entry_cannot_retire_another_organisations_secret(
    secrets_svc: SecretsHarness, ledger: Path, postgres: Any, openbao: Any
) -> None:
    """The replay matches org, site and reference together: an entry naming a real reference
    under the wrong organisation (a corrupt or forged line) leaves it alone."""
    h = secrets_svc
    org_id = str(uuid.uuid4())
    ref_id, site = await h.new_secret(org_id, OTHER_CODE)
    shred_ledger.append_secret(ledger, str(uuid.uuid4()), site, ref_id, 1)
    result = await asyncio.to_thread(
        replay, ledger, Databases(postgres, h.db_url), Vault(openbao), lambda _: None
    )
    assert result.site_secrets == 0
    assert await reveals(h, org_id, ref_id, site) == OTHER_CODE
