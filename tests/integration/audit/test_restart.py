"""The audit service dies (SIGKILL) and comes back while users keep working: every event a
producer committed arrives exactly once, and the chain still verifies."""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import DeclarativeBase

from deploy.embedded import stop_pid
from doorward_kit.audit_client import AuditOutboxMixin, OutboxSender, record_event
from doorward_kit.db import Database, new_metadata
from doorward_kit.grpc import ServiceChannel
from doorward_kit.net import free_port
from services.audit.signing import load_public_key
from services.audit.verify import verify_rows
from tests.fixtures.gateway_signing import gateway_keys
from tests.integration.audit.harness import PRODUCER, record

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
ORG = "org-restart"
TOTAL = 400


class Base(DeclarativeBase):
    metadata = new_metadata()


class ProducerOutbox(AuditOutboxMixin, Base):
    __tablename__ = "audit_outbox"


class AuditProcess:
    def __init__(self, env: dict[str, str], http_port: int) -> None:
        self.env = env
        self.http_port = http_port
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.audit"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # A deadline, not a count: on a loaded two-core machine the imports alone can take 30 s.
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, "the audit service exited"
                try:
                    r = await client.get(f"http://127.0.0.1:{self.http_port}/readyz")
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("the audit service did not become ready")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc.wait(timeout=15)


@pytest.fixture
async def producer_db(postgres):
    db = Database(postgres.fresh_database("producer"))
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield db
    await db.dispose()


async def test_every_event_arrives_exactly_once_across_a_crash(postgres, producer_db, service_pki):
    audit_db = f"audit_restart_{uuid.uuid4().hex[:8]}"
    audit_url = postgres.create_database(audit_db)
    http_port, grpc_port = free_port(), free_port()
    key_dir = Path(tempfile.mkdtemp(prefix="doorward-audit-key-"))
    key_file = key_dir / "key.pem"
    env = {
        **os.environ,
        "DOORWARD_ENV": "development",
        **service_pki.env("audit"),
        "DOORWARD_AUDIT_DB_URL": audit_url,
        "DOORWARD_AUDIT_SIGNING_KEY_FILE": str(key_file),
        "DOORWARD_GATEWAY_PUBLIC_KEY_FILE": str(gateway_keys().public_file),
        "DOORWARD_AUDIT_HTTP_PORT": str(http_port),
        "DOORWARD_AUDIT_GRPC_PORT": str(grpc_port),
        "DOORWARD_AUDIT_CHECKPOINT_INTERVAL": "0.5",
        "OTEL_TRACES_EXPORTER": "none",
    }
    service = AuditProcess(env, http_port)
    channel = ServiceChannel(
        f"127.0.0.1:{grpc_port}", service_pki.auth(PRODUCER), default_deadline=2.0, server="audit"
    )
    sender = OutboxSender(
        producer_db,
        ProducerOutbox,
        channel,
        PRODUCER,
        poll_interval=0.05,
        backoff_base=0.1,
        backoff_cap=1.0,
    )
    produced: list[str] = []

    async def users_work() -> None:
        for i in range(TOTAL):
            async with producer_db.unit_of_work() as session:
                ev = record(ORG, action="workorder.update", target_id=f"w-{i}")
                await record_event(session, ProducerOutbox, ev)
            produced.append(ev.id)
            await asyncio.sleep(0.004)

    sending = None
    try:
        await service.start()
        sending = asyncio.create_task(sender.run())
        working = asyncio.create_task(users_work())
        while len(produced) < TOTAL // 3:
            await asyncio.sleep(0.01)
        service.kill()  # mid-stream: batches in flight may be committed but never acknowledged
        at_kill = len(produced)
        await asyncio.sleep(0.5)
        assert len(produced) > at_kill  # users kept working while audit was down
        await service.start()
        await working
        for _ in range(600):
            async with producer_db.unit_of_work() as session:
                pending = await session.scalar(select(func.count()).select_from(ProducerOutbox))
            if pending == 0:
                break
            await asyncio.sleep(0.05)
        assert pending == 0
        await asyncio.sleep(1.2)  # let a checkpoint cover the whole trail
    finally:
        if sending is not None:
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
        await channel.close()
        service.stop()

    import asyncpg

    conn = await asyncpg.connect(postgres.server.admin_url(audit_db))
    try:
        rows = [
            dict(r) for r in await conn.fetch("SELECT * FROM audit_events WHERE org_id=$1", ORG)
        ]
        checkpoints = [dict(r) for r in await conn.fetch("SELECT * FROM audit_checkpoints")]
        heads = [dict(r) for r in await conn.fetch("SELECT * FROM audit_heads")]
    finally:
        await conn.close()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == TOTAL
    assert set(ids) == set(produced)
    assert sorted(r["seq"] for r in rows) == list(range(1, TOTAL + 1))
    (report,) = verify_rows(
        rows, checkpoints=checkpoints, heads=heads, public_key=load_public_key(key_file)
    )
    assert report.ok, report.problems
    assert report.checkpoint is not None and report.checkpoint.tree_size == TOTAL
    shutil.rmtree(key_dir, ignore_errors=True)
