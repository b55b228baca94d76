"""The shred ledger: one line per erasure, kept outside the data folder.

Four kinds of erasure write it: an ADMIN's eraseCustomer (GDPR Art. 17; kind "erasure": key,
site secrets and rows), the retention purge of a customer's contact data (kind "retention": key
and contact rows; the sites' secrets follow their own retention period), the retention of site
secrets (RetireSiteSecrets; kind "secret_retention") and an ADMIN's deletion of a site's
secrets (DeleteSiteSecrets, which eraseCustomer calls per site; kind "secret_delete"). The two
secret kinds are one line per secret reference, written before its Vault data is destroyed,
and replay alike (the data destroyed, the reference marked deleted); the kind says why, for
whoever reads the ledger. Lines written before kinds existed are erasures; a line of an unknown
kind that names a customer replays as an erasure, one that names only a secret reference as a
"secret_delete". A secret line names no customer, so code from before the secret kinds skips it.

Crypto-shredding destroys a customer's transit key in Vault; a backup taken before the erasure
still holds that key. `doorward backup restore` replays this ledger into the restored Vault and
databases before the restored stack serves a request, so an erased customer stays erased.

It must live where a restore cannot lose it: not in the data folder (a restore fills an empty
one) and not in a database or Vault that a backup covers. `doorward up` keeps it beside the data
folder (DOORWARD_SHRED_LEDGER); production points it at storage that outlives the hosts.

A folder instead of a file (an existing directory, e.g. a volume every replica of the secrets
service mounts in Kubernetes): each process appends to its own `<host name>.jsonl` in it, so
replicas never append to one file over a network filesystem (where O_APPEND is not atomic
across clients); reading a folder reads every file in it, in time order.

Pseudonymous: an entry names the organisation and customer (or site, secret reference and its
KV version) by their opaque ids and the time, nothing else (no name, no label, no value, no
contact detail, no reason text). Append-only JSON lines, written with O_APPEND and fsync before
the key (or secret) is destroyed (write-ahead: a crash between the two leaves an entry whose
replay finishes the erasure, never a destroyed key or secret without one).
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ERASURE = "erasure"
RETENTION = "retention"
SECRET_RETENTION = "secret_retention"
SECRET_DELETE = "secret_delete"
# The kinds that shred a customer (append) and those that shred one secret reference
# (append_secret).
CUSTOMER_KINDS = (ERASURE, RETENTION)
SECRET_KINDS = (SECRET_RETENTION, SECRET_DELETE)
KINDS = (*CUSTOMER_KINDS, *SECRET_KINDS)


@dataclass(frozen=True)
class ShredEntry:
    org_id: str
    # "" for an entry of SECRET_KINDS (it names a site's secret reference instead).
    customer_id: str
    at: datetime
    kind: str = ERASURE
    site_id: str = ""
    secret_ref_id: str = ""
    # The KV version the reference pointed at when it was destroyed (every version went).
    version: int = 0


def own_file(path: Path) -> Path:
    """The file this process appends to: `path` itself, or its own file in a ledger folder."""
    if path.is_dir():
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"
        return path / f"{host.lstrip('.') or 'host'}.jsonl"
    return path


def present(path: Path) -> bool:
    """A ledger exists there (a file, or a folder of them)."""
    return path.is_file() or path.is_dir()


def append(
    path: Path, org_id: str, customer_id: str, at: datetime | None = None, kind: str = ERASURE
) -> None:
    """Record one customer's erasure durably (0600 file, appended, fsynced)."""
    if kind not in CUSTOMER_KINDS:
        raise ValueError(f"unknown shred ledger kind {kind!r}")
    when = (at or datetime.now(UTC)).astimezone(UTC)
    _write(path, {"at": when.isoformat(), "org": org_id, "customer": customer_id, "kind": kind})


def append_secret(
    path: Path,
    org_id: str,
    site_id: str,
    secret_ref_id: str,
    version: int,
    at: datetime | None = None,
    kind: str = SECRET_RETENTION,
) -> None:
    """Record one site secret's destruction durably, before its Vault data is destroyed: kind
    secret_retention (the retention purge) or secret_delete (an ADMIN deleted the site's
    secrets). Ids and the version number only."""
    if kind not in SECRET_KINDS:
        raise ValueError(f"unknown shred ledger kind {kind!r}")
    when = (at or datetime.now(UTC)).astimezone(UTC)
    _write(
        path,
        {
            "at": when.isoformat(),
            "org": org_id,
            "site": site_id,
            "secret_ref": secret_ref_id,
            "version": int(version),
            "kind": kind,
        },
    )


def _write(path: Path, item: dict[str, str | int]) -> None:
    path = own_file(path)
    line = json.dumps(item, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure(path: Path) -> None:
    """Create the (empty) ledger if it is missing, so that a missing ledger at restore time
    means a lost one, never "no erasures yet"."""
    path = own_file(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))


def entries(path: Path) -> Iterator[ShredEntry]:
    """Every entry in file order (a folder: every file's, in time order); a torn last line
    (crash mid-write) is skipped."""
    if path.is_dir():
        found = [e for file in sorted(path.glob("*.jsonl")) for e in _file_entries(file)]
        yield from sorted(found, key=lambda e: e.at)
        return
    yield from _file_entries(path)


def _file_entries(path: Path) -> Iterator[ShredEntry]:
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            try:
                item = json.loads(raw)
                kind = str(item.get("kind", ERASURE))
                # An unknown kind replays as the widest known kind of what it names (a customer:
                # the full erasure; only a secret reference: its deletion), the safe side for a
                # shred ledger.
                if kind in SECRET_KINDS or (
                    kind not in KINDS and "customer" not in item and "secret_ref" in item
                ):
                    entry = ShredEntry(
                        str(item["org"]),
                        "",
                        datetime.fromisoformat(item["at"]),
                        kind if kind in SECRET_KINDS else SECRET_DELETE,
                        site_id=str(item["site"]),
                        secret_ref_id=str(item["secret_ref"]),
                        version=int(item["version"]),
                    )
                else:
                    entry = ShredEntry(
                        str(item["org"]),
                        str(item["customer"]),
                        datetime.fromisoformat(item["at"]),
                        kind if kind in KINDS else ERASURE,
                    )
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            yield entry
