"""The audit service counts its own failed audit writes in the metric every service uses
(doorward_audit_write_failures, path="own"), so the "audit write failures" alert sees audit's
own trail failing too: an export whose audit event cannot be written is refused and counted;
an export that is written counts nothing."""

from __future__ import annotations

import re

import httpx
import pytest

from doorward_kit.metrics import render
from tests.integration.audit.harness import record, running_audit

pytestmark = pytest.mark.integration


def own_failures() -> float:
    text = render("")[0].decode()
    found = re.search(r'^doorward_audit_write_failures_total\{path="own"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_failed_own_audit_write_is_counted_and_a_written_one_is_not(postgres) -> None:
    async with running_audit(postgres) as audit, httpx.AsyncClient(timeout=30) as client:
        await audit.append([record()])
        headers = {"authorization": f"Bearer {audit.token()}"}
        before = own_failures()
        written = await client.get(f"{audit.http_url}/export", headers=headers)
        assert written.status_code == 200
        assert own_failures() == before
        conn = await audit.superuser()
        try:
            # The trail's table cannot take the export's event (what a failing disk does).
            await conn.execute("ALTER TABLE audit_events RENAME TO audit_events_away")
            refused = await client.get(f"{audit.http_url}/export", headers=headers)
            await conn.execute("ALTER TABLE audit_events_away RENAME TO audit_events")
        finally:
            await conn.close()
    assert refused.status_code >= 500
    assert own_failures() == before + 1
