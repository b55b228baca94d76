"""`doorward backup restore`: fill an empty data folder from an archive so `make up` starts.

1. Unpack and check the whole archive first (nothing is written to the data folder before it
   verifies).
2. The data folder's files (credentials, the embedded OpenBao's unseal key) go back in place.
3. PostgreSQL: a new cluster (the superuser's kept password), the service roles and databases as
   `up` makes them, then pg_restore of each dump.
4. OpenBao: a fresh node takes the raft snapshot (snapshot-force), which seals it with the
   archived cluster's keyring; it is unsealed with the archived key. It runs without an audit
   device for this one start: the snapshot names the old folder's audit file, and OpenBao
   refuses a declared device whose path differs; `up` declares the new one at its next start.
5. The shred ledger is replayed: each erased customer's transit key and site secrets are
   destroyed in the restored Vault and the rows marked erased, exactly as eraseCustomer does;
   a customer whose contact data the retention purge removed (kind "retention") loses its key
   and contact rows again, its sites' secrets follow their own retention as before; a site
   secret the retention purge retired (kind "secret_retention") or an ADMIN deleted with its
   site (kind "secret_delete") has its Vault data destroyed and its reference marked deleted
   again, exactly as RetireSiteSecrets and DeleteSiteSecrets do.
   Only then does anything stop: the restored stack never serves an erased customer.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import hvac

from deploy.backup.ops import Say, _run, _scratch, pg_bin, tool_base_env, unpack
from deploy.embedded import EmbeddedOpenBao, EmbeddedPostgres, _in_thread, free_port_pair
from deploy.errors import DeployError
from doorward_kit import shred_ledger


class ReplayDatabases(Protocol):
    """What the replay needs of PostgreSQL (EmbeddedPostgres; tests pass their own)."""

    def admin_url(self, dbname: str = "postgres") -> str: ...


class ReplayVault(Protocol):
    """What the replay needs of OpenBao (EmbeddedOpenBao; tests pass their own)."""

    def generate_root(self) -> str: ...

    def client(self, token: str | None = None) -> hvac.Client: ...

    def revoke_root(self, token: str) -> None: ...


@dataclass
class ReplayResult:
    entries: int = 0
    customers: int = 0
    keys: int = 0
    site_secrets: int = 0
    # The erasures that changed the restored copy (made after the backup was taken).
    replayed: list[shred_ledger.ShredEntry] = field(default_factory=list)
    # The site-secret destructions that changed it (kinds secret_retention, secret_delete).
    retired: list[shred_ledger.ShredEntry] = field(default_factory=list)


def restore(
    archive: Path,
    secret: bytes,
    env: Mapping[str, str],
    say: Say,
    ledger: Path | None = None,
    *,
    without_ledger: bool = False,
) -> ReplayResult:
    from deploy.pgroles import provision_service_databases
    from deploy.supervisor import DATABASES, UpConfig

    cfg = UpConfig.from_env(env)
    if cfg.database_url or cfg.vault_addr:
        raise DeployError(
            "restore fills an embedded data folder: unset DOORWARD_DATABASE_URL and "
            "DOORWARD_VAULT_ADDR (restore an external server with pg_restore and "
            "`bao operator raft snapshot restore`)"
        )
    data = cfg.data_dir
    if data.exists() and any(data.iterdir()):
        raise DeployError(f"{data} is not empty: restore only into an empty data folder")
    ledger_path = ledger or cfg.shred_ledger
    # A missing ledger would replay nothing and bring every erased customer back. Restoring
    # into a new folder moves the default (beside the folder), so absent is never "no
    # erasures": the secrets service creates the file at start, and only an operator who
    # says so restores without one.
    if not without_ledger and not shred_ledger.present(ledger_path):
        raise DeployError(
            f"no shred ledger at {ledger_path}: without it customers erased after the backup "
            "would come back. Give the ledger of the stack the archive came from "
            "(--shred-ledger FILE or DOORWARD_SHRED_LEDGER), or --without-shred-ledger if that "
            "stack never ran with one"
        )
    t0 = time.monotonic()
    with _scratch() as scratch:
        manifest = unpack(archive, secret, scratch, say)
        if not manifest.get("embedded_vault"):
            raise DeployError(
                "this archive is of an external Vault (no unseal key inside): restore its "
                "snapshot into that Vault with `bao operator raft snapshot restore`"
            )
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(data, 0o700)
        _place_files(scratch / "files", data)
        say(f"files restored into {data}")

        pg = EmbeddedPostgres(
            data / "postgres",
            password_file=data / "credentials" / "supervisor" / "postgres-password",
        )
        bao: EmbeddedOpenBao | None = None
        try:
            pg.start()
            passwords = {
                svc: (data / "credentials" / svc / "db-password").read_text().strip()
                for svc in DATABASES
                if (data / "credentials" / svc / "db-password").exists()
            }
            provision_service_databases(
                pg.admin_url(), list(passwords), passwords, lock_down_cluster=True
            )
            tool_env = {
                **tool_base_env(),
                "PGHOST": str(pg.socket_dir),
                "PGPORT": _pg_port(pg),
                "PGUSER": pg.user,
                "PGPASSWORD": pg.superuser_password,
            }
            for name in manifest["order"]:
                if not name.startswith("db/"):
                    continue
                svc = name[3:-5]
                started = time.monotonic()
                _run(
                    [
                        pg_bin("pg_restore"),
                        "--clean",
                        "--if-exists",
                        "--exit-on-error",
                        "--single-transaction",
                        "--no-password",
                        "-d",
                        f"doorward_{svc}",
                        str(scratch / name),
                    ],
                    tool_env,
                    f"pg_restore of doorward_{svc}",
                )
                say(f"database doorward_{svc} restored in {time.monotonic() - started:.1f}s")

            bao = EmbeddedOpenBao(data / "openbao", free_port_pair())
            _restore_snapshot(bao, scratch / "vault" / "raft.snap", scratch / "files", say)
            result = (
                replay(ledger_path, pg, bao, say)
                if shred_ledger.present(ledger_path)
                else ReplayResult()
            )
            carry_ledger(ledger_path, cfg.shred_ledger)
            record_restore(pg, manifest, result, say)
        finally:
            if bao is not None:
                bao.stop()
            pg.stop()
    say(
        f"restored in {time.monotonic() - t0:.1f}s; start it with "
        f"DOORWARD_DATA_DIR={data} doorward up (make up)"
    )
    return result


def _pg_port(pg: EmbeddedPostgres) -> str:
    return (pg.data_dir / "postmaster.pid").read_text().splitlines()[3].strip()


def _place_files(source: Path, data: Path) -> None:
    """The archived data-folder files, 0700 folders and 0600 files, OpenBao's init.json aside
    (a fresh node must initialise first, see _restore_snapshot)."""
    for item in sorted(source.rglob("*")):
        rel = item.relative_to(source)
        if rel.as_posix() == "openbao/init.json":
            continue
        target = data / rel
        if item.is_dir():
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
            continue
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(item, target)
        os.chmod(target, 0o600)


def _seal_status(addr: str) -> dict[str, Any]:
    try:
        response = httpx.get(f"{addr}/v1/sys/seal-status", timeout=2.0, trust_env=False)
        return dict(response.json())
    except (httpx.HTTPError, ValueError):
        return {}


def _restore_snapshot(bao: EmbeddedOpenBao, snapshot: Path, files: Path, say: Say) -> None:
    started = time.monotonic()
    bao.declare_audit = False
    bao.start(allow_generate_root=True)
    response = httpx.post(
        f"{bao.addr}/v1/sys/storage/raft/snapshot-force",
        headers={"X-Vault-Token": bao.root_token},
        content=snapshot.read_bytes(),
        timeout=120.0,
        trust_env=False,
    )
    if response.status_code not in (200, 204):
        raise DeployError(f"OpenBao refused the snapshot (HTTP {response.status_code})")
    deadline = time.monotonic() + 30
    while not _seal_status(bao.addr).get("sealed"):
        if time.monotonic() > deadline:
            raise DeployError("OpenBao did not take the snapshot within 30s")
        time.sleep(0.1)
    # From now on the archived cluster's keyring: its unseal key, no root token.
    shutil.copyfile(files / "openbao" / "init.json", bao.init_file)
    os.chmod(bao.init_file, 0o600)
    client = hvac.Client(url=bao.addr)
    for key in json.loads(bao.init_file.read_text())["unseal_keys_b64"]:
        client.sys.submit_unseal_key(key)
    deadline = time.monotonic() + 30
    while True:
        try:
            if (
                httpx.get(f"{bao.addr}/v1/sys/health", timeout=2.0, trust_env=False).status_code
                == 200
            ):
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise DeployError(f"the restored OpenBao did not become active; see {bao.log_path}")
        time.sleep(0.1)
    say(f"OpenBao snapshot restored in {time.monotonic() - started:.1f}s")


# --------------------------------------------------------------------------- shred ledger


def replay(ledger: Path, pg: ReplayDatabases, bao: ReplayVault, say: Say) -> ReplayResult:
    """Every ledger entry again (idempotent: an erasure already in the backup changes nothing),
    with a root token generated from the unseal key and revoked right after."""
    from deploy.embedded import KV_MOUNT, TRANSIT_MOUNT
    from services.secrets.service.rules import customer_key_name

    result = ReplayResult()
    items = list(shred_ledger.entries(ledger))
    result.entries = len(items)
    if not items:
        say(f"shred ledger {ledger}: no erasures to replay")
        return result
    token = bao.generate_root()
    try:
        client = bao.client(token)
        for item in items:
            if item.kind in shred_ledger.SECRET_KINDS:
                kv_path, retired = _retire_ref(pg, item)
                if kv_path is not None:
                    # Every time, not only when the row changed: the backup's Vault snapshot may
                    # hold the data even where its database already had the row retired, and a
                    # KV path is random and never reused, so destroying it again is harmless.
                    client.adapter.delete(f"/v1/{KV_MOUNT}/metadata/{kv_path}")
                if retired:
                    result.site_secrets += 1
                    result.retired.append(item)
                continue
            sites, changed = _erase_rows(pg, item)
            result.customers += changed
            # A retention entry shreds the customer only: its sites' secrets have their own
            # period (siteSecretDays) and were not deleted by that purge.
            if item.kind == shred_ledger.ERASURE:
                for kv_path in _delete_site_refs(pg, item.org_id, sites):
                    client.adapter.delete(f"/v1/{KV_MOUNT}/metadata/{kv_path}")
                    result.site_secrets += 1
            name = customer_key_name(item.org_id, item.customer_id)
            try:
                client.adapter.post(
                    f"/v1/{TRANSIT_MOUNT}/keys/{name}/config", json={"deletion_allowed": True}
                )
            except (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath):
                if changed:
                    result.replayed.append(item)
                continue  # already destroyed (erased before the backup)
            client.adapter.delete(f"/v1/{TRANSIT_MOUNT}/keys/{name}")
            result.keys += 1
            result.replayed.append(item)
    finally:
        bao.revoke_root(token)
    say(
        f"shred ledger {ledger}: {result.entries} erasures replayed; {result.customers} "
        f"customers erased again, {result.keys} keys and {result.site_secrets} site secrets "
        "destroyed"
    )
    return result


def carry_ledger(source: Path, target: Path) -> int:
    """The restored stack's own ledger (cfg.shred_ledger) gets every entry of the replayed one,
    so a later restore of this stack's backups still knows those erasures. Returns the
    entries added (none when both are one file)."""
    if not shred_ledger.present(source) or source.resolve() == target.resolve():
        return 0
    known = {_ledger_key(e) for e in shred_ledger.entries(target)}
    added = 0
    for item in shred_ledger.entries(source):
        if _ledger_key(item) not in known:
            if item.kind in shred_ledger.SECRET_KINDS:
                shred_ledger.append_secret(
                    target,
                    item.org_id,
                    item.site_id,
                    item.secret_ref_id,
                    item.version,
                    item.at,
                    item.kind,
                )
            else:
                shred_ledger.append(target, item.org_id, item.customer_id, item.at, item.kind)
            known.add(_ledger_key(item))
            added += 1
    return added


def _ledger_key(item: shred_ledger.ShredEntry) -> tuple[str, str, str]:
    """What an entry shreds: a customer, or one secret reference."""
    if item.kind in shred_ledger.SECRET_KINDS:
        return item.org_id, "secret_ref", item.secret_ref_id
    return item.org_id, "customer", item.customer_id


def _retire_ref(pg: ReplayDatabases, item: shred_ledger.ShredEntry) -> tuple[str | None, bool]:
    """As secrets' retire_site_secrets and delete_site_secrets (one replay for both kinds):
    the reference marked deleted (deleted_at, the time of the ledger entry) if the restored
    copy still has it live. Returns its KV path (None if the
    restored copy has no such reference: taken before the secret existed) and whether the row
    changed. The ids must all match (org, site, reference): an entry cannot retire another
    organisation's secret. Any version the backup holds goes: the destruction took them all
    and a deleted reference never takes a new value."""

    async def run() -> tuple[str | None, bool]:
        import asyncpg

        conn = await asyncpg.connect(pg.admin_url("doorward_secrets"))
        try:
            row = await conn.fetchrow(
                "SELECT kv_path, deleted_at FROM secret_refs "
                "WHERE org_id = $1 AND site_id = $2 AND id = $3",
                item.org_id,
                item.site_id,
                item.secret_ref_id,
            )
            if row is None:
                return None, False
            status = await conn.execute(
                "UPDATE secret_refs SET deleted_at = $4 "
                "WHERE org_id = $1 AND site_id = $2 AND id = $3 AND deleted_at IS NULL",
                item.org_id,
                item.site_id,
                item.secret_ref_id,
                item.at,
            )
            return str(row["kv_path"]), int(status.split()[-1]) > 0
        finally:
            await conn.close()

    return _in_thread(run)


def _erase_rows(pg: ReplayDatabases, item: shred_ledger.ShredEntry) -> tuple[list[str], int]:
    """As workorders' Repository.erase_customer and purge_contact_data: contact, wrapped key
    and the sites' addresses gone, erased_at set."""

    async def run() -> tuple[list[str], int]:
        import asyncpg

        conn = await asyncpg.connect(pg.admin_url("doorward_workorders"))
        try:
            sites = [
                str(r["id"])
                for r in await conn.fetch(
                    "SELECT id FROM sites WHERE org_id = $1 AND customer_id = $2",
                    item.org_id,
                    item.customer_id,
                )
            ]
            await conn.execute(
                "UPDATE sites SET address = NULL WHERE org_id = $1 AND customer_id = $2",
                item.org_id,
                item.customer_id,
            )
            status = await conn.execute(
                "UPDATE customers SET contact = NULL, wrapped_key = NULL, erased_at = $3 "
                "WHERE org_id = $1 AND id = $2 AND erased_at IS NULL",
                item.org_id,
                item.customer_id,
                item.at,
            )
            return sites, int(status.split()[-1])
        finally:
            await conn.close()

    return _in_thread(run)


