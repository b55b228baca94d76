"""Identity's key directory: Ed25519 signing keys (rotated without logging anybody out) and the
data key that encrypts TOTP secrets at rest. Every file is 0600 and created if missing.

Rotation: a new signing key is published in the JWKS `prepublish` seconds before it signs
anything, so every verifier can learn it (they refetch on an unknown kid at most every 5 s);
a retired key stays in the JWKS until every token it signed has expired, then its file goes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import OKPAlgorithm

_PREFIX = "signing-"
_SUFFIX = ".pem"
_DATA_KEY = "data.key"
_LOCK = ".lock"
CLOCK_SKEW_SECONDS = 60


@dataclass(frozen=True)
class SigningKey:
    kid: str
    created_at: int
    private_key: Ed25519PrivateKey

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = OKPAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "alg": "EdDSA", "use": "sig"})
        return jwk


def _write_private(path: Path, data: bytes) -> None:
    # O_EXCL: never overwrite a key; 0600 from the first byte on.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class KeyRing:
    def __init__(
        self,
        key_dir: Path,
        *,
        max_age: float,
        token_ttl: float,
        prepublish: float = 30.0,
    ) -> None:
        self.key_dir = key_dir
        self.max_age = max_age
        self.token_ttl = token_ttl
        self.prepublish = prepublish
        self._keys: list[SigningKey] = []
        self._data_key = b""

    # ---- loading ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Replicas of identity share the key directory: one at a time creates, rotates or
        prunes keys (and nobody reads a key file while it is being written)."""
        self.key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.key_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load(self, now: float | None = None) -> None:
        """Read the directory, creating the data key and a first signing key if missing."""
        with self._exclusive():
            self._load(now)

    def _load(self, now: float | None) -> None:
        os.chmod(self.key_dir, 0o700)
        data_path = self.key_dir / _DATA_KEY
        if not data_path.exists():
            _write_private(data_path, secrets.token_bytes(32))
        self._data_key = data_path.read_bytes()
        if len(self._data_key) != 32:
            raise RuntimeError(f"{data_path} is not a 32-byte key")
        self._keys = sorted(self._read_signing_keys(), key=lambda k: (k.created_at, k.kid))
        if not self._keys:
            self._keys = [self._create(int(now if now is not None else time.time()))]

    def _read_signing_keys(self) -> list[SigningKey]:
        keys = []
        for path in self.key_dir.glob(f"{_PREFIX}*{_SUFFIX}"):
            kid = path.name[len(_PREFIX) : -len(_SUFFIX)]
            created_text, _, _ = kid.partition("-")
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(private, Ed25519PrivateKey) or not created_text.isdigit():
                raise RuntimeError(f"{path.name} is not a Doorward signing key")
            keys.append(SigningKey(kid, int(created_text), private))
        return keys

    def _create(self, created_at: int) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        kid = f"{created_at}-{secrets.token_hex(4)}"
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(self.key_dir / f"{_PREFIX}{kid}{_SUFFIX}", pem)
        return SigningKey(kid, created_at, private)

    # ---- rotation -----------------------------------------------------------------------------

    def _activation(self, index: int) -> float:
        key = self._keys[index]
        return float(key.created_at) if index == 0 else key.created_at + self.prepublish

    def _current_index(self, now: float) -> int:
        current = 0
        for index in range(len(self._keys)):
            if self._activation(index) <= now:
                current = index
        return current

    def current(self, now: float | None = None) -> SigningKey:
        at = now if now is not None else time.time()
        return self._keys[self._current_index(at)]

    def rotate(self, now: float | None = None) -> SigningKey:
        """Create the next key (published now, signing after `prepublish` seconds)."""
        at = int(now if now is not None else time.time())
        if self._keys and at <= self._keys[-1].created_at:
            at = self._keys[-1].created_at + 1
        key = self._create(at)
        self._keys.append(key)
        return key

    def maintain(self, now: float | None = None) -> None:
        """Rotate when the signing key is too old; forget keys whose tokens have all expired.
        Reads the directory first: another replica may have rotated or pruned already (then
        this one only picks its keys up, so every replica publishes and signs the same)."""
        with self._exclusive():
            self._load(now)
            self._maintain(now)

    def _maintain(self, now: float | None) -> None:
        at = now if now is not None else time.time()
        newest = self._keys[-1]
        if at - newest.created_at >= self.max_age:
            self.rotate(at)
        keep_after = at - self.token_ttl - CLOCK_SKEW_SECONDS
        current = self._current_index(at)
        kept: list[SigningKey] = []
        for index, key in enumerate(self._keys):
            retired_at = self._activation(index + 1) if index < current else None
            if retired_at is not None and retired_at < keep_after:
                (self.key_dir / f"{_PREFIX}{key.kid}{_SUFFIX}").unlink(missing_ok=True)
                continue
            kept.append(key)
        self._keys = kept

    def jwks(self, now: float | None = None) -> dict[str, Any]:
        at = now if now is not None else time.time()
        keep_after = at - self.token_ttl - CLOCK_SKEW_SECONDS
        current = self._current_index(at)
        published = []
        for index, key in enumerate(self._keys):
            if index < current and self._activation(index + 1) < keep_after:
                continue
            published.append(key.public_jwk())
        return {"keys": published}

    # ---- data key -----------------------------------------------------------------------------

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (e.g. "totp-secrets"), derived from the data key."""
        if not self._data_key:
            raise RuntimeError("the key ring is not loaded")
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=f"doorward-{purpose}".encode()
        ).derive(self._data_key)
