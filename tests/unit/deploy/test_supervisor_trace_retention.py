"""`doorward up` tells workorders whether the embedded trace store runs: its purge then hands
the store each organisation's traceDays; with an external collector the retention policy says
the operator's backend keeps traces (docs/api.md, retention)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.supervisor import child_env
from services.workorders.settings import WorkOrdersSettings
from tests.unit.deploy.test_supervisor import _cfg, _infra

pytestmark = pytest.mark.unit


def test_workorders_hands_trace_retention_to_the_embedded_store(tmp_path: Path) -> None:
    env = child_env("workorders", _cfg(tmp_path), _infra(tmp_path), {})
    assert env["DOORWARD_WORKORDERS_TRACE_STORE"] == "1"
    assert "DOORWARD_WORKORDERS_TRACE_STORE" not in child_env(
        "audit", _cfg(tmp_path), _infra(tmp_path), {}
    )


def test_with_an_external_collector_retention_is_the_backends(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318")
    env = child_env("workorders", cfg, _infra(tmp_path), {})
    assert env["DOORWARD_WORKORDERS_TRACE_STORE"] == "0"
    settings = WorkOrdersSettings(
        workorders_db_url="postgresql+asyncpg://u:p@/db",  # type: ignore[arg-type]
        workorders_trace_store=env["DOORWARD_WORKORDERS_TRACE_STORE"],  # type: ignore[arg-type]
    )
    assert settings.workorders_trace_store is False
