"""The whole stack as separate processes: `doorward up` against the session's PostgreSQL and
OpenBao (external mode), on free ports, with every log line and span written to files that the
canary tests search. Stopped by the supervisor's PID (it stops its children) even on failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deploy.embedded import free_port_pair, stop_pid
from doorward_kit.net import free_port
from tests.e2e.world import PASSWORD, GraphQLClient, World, bootstrap_org

SERVICES = ("identity", "workorders", "audit", "secrets")
# Raise it with E2E_START_TIMEOUT on a loaded machine (many test runs sharing two cores). Under
# `make test` two workers start stacks at once (the shared one and a drill's), hence 180 s.
START_TIMEOUT = float(os.environ.get("E2E_START_TIMEOUT", "180"))


@dataclass
class Stack:
    env: dict[str, str]
    data_dir: Path
    log_file: Path
    span_file: Path
    pid: int
    db_names: dict[str, str]
    admin_db_url: str

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.env['DOORWARD_GATEWAY_PORT']}/graphql"

    def http_url(self, svc: str) -> str:
        return f"http://127.0.0.1:{self.env[f'DOORWARD_{svc.upper()}_HTTP_PORT']}"

    def grpc_target(self, svc: str) -> str:
        return f"127.0.0.1:{self.env[f'DOORWARD_{svc.upper()}_GRPC_PORT']}"

    def tls_dir(self, svc: str) -> Path:
        """The certificate folder `doorward up` issued `svc` (mutual TLS on internal gRPC)."""
        return self.data_dir / "tls" / svc

    def logs(self) -> str:
        return self.log_file.read_text(errors="replace")


def stack_env(
    data_dir: Path, span_file: Path, database_url: str, vault_addr: str, vault_token: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOORWARD_", "OTEL_"))}
    env.update(
        {
            "DOORWARD_DATA_DIR": str(data_dir),
            "DOORWARD_DATABASE_URL": database_url,
            "DOORWARD_VAULT_ADDR": vault_addr,
            "DOORWARD_VAULT_TOKEN": vault_token,
            "DOORWARD_GATEWAY_PORT": str(free_port()),
            "DOORWARD_OTEL_FILE": str(span_file),
            "DOORWARD_READY_TIMEOUT": str(START_TIMEOUT),
            # Tests are on a 2-core machine: cheap password hashing, same algorithm.
            "DOORWARD_IDENTITY_ARGON2_TIME_COST": "1",
            "DOORWARD_IDENTITY_ARGON2_MEMORY_COST": "8192",
            "DOORWARD_IDENTITY_ARGON2_PARALLELISM": "1",
        }
    )
    for svc in SERVICES:
        env[f"DOORWARD_{svc.upper()}_HTTP_PORT"] = str(free_port())
        env[f"DOORWARD_{svc.upper()}_GRPC_PORT"] = str(free_port())
    env["DOORWARD_VAULT_PORT"] = str(free_port_pair())
    env["DOORWARD_TRACES_HTTP_PORT"] = str(free_port())
    env["DOORWARD_TRACES_GRPC_PORT"] = str(free_port())
    # The secrets door's /metrics port (`up` would take SECRETS_HTTP_PORT + 50; a free one here).
    env["DOORWARD_SECRETS_METRICS_PORT"] = str(free_port())
    return env


def start_up(env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    log = open(log_file, "ab")  # noqa: SIM115 - the child writes it for the whole run
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("doorward")), "up"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return proc


def wait_for_gateway(
    proc: subprocess.Popen[bytes], url: str, log_file: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"doorward up exited with {proc.returncode}:\n{_why(log_file.read_text())}"
            )
        try:
            if httpx.get(url.replace("/graphql", "/readyz"), timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(
        f"the stack was not ready within {timeout:.0f}s:\n{log_file.read_text()[-4000:]}"
    )


def _why(log: str) -> str:
    """The supervisor's own lines (which name the process that died, or the port in use) and
    every error line, then the tail: the shutdown that follows a failure fills the tail alone."""
    said = [
        line for line in log.splitlines()
        if (line.startswith("doorward ") and "stopping" not in line)
        or '"level": "error"' in line or "Error" in line
    ]
    return "\n".join(said[-40:])[-6000:] + "\n--- tail:\n" + log[-2000:]


def stop_up(proc: subprocess.Popen[bytes]) -> None:
    # SIGTERM lets the supervisor stop its children; then make sure of the whole group.
    stop_pid(proc.pid, signal.SIGTERM, timeout=30)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


def run_stack(postgres, openbao, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """The `stack` fixture's body. The fixture itself lives in tests/conftest.py so that the
    e2e tests and the fuzz suite (tests/fuzz) share one stack per test run."""
    root = Path(tempfile.mkdtemp(prefix="doorward-e2e-"))
    data_dir, log_file, span_file = root / "data", root / "stack.log", root / "spans.jsonl"
    env = stack_env(data_dir, span_file, postgres.admin_url(), openbao.addr, openbao.root_token)
    env.update(extra_env or {})
    proc = start_up(env, log_file)
    try:
        wait_for_gateway(
            proc,
            f"http://127.0.0.1:{env['DOORWARD_GATEWAY_PORT']}/graphql",
            log_file,
            START_TIMEOUT,
        )
        yield Stack(
            env=env,
            data_dir=data_dir,
            log_file=log_file,
            span_file=span_file,
            pid=proc.pid,
            db_names={svc: f"doorward_{svc}" for svc in SERVICES},
            admin_db_url=postgres.admin_url(),
        )
    finally:
        stop_up(proc)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def world(stack: Stack, postgres) -> World:
    """Acme: London and Manchester; an admin, dispatchers, technicians, a subcontractor and
    an auditor, each logged in through the gateway (password changed, MFA enrolled as needed)."""
    gql = GraphQLClient(stack.gateway_url)
    admin_email = "admin@acme-maintenance.com"
    org_id, admin = bootstrap_org(stack.env, "Acme", admin_email, PASSWORD)
    w = World(gql=gql, org_id=org_id, admin=admin, stack=stack)
    w.login(admin)
    w.create_region("London")
    w.create_region("Manchester")
    w.create_person("dispatcher", "DISPATCHER", ["London"])
    w.create_person("manchester_dispatcher", "DISPATCHER", ["Manchester"])
    w.create_person("tom", "TECHNICIAN", ["London"])
    w.create_person("tina", "TECHNICIAN", ["London"])
    w.create_person("manny", "TECHNICIAN", ["Manchester"])
    w.create_person("sub", "SUBCONTRACTOR", ["London"])
    w.create_person("auditor", "AUDITOR", ["London", "Manchester"])
    return w
