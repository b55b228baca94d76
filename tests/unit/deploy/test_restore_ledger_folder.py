"""A shred ledger kept as a folder (Kubernetes: one file per secrets replica on one volume) is
a ledger to `doorward backup restore`: it passes the missing-ledger check and its entries, of
every replica and both kinds, are carried into the restored stack's own ledger."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploy.backup.restore import carry_ledger, restore
from deploy.errors import DeployError
from doorward_kit import shred_ledger

pytestmark = pytest.mark.unit


def test_a_ledger_folder_is_accepted_and_carried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "shred-ledger"
    folder.mkdir()
    data = tmp_path / "restored"
    # An empty folder is still the operator's ledger: past the check, the archive fails next.
    with pytest.raises(DeployError, match="cannot read"):
        restore(
            tmp_path / "absent.dwb", b"k" * 20, {"DOORWARD_DATA_DIR": str(data)},
            lambda _: None, folder,
        )  # fmt: skip
    at = datetime(2026, 11, 30, tzinfo=UTC)
    for pod, customer, kind in (
        ("secrets-a", "c1", shred_ledger.ERASURE),
        ("secrets-b", "c2", shred_ledger.RETENTION),
    ):
        monkeypatch.setattr(shred_ledger.socket, "gethostname", lambda pod=pod: pod)
        shred_ledger.append(folder, "org", customer, at, kind)
    target = tmp_path / "restored.shred-ledger.jsonl"
    assert carry_ledger(folder, target) == 2
    assert sorted((e.customer_id, e.kind) for e in shred_ledger.entries(target)) == [
        ("c1", "erasure"),
        ("c2", "retention"),
    ]
