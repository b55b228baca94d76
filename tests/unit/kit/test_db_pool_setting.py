"""DOORWARD_DB_POOL_SIZE sizes every service's PostgreSQL pool (the most connections, all kept:
none opened beyond it to be closed on return), within bounds."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from doorward_kit.settings import StackSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_the_pool_size_is_read_from_the_environment_with_a_default(monkeypatch) -> None:
    assert StackSettings().db_pool_size == 20
    monkeypatch.setenv("DOORWARD_DB_POOL_SIZE", "16")
    assert StackSettings().db_pool_size == 16


@pytest.mark.parametrize("bad", ["0", "-1", "101", "many"])
def test_a_pool_size_out_of_bounds_is_refused(monkeypatch, bad: str) -> None:
    monkeypatch.setenv("DOORWARD_DB_POOL_SIZE", bad)
    with pytest.raises(ValidationError):
        StackSettings()


@pytest.mark.parametrize("service", ["identity", "workorders", "secrets", "audit", "traces"])
def test_every_service_sizes_its_pool_from_the_setting(service: str) -> None:
    tree = ast.parse((ROOT / "services" / service / "__main__.py").read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Database"
    ]
    assert calls, f"{service} opens no Database"
    for call in calls:
        sizes = [k for k in call.keywords if k.arg == "pool_size"]
        assert sizes and ast.unparse(sizes[0].value) == "stack.db_pool_size", ast.unparse(call)
        overflow = [k for k in call.keywords if k.arg == "max_overflow"]
        assert overflow and ast.unparse(overflow[0].value) == "0", ast.unparse(call)
