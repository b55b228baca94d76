"""`python -m services.secrets` as a real process: starts from the environment, migrates, serves
REST and gRPC, logs JSON without its credentials, and stops on SIGTERM (stopped by its PID)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from deploy.embedded import stop_pid
from doorward_kit.net import free_port

pytestmark = pytest.mark.integration


def test_the_process_starts_serves_and_stops(postgres, openbao, service_pki) -> None:
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DOORWARD_")},
        "DOORWARD_SECRETS_HTTP_PORT": str(http_port),
        "DOORWARD_SECRETS_METRICS_PORT": str(metrics_port),
        "DOORWARD_SECRETS_GRPC_PORT": str(grpc_port),
        "DOORWARD_IDENTITY_HTTP_PORT": str(free_port()),
        "DOORWARD_IDENTITY_GRPC_PORT": str(free_port()),
        "DOORWARD_AUDIT_GRPC_PORT": str(free_port()),
        "DOORWARD_WORKORDERS_GRPC_PORT": str(free_port()),
        **service_pki.env("secrets"),
        "DOORWARD_SECRETS_DB_URL": postgres.fresh_database("secrets_proc"),
        "DOORWARD_VAULT_ADDR": openbao.addr,
        "DOORWARD_VAULT_ROLE_ID": openbao.role_id,
        "DOORWARD_VAULT_SECRET_ID": openbao.secret_id,
        "DOORWARD_DATA_DIR": tempfile.gettempdir(),
    }
    log = Path(tempfile.mkstemp(prefix="doorward-secrets-proc-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.secrets"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[3],
        )
    try:
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=1.0)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, log.read_text()[-2000:]
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        refused = httpx.post(f"{base}/v1/reveals/{uuid.uuid4()}", json={"revealToken": "x"})
        assert refused.status_code == 401
        assert refused.headers["cache-control"] == "no-store"
        # /metrics (issue 15): not on the door, which phones reach through a reverse proxy
        # (a loopback scraper here, allowed by default, still gets 404 there); on its own port.
        assert httpx.get(f"{base}/metrics").status_code == 404
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert scraped.status_code == 200 and "# TYPE" in scraped.text
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/healthz").status_code == 404
    finally:
        stop_pid(proc.pid)
        proc.wait(timeout=10)
    text = log.read_text()
    log.unlink()
    assert "logged in to vault" in text
    assert openbao.secret_id not in text
