"""Review of the backups (issue 14): a restore never silently skips the shred ledger, and the
archive key never reaches a child process.

The default ledger lives beside the data folder, so restoring into a new folder (the usual
drill: restore refuses a non-empty one) looked for a ledger that does not exist, replayed
nothing and brought back every customer erased after the backup."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploy.backup.restore import carry_ledger, restore
from deploy.errors import DeployError
from doorward_kit import shred_ledger

pytestmark = pytest.mark.unit


def _env(data: Path) -> dict[str, str]:
    return {"DOORWARD_DATA_DIR": str(data)}


def test_restore_refuses_a_missing_ledger_before_touching_anything(tmp_path: Path) -> None:
    data = tmp_path / "restored"
    said: list[str] = []
    with pytest.raises(DeployError, match="no shred ledger"):
        restore(tmp_path / "never-read.dwb", b"k" * 20, _env(data), said.append)
    assert not data.exists()
    # An explicit ledger that is not there is refused the same way.
    with pytest.raises(DeployError, match="no shred ledger"):
        restore(
            tmp_path / "never-read.dwb", b"k" * 20, _env(data), said.append,
            tmp_path / "elsewhere.jsonl",
        )  # fmt: skip
    assert not data.exists()


def test_without_ledger_is_the_operators_explicit_choice(tmp_path: Path) -> None:
    data = tmp_path / "restored"
    # Past the ledger check: the (absent) archive is what fails now.
    with pytest.raises(DeployError, match="cannot read"):
        restore(tmp_path / "absent.dwb", b"k" * 20, _env(data), lambda _: None, without_ledger=True)


def test_an_existing_ledger_passes_the_check(tmp_path: Path) -> None:
    data = tmp_path / "restored"
    ledger = tmp_path / "old.shred-ledger.jsonl"
    shred_ledger.ensure(ledger)
    with pytest.raises(DeployError, match="cannot read"):
        restore(tmp_path / "absent.dwb", b"k" * 20, _env(data), lambda _: None, ledger)


def test_ensure_creates_an_empty_private_ledger_and_keeps_entries(tmp_path: Path) -> None:
    ledger = tmp_path / "l.jsonl"
    shred_ledger.ensure(ledger)
    assert ledger.is_file() and ledger.stat().st_mode & 0o777 == 0o600
    shred_ledger.append(ledger, "org", "cust")
    shred_ledger.ensure(ledger)
    assert [e.customer_id for e in shred_ledger.entries(ledger)] == ["cust"]


def test_the_restored_stack_keeps_the_replayed_erasures(tmp_path: Path) -> None:
    old, new = tmp_path / "old.jsonl", tmp_path / "restored.shred-ledger.jsonl"
    at = datetime(2026, 1, 2, tzinfo=UTC)
    shred_ledger.append(old, "org", "c1", at)
    shred_ledger.append(old, "org", "c2", at)
    shred_ledger.append(new, "org", "c2", at)
    assert carry_ledger(old, new) == 1
    assert sorted(e.customer_id for e in shred_ledger.entries(new)) == ["c1", "c2"]
    assert carry_ledger(old, new) == 0
    assert carry_ledger(old, old) == 0


def test_the_archive_key_is_never_handed_to_the_postgres_tools(monkeypatch) -> None:
    from deploy.backup.ops import PgServer, tool_base_env

    monkeypatch.setenv("DOORWARD_BACKUP_KEY", "the operator's archive key 123")
    monkeypatch.setenv("PGPASSWORD", "the operator's own")
    for env in (tool_base_env(), PgServer({"PGUSER": "postgres"}).tool_env("doorward_audit")):
        assert "DOORWARD_BACKUP_KEY" not in env
        assert env.get("PGPASSWORD") != "the operator's own"
        assert "the operator's archive key 123" not in env.values()


def test_doorward_up_hands_the_archive_key_to_no_process(tmp_path: Path) -> None:
    from deploy.embedded import AppRoleCreds
    from deploy.supervisor import SERVICES, TRACES, Infra, UpConfig, child_env

    cfg = UpConfig.from_env({"DOORWARD_DATA_DIR": str(tmp_path)})
    infra = Infra(
        db_urls={svc: f"postgresql+asyncpg://u@/doorward_{svc}?host=/s" for svc in SERVICES},
        vault_addr="http://127.0.0.1:8200",
        approle=AppRoleCreds("role", "secret-id"),
        internal_token=None,
        audit_signing_key_file=tmp_path / "keys" / "audit.pem",
        identity_key_dir=tmp_path / "keys" / "identity",
        tls_root=tmp_path / "tls",
    )
    base = {"PATH": "/bin", "DOORWARD_BACKUP_KEY": "the operator's archive key 123"}
    for svc in (*SERVICES, TRACES, "gateway"):
        env = child_env(svc, cfg, infra, base)
        assert env["PATH"] == "/bin"
        assert "DOORWARD_BACKUP_KEY" not in env, svc
        assert "the operator's archive key 123" not in env.values(), svc
