"""Envelope encryption of customer contact data.

Each customer has a data key made by the secrets service (CreateDataKey: a fresh AES-256 key and
the same key wrapped by the customer's Vault transit key). Only the wrapped key is stored. Fields
are sealed locally with AES-256-GCM. Plaintext keys are cached in memory for a short time so a
page of customers does not cost a Vault round trip per read; destroying the customer's transit
key (eraseCustomer) makes every copy of the ciphertext, backups included, unreadable.

What a ciphertext is bound to (its AEAD associated data) is where it may be read: the customer,
the field and, for an address, the site. A database writer can copy bytes between columns and
rows but cannot make a customer's contact blob open as a site's address, nor one site's address
open as another's (issue 10, finding 7).

Formats: v2 = b"dwc2" || nonce || AES-256-GCM(text, AD = v2 binding). v1 (before) = nonce ||
AES-256-GCM(text, AD = customer id), bound to the customer only. A v1 ciphertext opens only
while the operator runs the one-off upgrade (`upgrade_v1`, DOORWARD_WORKORDERS_CONTACT_V1_UPGRADE)
and is then sealed again as v2 by the reader; otherwise it is refused like any tampered one.
The switch lives outside the database on purpose: no row a database writer can change (a format
column, a "migrated" marker) decides whether the weaker format is accepted, so writing an old
v1 ciphertext back cannot reopen the swap.
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
V2_MAGIC = b"dwc2"
CONTACT_FIELD = "contact"  # the customer's JSON {name, phone, email}
ADDRESS_FIELD = "address"  # one site's address


@dataclass(frozen=True)
class DataKey:
    plaintext: bytes
    wrapped: bytes
    version: int


@dataclass(frozen=True)
class Binding:
    """Where a ciphertext may be opened: customer, field and (for an address) site."""

    customer_id: str
    field: str
    site_id: str = ""

    def associated_data(self) -> bytes:
        # NUL-separated: ids and field names never contain one, so no two bindings collide.
        parts = ("doorward.contact.v2", self.customer_id, self.field, self.site_id)
        return "\x00".join(parts).encode()


def contact_binding(customer_id: str) -> Binding:
    return Binding(customer_id, CONTACT_FIELD)


def address_binding(customer_id: str, site_id: str) -> Binding:
    return Binding(customer_id, ADDRESS_FIELD, site_id)


class CiphertextRejected(DoorwardError):
    """A stored ciphertext does not open where it was read: tampered with, moved from another
    field, site or customer, or an old format no longer accepted. Says nothing more: the
    message must not help anyone probe the ciphertext."""

    def __init__(self) -> None:
        super().__init__(
            ErrorCode.UNAVAILABLE, "customer data is unavailable: it failed its integrity check"
        )


@dataclass(frozen=True)
class Opened:
    text: str
    # Read from a v1 ciphertext (upgrade mode only): the caller stores `seal(...)` of it again.
    legacy: bool = False


def seal(key: bytes, binding: Binding, plaintext: str) -> bytes:
    if len(key) != KEY_BYTES:
        raise DoorwardError(ErrorCode.INTERNAL, "data key has the wrong length")
    nonce = os.urandom(NONCE_BYTES)
    body = AESGCM(key).encrypt(nonce, plaintext.encode(), binding.associated_data())
    return V2_MAGIC + nonce + body


def open_sealed(key: bytes, binding: Binding, sealed: bytes, *, accept_v1: bool = False) -> Opened:
    if sealed.startswith(V2_MAGIC):
        rest = sealed[len(V2_MAGIC) :]
        try:
            nonce, body = rest[:NONCE_BYTES], rest[NONCE_BYTES:]
            text = AESGCM(key).decrypt(nonce, body, binding.associated_data()).decode()
            return Opened(text)
        except (InvalidTag, ValueError):
            pass  # tampered, moved, or a v1 ciphertext whose random nonce began with the magic
    if accept_v1:
        try:
            nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
            text = AESGCM(key).decrypt(nonce, body, binding.customer_id.encode()).decode()
            return Opened(text, legacy=True)
        except (InvalidTag, ValueError):
            pass
    raise CiphertextRejected()


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
        *,
        upgrade_v1: bool = False,
    ) -> None:
        self._create = create_key
        self._decrypt = decrypt_key
        self.cache = cache
        self.upgrade_v1 = upgrade_v1
        # Concurrent readers of one customer (name and address resolve in parallel) share
        # one unwrap instead of racing to Vault.
        self._inflight: dict[str, asyncio.Future[bytes]] = {}

    def open(self, key: bytes, binding: Binding, sealed: bytes) -> Opened:
        return open_sealed(key, binding, sealed, accept_v1=self.upgrade_v1)

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
