import os
import stat
import time

import jwt
import pytest

from doorward_kit.auth import NoSessionGuard, StaticJwksSource, TokenScope, TokenVerifier
from services.identity.keys import CLOCK_SKEW_SECONDS, KeyRing
from services.identity.service.tokens import AccessTokenIssuer

pytestmark = pytest.mark.unit

T0 = 1_800_000_000


def ring(tmp_path, **kw) -> KeyRing:
    keys = KeyRing(tmp_path / "keys", max_age=kw.pop("max_age", 3600), token_ttl=600, **kw)
    keys.load(now=T0)
    return keys


def test_files_are_private_and_reloaded(tmp_path):
    keys = ring(tmp_path)
    for path in (tmp_path / "keys").iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    again = ring(tmp_path)
    assert again.current(T0).kid == keys.current(T0).kid
    assert again.derived_key("totp-secrets") == keys.derived_key("totp-secrets")
    assert keys.derived_key("totp-secrets") != keys.derived_key("login-throttle")


def test_rotation_prepublishes_then_retires_after_tokens_expired(tmp_path):
    keys = ring(tmp_path, max_age=3600, prepublish=30)
    first = keys.current(T0).kid
    keys.maintain(now=T0 + 3600)
    second = [k["kid"] for k in keys.jwks(now=T0 + 3600)["keys"]]
    assert len(second) == 2 and first in second
    # Published, not yet signing: verifiers learn it first.
    assert keys.current(T0 + 3600 + 10).kid == first
    assert keys.current(T0 + 3600 + 30).kid != first
    # The old key stays while tokens it signed may live, then leaves the JWKS and the disk.
    switched = T0 + 3600 + 30
    still = [k["kid"] for k in keys.jwks(now=switched + 600)["keys"]]
    assert first in still
    keys.maintain(now=switched + 600 + CLOCK_SKEW_SECONDS + 1)
    gone = [k["kid"] for k in keys.jwks(now=switched + 600 + CLOCK_SKEW_SECONDS + 1)["keys"]]
    assert first not in gone
    assert not list((tmp_path / "keys").glob(f"signing-{first}.pem"))


async def test_tokens_of_the_previous_key_still_verify_after_rotation(tmp_path):
    now = time.time()
    keys = KeyRing(tmp_path / "keys", max_age=3600, token_ttl=600, prepublish=0)
    keys.load(now=now - 100)
    issuer = AccessTokenIssuer(keys, 600)
    old, _ = issuer.issue(
        user_id="u",
        org_id="o",
        roles=["ADMIN"],
        region_ids=[],
        session_id="s",
        epoch=0,
        scope=TokenScope.FULL,
        now=now - 50,
    )
    keys.rotate(now=now)
    new, _ = issuer.issue(
        user_id="u",
        org_id="o",
        roles=["ADMIN"],
        region_ids=[],
        session_id="s",
        epoch=0,
        scope=TokenScope.FULL,
    )
    assert jwt.get_unverified_header(old)["kid"] != jwt.get_unverified_header(new)["kid"]
    verifier = TokenVerifier(StaticJwksSource(keys.jwks()), NoSessionGuard())
    assert (await verifier.verify(old)).user_id == "u"
    assert (await verifier.verify(new)).user_id == "u"


def test_jwks_holds_public_keys_only(tmp_path):
    document = ring(tmp_path).jwks()
    for key in document["keys"]:
        assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}


def test_replicas_sharing_the_key_folder_rotate_once_and_agree(tmp_path):
    """Two identity replicas on one key folder: one rotation between them, and each picks up
    the other's new key at its next maintenance (so both publish it before it signs)."""
    a, b = ring(tmp_path), ring(tmp_path)
    assert a.current(T0).kid == b.current(T0).kid
    later = T0 + 3600
    a.maintain(now=later)
    b.maintain(now=later)
    kids_a = [k["kid"] for k in a.jwks(now=later)["keys"]]
    kids_b = [k["kid"] for k in b.jwks(now=later)["keys"]]
    assert kids_a == kids_b and len(kids_a) == 2
    assert len(list((tmp_path / "keys").glob("signing-*.pem"))) == 2
    assert a.current(later + 31).kid == b.current(later + 31).kid == kids_a[-1]