def _delete_site_refs(pg: ReplayDatabases, org_id: str, sites: list[str]) -> list[str]:
    """As secrets' delete_site_secrets: the references marked deleted; their KV paths."""
    if not sites:
        return []

    async def run() -> list[str]:
        import asyncpg

        conn = await asyncpg.connect(pg.admin_url("doorward_secrets"))
        try:
            rows = await conn.fetch(
                "UPDATE secret_refs SET deleted_at = now() "
                "WHERE org_id = $1 AND site_id = ANY($2::text[]) AND deleted_at IS NULL "
                "RETURNING kv_path",
                org_id,
                sites,
            )
            return [str(r["kv_path"]) for r in rows]
        finally:
            await conn.close()

    return _in_thread(run)


def record_restore(
    pg: EmbeddedPostgres, manifest: dict[str, Any], result: ReplayResult, say: Say
) -> None:
    """The restored trail says what happened: one `backup.restore` per organisation (with the
    number of erasures replayed), one `customer.erase.replay` per customer erased again and
    one `secret.delete.replay` per site secret retired or deleted again (its ledger kind in
    the details), since the trail's own erasure, deletion and retention events after the
    backup are not in the archive. Appended
    through the audit service's chain code; signed by the audit service's next checkpoint."""
    from doorward_kit.audit_client import AuditRecord, Outcome
    from doorward_kit.db import Database
    from services.audit.service import AuditService, Incoming

    async def run() -> int:
        import asyncpg

        conn = await asyncpg.connect(pg.admin_url("doorward_identity"))
        try:
            orgs = [str(r["id"]) for r in await conn.fetch("SELECT id FROM organisations")]
        finally:
            await conn.close()
        replayed: dict[str, int] = {}
        for item in result.replayed:
            replayed[item.org_id] = replayed.get(item.org_id, 0) + 1
        records = [
            AuditRecord(
                org_id=item.org_id,
                actor_id="",
                action="customer.erase.replay",
                outcome=Outcome.ALLOWED,
                target_type="Customer",
                target_id=item.customer_id,
                details={
                    "customer_id": item.customer_id,
                    "reason": "shred_ledger",
                    "kind": item.kind,
                },
            )
            for item in result.replayed
        ]
        records += [
            AuditRecord(
                org_id=item.org_id,
                actor_id="",
                action="secret.delete.replay",
                outcome=Outcome.ALLOWED,
                target_type="SecretRef",
                target_id=item.secret_ref_id,
                secret_ref_id=item.secret_ref_id,
                details={"site_id": item.site_id, "reason": "shred_ledger", "kind": item.kind},
            )
            for item in result.retired
        ]
        records += [
            AuditRecord(
                org_id=org,
                actor_id="",
                action="backup.restore",
                outcome=Outcome.ALLOWED,
                target_type="Backup",
                target_id=str(manifest["created_at"])[:19].replace(":", ""),
                details={"count": str(replayed.get(org, 0)), "mode": "shred_ledger_replayed"},
            )
            for org in orgs
        ]
        db = Database(pg.url_for("doorward_audit"), pool_size=1)
        try:
            async with db.unit_of_work() as session:
                done = await AuditService().append(session, [Incoming(r, "cli") for r in records])
        finally:
            await db.dispose()
        return done.accepted

    say(
        f"audit trail: {_in_thread(run)} events recorded "
        "(backup.restore, customer.erase.replay, secret.delete.replay)"
    )
