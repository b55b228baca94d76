"""Password hashing (argon2id) and the password rules: at least 12 characters, not one of the
most common passwords (also not one with digits or symbols merely appended)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from doorward_kit.errors import bad_input

MIN_LENGTH = 12
# argon2 hashes whatever it gets; a cap keeps one request from costing megabytes of hashing.
MAX_LENGTH = 256
COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent.parent / "common_passwords.txt"
_TRAILING_NOISE = re.compile(r"[\d\W_]+$")
_RUNS = (
    "01234567890123456789012345678901234567890",
    "98765432109876543210987654321098765432109",
    "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
    "zyxwvutsrqponmlkjihgfedcbazyxwvutsrqponmlkjihgfedcba",
    "qwertyuiopasdfghjklzxcvbnmqwertyuiopasdfghjklzxcvbnm",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
)
MIN_DISTINCT = 5


@functools.cache
def common_passwords() -> frozenset[str]:
    with COMMON_PASSWORDS_FILE.open(encoding="utf-8") as lines:
        return frozenset(
            line.strip().lower() for line in lines if line.strip() and not line.startswith("#")
        )


def is_common(password: str) -> bool:
    lowered = password.strip().lower()
    common = common_passwords()
    if lowered in common:
        return True
    # Repetition and keyboard or alphabet runs ("aaaaaaaaaaaa", "1234567890123").
    if len(set(lowered)) < MIN_DISTINCT or any(lowered in run for run in _RUNS):
        return True
    # "password1234!" is "password" with noise appended; so is "qwertyuiop12".
    base = _TRAILING_NOISE.sub("", lowered)
    return len(base) >= 4 and base != lowered and base in common


def check_new_password(password: str) -> None:
    """Raise BAD_USER_INPUT naming the rule that failed (never the password)."""
    if len(password) < MIN_LENGTH:
        raise bad_input(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise bad_input(f"the password must have at most {MAX_LENGTH} characters")
    if is_common(password):
        raise bad_input("this password is too common; choose another")


class Passwords:
    def __init__(self, *, time_cost: int, memory_cost: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        # Verified instead of a real hash when the email is unknown, so timing says nothing.
        self._dummy_hash = self._hasher.hash("doorward-dummy-password-for-timing")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        if len(password) > MAX_LENGTH:
            password = password[:MAX_LENGTH]
        try:
            return self._hasher.verify(password_hash or self._dummy_hash, password) and (
                password_hash is not None
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
