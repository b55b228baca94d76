"""What the shred-ledger replay tests share: the secrets service's own ledger for one test, the
replay's view of the test PostgreSQL and OpenBao, a door code's backup and restore as a
restored archive would have them, and whether a fresh job's grant reveals a code."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import hvac
from sqlalchemy import select
from sqlalchemy.engine import make_url

from services.secrets.models import SecretRef
from tests.integration.secrets.conftest import SecretsHarness


@contextlib.contextmanager
def own_ledger(h: SecretsHarness) -> Iterator[Path]:
    """A shred ledger of the test's own, the service's previous one put back afterwards."""
    ledger = Path(tempfile.mkdtemp(prefix="doorward-ledger-")) / "shred.jsonl"
    previous = h.service.shred_ledger
    h.service.shred_ledger = ledger
    try:
        yield ledger
    finally:
        h.service.shred_ledger = previous


class Databases:
    """The replay's view of PostgreSQL: the test's databases by their production names
    (secrets', and workorders' when a test has one)."""

    def __init__(self, postgres: Any, secrets_url: str, workorders_url: str | None = None) -> None:
        self.server = postgres.server
        self.names = {"doorward_secrets": make_url(secrets_url).database}
        if workorders_url is not None:
            self.names["doorward_workorders"] = make_url(workorders_url).database

    def admin_url(self, dbname: str = "postgres") -> str:
        return str(self.server.admin_url(self.names.get(dbname, dbname)))


class Vault:
    def __init__(self, openbao: Any) -> None:
        self.openbao = openbao

    def generate_root(self) -> str:
        return str(self.openbao.root_token)

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.openbao.addr, token=token)

    def revoke_root(self, token: str) -> None:
        pass  # the test server's root token outlives the test


@dataclass
class Backup:
    """One door code as a backup holds it: its KV data and its row's state."""

    ref_id: str
    kv_path: str
    version: int
    updated_at: datetime
    data: dict[str, Any]


async def back_up(h: SecretsHarness, openbao: Any, ref_id: str) -> Backup:
    async with h.service.db.unit_of_work() as session:
        row = (await session.execute(select(SecretRef).where(SecretRef.id == ref_id))).scalar_one()
        kv_path, version, updated_at = row.kv_path, row.version, row.updated_at
    stored = openbao.client().secrets.kv.v2.read_secret_version(
        path=kv_path, mount_point=h.service.vault.kv_mount, raise_on_deleted_version=True
    )
    return Backup(ref_id, kv_path, version, updated_at, dict(stored["data"]["data"]))


async def put_back(h: SecretsHarness, openbao: Any, postgres: Any, backup: Backup) -> None:
    """The restore: the Vault data and the row as the backup had them (dev-mode OpenBao has no
    raft snapshot, so the data is written back with the root token)."""
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=backup.kv_path, secret=backup.data, mount_point=h.service.vault.kv_mount
    )
    conn = await asyncpg.connect(postgres.server.admin_url(make_url(h.db_url).database))
    try:
        await conn.execute(
            "UPDATE secret_refs SET deleted_at = NULL, updated_at = $2 WHERE id = $1",
            backup.ref_id,
            backup.updated_at,
        )
    finally:
        await conn.close()


async def reveals(h: SecretsHarness, org_id: str, ref_id: str, site_id: str) -> str | None:
    """The code a fresh job's assignee gets through a grant and the reveal endpoint; None if
    the grant is refused (the reference is gone)."""
    job = await h.job(org_id, ref_id, site_id)
    try:
        grant = await h.grant(job, ref_id)
    except grpc.aio.AioRpcError:
        return None
    response = await h.reveal(grant, job.token)
    return str(response.json()["value"]) if response.status_code == 200 else None
