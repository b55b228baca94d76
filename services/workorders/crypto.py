"""Envelope encryption of customer contact data.

Each customer has a data key made by the secrets service (CreateDataKey: a fresh AES-256 key and
the same key wrapped by the customer's Vault transit key). Only the wrapped key is stored. Fields
are sealed locally with AES-256-GCM, the customer id as associated data (a ciphertext moved to
another customer does not open). Plaintext keys are cached in memory for a short time so a page
of customers does not cost a Vault round trip per read; destroying the customer's transit key
(eraseCustomer) makes every copy of the ciphertext, backups included, unreadable.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from doorward_kit.errors import DoorwardError, ErrorCode

NONCE_BYTES = 12
KEY_BYTES = 32


@dataclass(frozen=True)
class DataKey:
    plaintext: bytes
    wrapped: bytes
    version: int


def seal(key: bytes, customer_id: str, plaintext: str) -> bytes:
    if len(key) != KEY_BYTES:
        raise DoorwardError(ErrorCode.INTERNAL, "data key has the wrong length")
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), customer_id.encode())


def open_sealed(key: bytes, customer_id: str, sealed: bytes) -> str:
    try:
        nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        return AESGCM(key).decrypt(nonce, body, customer_id.encode()).decode()
    except (InvalidTag, ValueError):
        # Never say more: the message must not help anyone probe the ciphertext.
        raise DoorwardError(ErrorCode.INTERNAL, "customer data cannot be decrypted") from None


class DataKeyCache:
    """customer id -> plaintext data key, for `ttl` seconds, at most `size` entries (LRU)."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def get(self, customer_id: str) -> bytes | None:
        entry = self._entries.get(customer_id)
        if entry is None:
            return None
        key, expires = entry
        if expires <= self._clock():
            del self._entries[customer_id]
            return None
        self._entries.move_to_end(customer_id)
        return key

    def put(self, customer_id: str, key: bytes) -> None:
        if self._ttl <= 0:
            return
        self._entries[customer_id] = (key, self._clock() + self._ttl)
        self._entries.move_to_end(customer_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, customer_id: str) -> None:
        self._entries.pop(customer_id, None)

    def __len__(self) -> int:
        return len(self._entries)


class ContactCrypto:
    """Seals and opens one customer's fields; fetches data keys through the secrets service."""

    def __init__(
        self,
        create_key: Callable[[str, str], Awaitable[DataKey]],
        decrypt_key: Callable[[str, str, bytes], Awaitable[bytes]],
        cache: DataKeyCache,
    ) -> None:
        self._create = create_key
        self._decrypt = decrypt_key
        self.cache = cache
        # Concurrent readers of one customer (name and address resolve in parallel) share
        # one unwrap instead of racing to Vault.
        self._inflight: dict[str, asyncio.Future[bytes]] = {}

    async def new_key(self, org_id: str, customer_id: str) -> DataKey:
        key = await self._create(org_id, customer_id)
        self.cache.put(customer_id, key.plaintext)
        return key

    async def key_for(self, org_id: str, customer_id: str, wrapped: bytes | None) -> bytes:
        if wrapped is None:
            raise DoorwardError(ErrorCode.CONFLICT, "this customer's data has been erased")
        cached = self.cache.get(customer_id)
        if cached is not None:
            return cached
        pending = self._inflight.get(customer_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[customer_id] = future
        try:
            key = await self._decrypt(org_id, customer_id, wrapped)
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)
                future.exception()  # retrieved: no warning when nobody else waits
            raise
        finally:
            self._inflight.pop(customer_id, None)
        self.cache.put(customer_id, key)
        future.set_result(key)
        return key
