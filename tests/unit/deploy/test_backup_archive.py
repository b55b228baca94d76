"""The archive's streaming AEAD and the key rules (deploy/backup/archive.py, ops.read_key)."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest

from deploy.backup import archive
from deploy.backup.archive import ArchiveDamaged, DecryptingReader, EncryptingWriter
from deploy.backup.ops import read_key
from deploy.errors import DeployError

pytestmark = pytest.mark.unit

KEY = b"a backup key of some length"


def seal(plain: bytes, key: bytes = KEY) -> bytes:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, key)
    for i in range(0, len(plain), 70_000):
        writer.write(plain[i : i + 70_000])
    writer.close()
    return sink.getvalue()


def open_(sealed: bytes, key: bytes = KEY) -> bytes:
    reader = DecryptingReader(io.BytesIO(sealed), key)
    out = reader.read()
    reader.drain()
    return out


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(archive, "CHUNK", 4096)


def test_round_trip_of_several_chunks_and_of_nothing():
    plain = os.urandom(50_000)
    assert open_(seal(plain)) == plain
    assert open_(seal(b"")) == b""


def test_the_plaintext_does_not_appear_and_each_archive_differs():
    plain = b"canary-door-code " * 1000
    one, two = seal(plain), seal(plain)
    assert b"canary" not in one
    assert one != two  # fresh salt and nonce prefix


@pytest.mark.parametrize("where", [0, 20, 40, -1, -20])
def test_any_flipped_byte_is_refused(where):
    sealed = bytearray(seal(os.urandom(20_000)))
    sealed[where] ^= 0x01
    with pytest.raises(ArchiveDamaged):
        open_(bytes(sealed))


def test_truncation_dropped_and_appended_chunks_are_refused():
    sealed = seal(os.urandom(20_000))
    with pytest.raises(ArchiveDamaged, match="truncated"):
        open_(sealed[:-10])
    # Drop the final chunk exactly at a chunk boundary: no final flag seen.
    first_len = struct.unpack(">I", sealed[archive.HEADER_BYTES : archive.HEADER_BYTES + 4])[0]
    first_end = archive.HEADER_BYTES + 4 + first_len
    with pytest.raises(ArchiveDamaged):
        open_(sealed[:first_end])
    with pytest.raises(ArchiveDamaged):
        open_(sealed + b"x")
    # Swap two chunks: the counter in the nonce refuses the order.
    second_len = struct.unpack(">I", sealed[first_end : first_end + 4])[0]
    second_end = first_end + 4 + second_len
    swapped = (
        sealed[: archive.HEADER_BYTES]
        + sealed[first_end:second_end]
        + sealed[archive.HEADER_BYTES : first_end]
        + sealed[second_end:]
    )
    with pytest.raises(ArchiveDamaged):
        open_(swapped)


def test_wrong_key_and_foreign_files_are_refused():
    sealed = seal(b"hello" * 100)
    with pytest.raises(ArchiveDamaged, match="key is wrong"):
        open_(sealed, b"another key of some length")
    with pytest.raises(ArchiveDamaged, match="not a Doorward"):
        open_(b"PK\x03\x04 a zip file")


def test_short_keys_are_refused():
    with pytest.raises(DeployError, match="at least 16"):
        seal(b"x", b"short")


def test_key_from_file_or_variable_never_beside_the_archive(tmp_path: Path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "k").write_text("from the file, long enough\n")
    out = tmp_path / "archives" / "a.dwbackup"
    assert read_key(keys / "k", {}, out) == b"from the file, long enough"
    assert read_key(None, {"DOORWARD_BACKUP_KEY": "from the variable"}, out) == b"from the variable"
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / "k").write_text("beside the archive")
    with pytest.raises(DeployError, match="archive's folder"):
        read_key(tmp_path / "archives" / "k", {}, out)
    with pytest.raises(DeployError, match="DOORWARD_BACKUP_KEY"):
        read_key(None, {}, out)


def test_backup_approle_from_up_or_from_provision(tmp_path: Path, monkeypatch):
    import json

    import httpx

    from deploy.backup import ops

    sent: list[dict] = []

    def fake_post(url, json=None, **_kw):
        sent.append(json)
        return httpx.Response(200, json={"auth": {"client_token": "t"}})

    monkeypatch.setattr(ops.httpx, "post", fake_post)
    folder = tmp_path / "credentials" / "backup"
    with pytest.raises(DeployError, match="no backup AppRole"):
        ops.backup_token("http://vault", tmp_path)
    folder.mkdir(parents=True)
    (folder / "vault-role-id").write_text("r1\n")
    (folder / "vault-secret-id").write_text("s1\n")
    assert ops.backup_token("http://vault", tmp_path) == "t"
    (folder / "vault-approle.json").write_text(json.dumps({"role_id": "r2", "secret_id": "s2"}))
    ops.backup_token("http://vault", tmp_path)
    assert sent == [{"role_id": "r1", "secret_id": "s1"}, {"role_id": "r2", "secret_id": "s2"}]
