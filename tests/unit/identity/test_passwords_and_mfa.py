import time

import pyotp
import pytest

from doorward_kit.errors import DoorwardError, ErrorCode
from services.identity.service import mfa
from services.identity.service.passwords import (
    Passwords,
    check_new_password,
    common_passwords,
    is_common,
)

pytestmark = pytest.mark.unit


def test_the_shipped_list_is_large():
    assert len(common_passwords()) >= 9_000
    assert "password" in common_passwords()


@pytest.mark.parametrize(
    "password",
    [
        "short",
        "elevenchars",
        "password1234",
        "Qwertyuiop12",
        "PASSWORD123!",
        "1234567890123",
        "aaaaaaaaaaaaaaa",
        "abababababab",
    ],
)
def test_weak_passwords_are_refused(password):
    with pytest.raises(DoorwardError) as refused:
        check_new_password(password)
    assert refused.value.code is ErrorCode.BAD_USER_INPUT
    assert password not in refused.value.message


@pytest.mark.parametrize(
    "password", ["correct horse battery", "Tr4vel-Mug-Orbit", "plum-ferry-Q7!-lantern"]
)
def test_good_passwords_pass(password):
    check_new_password(password)
    assert not is_common(password)


def test_hash_and_verify():
    hasher = Passwords(time_cost=1, memory_cost=8, parallelism=1)
    stored = hasher.hash("a long passphrase")
    assert stored.startswith("$argon2id$")
    assert hasher.verify(stored, "a long passphrase")
    assert not hasher.verify(stored, "a long passphrasE")
    # Unknown account: the dummy hash is verified and the answer is always no.
    assert not hasher.verify(None, "doorward-dummy-password-for-timing")
    assert not hasher.verify("not a hash", "anything")


def test_totp_is_good_once_and_within_one_step():
    secret = mfa.new_secret()
    now = time.time()
    code = pyotp.TOTP(secret).at(now)
    step = mfa.verify_totp(secret, code, 0, now)
    assert step is not None
    assert mfa.verify_totp(secret, code, step, now) is None  # replay
    assert mfa.verify_totp(secret, pyotp.TOTP(secret).at(now - 30), 0, now) is not None
    assert mfa.verify_totp(secret, pyotp.TOTP(secret).at(now - 120), 0, now) is None
    assert mfa.verify_totp(secret, "12345", 0, now) is None


def test_secret_box_binds_to_user():
    box = mfa.SecretBox(b"k" * 32)
    sealed = box.seal("user-1", "JBSWY3DPEHPK3PXP")
    assert b"JBSWY3DPEHPK3PXP" not in sealed
    assert box.open("user-1", sealed) == "JBSWY3DPEHPK3PXP"
    with pytest.raises(RuntimeError):
        box.open("user-2", sealed)


def test_recovery_codes():
    codes = mfa.new_recovery_codes()
    assert len(set(codes)) == 10
    assert mfa.hash_recovery_code(codes[0]) == mfa.hash_recovery_code(
        codes[0].lower().replace("-", " ")
    )
    assert codes[0] not in mfa.hash_recovery_code(codes[0])


def test_otpauth_uri():
    secret = mfa.new_secret()
    uri = mfa.otpauth_uri(secret, "a@example.com")
    assert uri.startswith("otpauth://totp/Doorward:") and f"secret={secret}" in uri
