"""The shred ledger: pseudonymous, append-only, 0600, a torn last line skipped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from doorward_kit import shred_ledger

pytestmark = pytest.mark.unit


def test_entries_come_back_in_order_and_the_file_is_private(tmp_path: Path):
    path = tmp_path / "ledger" / "shred.jsonl"
    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    shred_ledger.append(path, "org-1", "cust-a", at)
    shred_ledger.append(path, "org-1", "cust-b")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    found = list(shred_ledger.entries(path))
    assert [(e.org_id, e.customer_id) for e in found] == [("org-1", "cust-a"), ("org-1", "cust-b")]
    assert found[0].at == at
    # Only ids, the time and the kind: nothing else is written.
    assert set(path.read_text().splitlines()[0].split('"')[1::4]) == {
        "at",
        "customer",
        "kind",
        "org",
    }
    assert [e.kind for e in found] == ["erasure", "erasure"]


def test_a_torn_line_is_skipped_and_a_missing_file_is_empty(tmp_path: Path):
    path = tmp_path / "shred.jsonl"
    assert list(shred_ledger.entries(path)) == []
    shred_ledger.append(path, "org-1", "cust-a")
    with path.open("a") as fh:
        fh.write('{"at": "2026-11-29T12:0')
    assert [e.customer_id for e in shred_ledger.entries(path)] == ["cust-a"]


def test_retention_entries_keep_their_kind_and_old_lines_are_erasures(tmp_path: Path):
    path = tmp_path / "shred.jsonl"
    # A line written before kinds existed, then a retention purge's, then an unknown kind.
    path.write_text('{"at": "2026-11-29T12:00:00+00:00", "customer": "old", "org": "org-1"}\n')
    shred_ledger.append(path, "org-1", "stale", kind=shred_ledger.RETENTION)
    with path.open("a") as fh:
        fh.write('{"at": "2026-11-29T12:00:00+00:00", "customer": "x", "org": "o", "kind": "?"}\n')
    kinds = [(e.customer_id, e.kind) for e in shred_ledger.entries(path)]
    # An unknown kind replays as the full erasure (the safe side).
    assert kinds == [("old", "erasure"), ("stale", "retention"), ("x", "erasure")]
    with pytest.raises(ValueError):
        shred_ledger.append(path, "org-1", "c", kind="anything")


def test_a_ledger_folder_gives_each_host_its_own_file_and_reads_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = tmp_path / "ledger"
    folder.mkdir()
    assert shred_ledger.present(folder) and not shred_ledger.present(tmp_path / "absent")
    monkeypatch.setattr(shred_ledger.socket, "gethostname", lambda: "secrets-7f9c-b")
    shred_ledger.ensure(folder)
    assert (folder / "secrets-7f9c-b.jsonl").is_file()
    shred_ledger.append(folder, "org-1", "late", datetime(2026, 11, 29, 13, 0, tzinfo=UTC))
    # Another replica (a path separator in a host name never escapes the folder).
    monkeypatch.setattr(shred_ledger.socket, "gethostname", lambda: "../secrets/x")
    shred_ledger.append(folder, "org-1", "early", datetime(2026, 11, 29, 12, 0, tzinfo=UTC))
    assert sorted(p.name for p in folder.iterdir()) == ["_secrets_x.jsonl", "secrets-7f9c-b.jsonl"]
    assert [e.customer_id for e in shred_ledger.entries(folder)] == ["early", "late"]


def test_a_retired_site_secret_is_an_entry_of_ids_and_a_version_only(tmp_path: Path):
    path = tmp_path / "shred.jsonl"
    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    shred_ledger.append(path, "org-1", "cust-a", at, kind=shred_ledger.RETENTION)
    shred_ledger.append_secret(path, "org-1", "site-1", "ref-1", 3, at)
    # A secret_retention line missing its reference is unusable: skipped, never an erasure.
    with path.open("a") as fh:
        fh.write('{"at": "2026-11-29T12:00:00+00:00", "org": "o", "kind": "secret_retention"}\n')
    found = list(shred_ledger.entries(path))
    assert [(e.kind, e.customer_id) for e in found] == [
        ("retention", "cust-a"),
        ("secret_retention", ""),
    ]
    secret = found[1]
    assert (secret.org_id, secret.site_id, secret.secret_ref_id, secret.version) == (
        "org-1",
        "site-1",
        "ref-1",
        3,
    )
    assert secret.at == at
    # Only ids, the version, the time and the kind: no label, no value, no customer.
    line = json.loads(path.read_text().splitlines()[1])
    assert set(line) == {
        "at",
        "kind",
        "org",
        "secret_ref",
        "site",
        "version",
    }
    # The customer-shredding append does not take the new kind (its entry has no customer).
    with pytest.raises(ValueError):
        shred_ledger.append(path, "org-1", "c", kind=shred_ledger.SECRET_RETENTION)


def test_a_folder_ledger_orders_secret_entries_with_the_rest(tmp_path: Path):
    folder = tmp_path / "ledger"
    folder.mkdir()
    shred_ledger.append_secret(folder, "o", "s", "r", 1, datetime(2026, 11, 29, 13, tzinfo=UTC))
    shred_ledger.append(folder, "o", "c", datetime(2026, 11, 29, 12, tzinfo=UTC))
    assert [e.kind for e in shred_ledger.entries(folder)] == ["erasure", "secret_retention"]


def test_a_deleted_site_secret_is_its_own_kind_of_the_same_shape(tmp_path: Path):
    path = tmp_path / "shred.jsonl"
    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    shred_ledger.append_secret(path, "org-1", "site-1", "ref-1", 2, at, shred_ledger.SECRET_DELETE)
    # An unknown kind naming only a secret reference replays as its deletion (the safe side);
    # one naming neither a customer nor a reference is unusable and skipped.
    with path.open("a") as fh:
        fh.write(
            '{"at": "2026-11-29T12:00:00+00:00", "org": "o", "kind": "?", "site": "s", '
            '"secret_ref": "r", "version": 1}\n'
        )
        fh.write('{"at": "2026-11-29T12:00:00+00:00", "org": "o", "kind": "?", "site": "s"}\n')
    found = list(shred_ledger.entries(path))
    assert [
        (e.kind, e.org_id, e.site_id, e.secret_ref_id, e.version, e.customer_id) for e in found
    ] == [
        ("secret_delete", "org-1", "site-1", "ref-1", 2, ""),
        ("secret_delete", "o", "s", "r", 1, ""),
    ]
    assert found[0].at == at
    # The same fields as a retired secret's line: ids, the version, the time and the kind.
    line = json.loads(path.read_text().splitlines()[0])
    assert set(line) == {"at", "kind", "org", "secret_ref", "site", "version"}
    assert line["kind"] == "secret_delete"
    # A secret line takes a secret kind only; the customer kinds stay append's.
    with pytest.raises(ValueError):
        shred_ledger.append_secret(path, "o", "s", "r", 1, kind=shred_ledger.ERASURE)
    with pytest.raises(ValueError):
        shred_ledger.append(path, "o", "c", kind=shred_ledger.SECRET_DELETE)
