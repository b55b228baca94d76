"""The archive's encryption: a streaming AEAD (AES-256-GCM in chunks) around a tar stream.

Layout: header = b"DWBACKUP" || version (1 byte) || scrypt salt (16) || nonce prefix (7); then
chunks, each a 4-byte big-endian length and AES-256-GCM(plaintext <= 1 MiB) with nonce =
prefix || chunk counter (4 bytes) || final flag (1 byte) and the header as associated data.
Every byte is authenticated: a flipped bit, reordered or dropped chunks, a swapped header or a
truncated file (no final chunk) all fail, as does a wrong key. Inside, every member's SHA-256 is
listed in manifest.json (the last member), which verify and restore check as well.

The key is the operator's (--key-file or DOORWARD_BACKUP_KEY, at least 16 characters): scrypt
turns it into the AES key with a fresh salt per archive. Nothing derived from it is stored.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from deploy.errors import DeployError

MAGIC = b"DWBACKUP"
VERSION = 1
HEADER_BYTES = len(MAGIC) + 1 + 16 + 7
CHUNK = 1 << 20
_TAG = 16
MIN_KEY_CHARS = 16


class ArchiveDamaged(DeployError):
    """The archive is not one of ours, was changed, is truncated, or the key is wrong."""


def derive_key(secret: bytes, salt: bytes) -> bytes:
    if len(secret.strip()) < MIN_KEY_CHARS:
        raise DeployError(f"the backup key must be at least {MIN_KEY_CHARS} characters")
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(secret.strip())


def _nonce(prefix: bytes, counter: int, final: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if final else 0)


class EncryptingWriter:
    """A write-only file object (for tarfile's stream mode) that encrypts into `sink`."""

    def __init__(self, sink: BinaryIO, secret: bytes) -> None:
        salt, prefix = os.urandom(16), os.urandom(7)
        self.header = MAGIC + bytes([VERSION]) + salt + prefix
        self._aead = AESGCM(derive_key(secret, salt))
        self._prefix = prefix
        self._sink = sink
        self._buffer = bytearray()
        self._counter = 0
        self._closed = False
        sink.write(self.header)

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) > CHUNK:  # keep one chunk back: the last one is marked final
            self._emit(bytes(self._buffer[:CHUNK]), final=False)
            del self._buffer[:CHUNK]
        return len(data)

    def _emit(self, plain: bytes, *, final: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._prefix, self._counter, final), plain, self.header)
        self._sink.write(struct.pack(">I", len(sealed)) + sealed)
        self._counter += 1

    def close(self) -> None:
        if not self._closed:
            self._emit(bytes(self._buffer), final=True)
            self._buffer.clear()
            self._closed = True


class DecryptingReader:
    """A read-only file object over an archive; raises ArchiveDamaged at the first bad byte."""

    def __init__(self, source: BinaryIO, secret: bytes) -> None:
        header = source.read(HEADER_BYTES)
        if len(header) != HEADER_BYTES or not header.startswith(MAGIC):
            raise ArchiveDamaged("not a Doorward backup archive")
        if header[len(MAGIC)] != VERSION:
            raise ArchiveDamaged(f"archive format {header[len(MAGIC)]} is not supported")
        salt = header[len(MAGIC) + 1 : len(MAGIC) + 17]
        self._prefix = header[len(MAGIC) + 17 :]
        self._aead = AESGCM(derive_key(secret, salt))
        self._header = header
        self._source = source
        self._counter = 0
        self._buffer = bytearray()
        self._done = False

    def _next(self) -> None:
        size_raw = self._source.read(4)
        if len(size_raw) != 4:
            raise ArchiveDamaged("the archive is truncated")
        (size,) = struct.unpack(">I", size_raw)
        if size < _TAG or size > CHUNK + _TAG:
            raise ArchiveDamaged("the archive is damaged (bad chunk length)")
        sealed = self._source.read(size)
        if len(sealed) != size:
            raise ArchiveDamaged("the archive is truncated")
        for final in (False, True):
            try:
                plain = self._aead.decrypt(
                    _nonce(self._prefix, self._counter, final), sealed, self._header
                )
            except InvalidTag:
                continue
            self._counter += 1
            self._buffer += plain
            if final:
                if self._source.read(1):
                    raise ArchiveDamaged("the archive has bytes after its end")
                self._done = True
            return
        raise ArchiveDamaged(
            "the archive failed its integrity check: it was changed, or the key is wrong"
        )

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buffer) < n):
            self._next()
        if n < 0:
            n = len(self._buffer)
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def drain(self) -> None:
        """Authenticate the rest (tar may stop reading before the final chunk)."""
        while not self._done:
            self._next()
            self._buffer.clear()
