"""TOTP (RFC 6238) with replay protection, one-time recovery codes stored as hashes, and
AES-GCM encryption of TOTP secrets at rest (bound to their user by the associated data)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ISSUER_NAME = "Doorward"
RECOVERY_CODE_COUNT = 10
_STEP_SECONDS = 30
_NONCE_BYTES = 12
_RECOVERY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, user_id: str, secret: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), user_id.encode())

    def open(self, user_id: str, sealed: bytes) -> str:
        try:
            plain = self._aead.decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], user_id.encode()
            )
        except InvalidTag:
            raise RuntimeError("a stored TOTP secret cannot be decrypted with this key") from None
        return plain.decode()


def new_secret() -> str:
    return pyotp.random_base32()


def otpauth_uri(secret: str, account_name: str, issuer: str = ISSUER_NAME) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account_name, issuer_name=issuer)


def looks_like_totp(otp: str) -> bool:
    digits = otp.strip().replace(" ", "")
    return len(digits) == 6 and digits.isdigit()


def verify_totp(secret: str, otp: str, last_step: int, now: float | None = None) -> int | None:
    """The time step the code belongs to (one step of drift either way), or None. A code whose
    step is not after `last_step` was already used: refused."""
    code = otp.strip().replace(" ", "")
    if not looks_like_totp(code):
        return None
    totp = pyotp.TOTP(secret)
    step = int((now if now is not None else time.time()) // _STEP_SECONDS)
    for candidate in (step - 1, step, step + 1):
        if hmac.compare_digest(totp.generate_otp(candidate), code) and candidate > last_step:
            return candidate
    return None


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """Codes like 'K7QX-M2PA-9TZC' (60 bits each)."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(12))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
    return codes


def normalise_recovery_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def hash_recovery_code(code: str) -> str:
    # High-entropy random codes: a plain SHA-256 cannot be brute-forced back.
    return hashlib.sha256(normalise_recovery_code(code).encode()).hexdigest()
