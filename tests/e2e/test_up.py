"""`doorward up` in its default mode (embedded PostgreSQL and persistent OpenBao in the data
folder): a restart keeps everything; a dead infrastructure process is reported by name."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from deploy.embedded import free_port_pair
from tests.e2e.conftest import START_TIMEOUT, stack_env, start_up, stop_up, wait_for_gateway
from tests.e2e.world import PASSWORD, GraphQLClient, World, bootstrap_org

pytestmark = pytest.mark.e2e


def embedded_env(root: Path) -> dict[str, str]:
    env = stack_env(root / "data", root / "spans.jsonl", "", "", "")
    for name in ("DOORWARD_DATABASE_URL", "DOORWARD_VAULT_ADDR", "DOORWARD_VAULT_TOKEN"):
        env.pop(name)
    env["DOORWARD_VAULT_PORT"] = str(free_port_pair())
    return env


def test_restart_keeps_everything_and_deaths_are_named():
    # Not pytest's tmp_path: the embedded_postgres system user must reach the folder.
    root = Path(tempfile.mkdtemp(prefix="doorward-up-"))
    env = embedded_env(root)
    log = root / "up.log"
    url = f"http://127.0.0.1:{env['DOORWARD_GATEWAY_PORT']}/graphql"

    started = time.monotonic()
    proc = start_up(env, log)
    try:
        wait_for_gateway(proc, url, log, START_TIMEOUT)
        cold = time.monotonic() - started
        org_id, admin = bootstrap_org(env, "Persisto", "admin@persisto-homes.com", PASSWORD)
        world = World(gql=GraphQLClient(url), org_id=org_id, admin=admin)
        world.login(world.admin)
        world.create_region("Leeds")
    finally:
        stop_up(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "stopped" in log.read_text()

    started = time.monotonic()
    proc = start_up(env, log)
    try:
        wait_for_gateway(proc, url, log, START_TIMEOUT)
        warm = time.monotonic() - started
        # The organisation, its admin (password + MFA) and the region survived the restart.
        world.gql = GraphQLClient(url)
        # (a recovery code: the TOTP code of the first login may still be the current one)
        world.login(world.admin, otp=world.admin.recovery_codes.pop())
        regions = world.gql.data("{ regions { name } }", token=world.admin.token)["regions"]
        assert [r["name"] for r in regions] == ["Leeds"]

        # Kill PostgreSQL behind the supervisor's back: it names it and stops with an error.
        pg_pid = int((root / "data" / "postgres" / "postmaster.pid").read_text().split()[0])
        os.kill(pg_pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() not in (None, 0)
        assert "PostgreSQL" in log.read_text()
    finally:
        stop_up(proc)
        shutil.rmtree(root, ignore_errors=True)
    print(f"\ndoorward up: cold start {cold:.1f}s, warm start {warm:.1f}s")
