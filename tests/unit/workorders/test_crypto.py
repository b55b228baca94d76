"""Envelope encryption pieces: AES-GCM bound to the customer, the bounded key cache, and one
unwrap for concurrent readers."""

from __future__ import annotations

import asyncio
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from doorward_kit.errors import DoorwardError, ErrorCode
from services.workorders.crypto import (
    V2_MAGIC,
    CiphertextRejected,
    ContactCrypto,
    DataKey,
    DataKeyCache,
    address_binding,
    contact_binding,
    open_sealed,
    seal,
)

pytestmark = pytest.mark.unit


def test_seal_opens_only_for_the_same_customer() -> None:
    key = os.urandom(32)
    sealed = seal(key, contact_binding("customer-a"), "Ada Lovelace")
    assert b"Ada" not in sealed
    assert open_sealed(key, contact_binding("customer-a"), sealed).text == "Ada Lovelace"
    with pytest.raises(DoorwardError) as moved:
        open_sealed(key, contact_binding("customer-b"), sealed)
    assert "Ada" not in moved.value.message
    with pytest.raises(DoorwardError):
        open_sealed(os.urandom(32), contact_binding("customer-a"), sealed)
    # A fresh nonce every time: equal plaintexts do not give equal ciphertexts.
    assert seal(key, contact_binding("a"), "x") != seal(key, contact_binding("a"), "x")


def test_a_ciphertext_opens_only_in_its_own_field_and_site() -> None:
    key = os.urandom(32)
    home = address_binding("customer-a", "site-1")
    sealed = seal(key, home, "1 High Street")
    assert open_sealed(key, home, sealed).text == "1 High Street"
    for elsewhere in (address_binding("customer-a", "site-2"), contact_binding("customer-a")):
        with pytest.raises(CiphertextRejected) as refused:
            open_sealed(key, elsewhere, sealed)
        assert refused.value.code == ErrorCode.UNAVAILABLE
        assert "High" not in refused.value.message


def _v1(key: bytes, customer_id: str, text: str, nonce: bytes | None = None) -> bytes:
    """The format before field binding: nonce || AES-GCM(text, AD = customer id)."""
    nonce = nonce or os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, text.encode(), customer_id.encode())


def test_v1_opens_only_in_upgrade_mode_and_is_flagged_for_resealing() -> None:
    key = os.urandom(32)
    old = _v1(key, "customer-a", "1 High Street")
    where = address_binding("customer-a", "site-1")
    with pytest.raises(CiphertextRejected):
        open_sealed(key, where, old)
    opened = open_sealed(key, where, old, accept_v1=True)
    assert opened.text == "1 High Street" and opened.legacy
    # A v1 ciphertext whose random nonce happens to begin with the v2 magic still opens.
    lucky = _v1(key, "customer-a", "x", nonce=V2_MAGIC + os.urandom(8))
    assert open_sealed(key, where, lucky, accept_v1=True).text == "x"
    assert not open_sealed(key, where, seal(key, where, "y"), accept_v1=True).legacy


def test_cache_expires_and_is_bounded() -> None:
    now = [0.0]
    cache = DataKeyCache(ttl=60, size=2, clock=lambda: now[0])
    cache.put("a", b"1")
    cache.put("b", b"2")
    assert cache.get("a") == b"1"
    cache.put("c", b"3")  # evicts the least recently used: b
    assert cache.get("b") is None and len(cache) == 2
    now[0] = 61
    assert cache.get("a") is None and cache.get("c") is None
    off = DataKeyCache(ttl=0, size=10)
    off.put("a", b"1")
    assert off.get("a") is None


async def test_concurrent_readers_share_one_unwrap_and_erased_is_refused() -> None:
    calls = []

    async def create(org: str, customer: str) -> DataKey:
        return DataKey(os.urandom(32), b"wrapped", 1)

    async def decrypt(org: str, customer: str, wrapped: bytes) -> bytes:
        calls.append(customer)
        await asyncio.sleep(0.01)
        return b"k" * 32

    crypto = ContactCrypto(create, decrypt, DataKeyCache(ttl=60, size=10))
    keys = await asyncio.gather(*(crypto.key_for("o", "c", b"w") for _ in range(5)))
    assert keys == [b"k" * 32] * 5 and calls == ["c"]
    with pytest.raises(DoorwardError) as erased:
        await crypto.key_for("o", "gone", None)
    assert erased.value.code is ErrorCode.CONFLICT


async def test_a_failed_unwrap_is_not_cached() -> None:
    async def create(org: str, customer: str) -> DataKey:
        raise AssertionError

    async def decrypt(org: str, customer: str, wrapped: bytes) -> bytes:
        raise DoorwardError(ErrorCode.UNAVAILABLE, "the vault is sealed or unreachable")

    crypto = ContactCrypto(create, decrypt, DataKeyCache(ttl=60, size=10))
    for _ in range(2):
        with pytest.raises(DoorwardError):
            await crypto.key_for("o", "c", b"w")
    assert len(crypto.cache) == 0
