"""The gateway's signature on every subgraph request, and the subgraphs' check of it.

Subgraphs answer GraphQL only to the gateway: the gateway signs each request it sends them with
its own Ed25519 key, and a subgraph refuses any request without a valid, fresh signature. The
signature also carries the end user's address (which the gateway alone can know: it sees the
TCP peer and knows its trusted proxies), so a subgraph never reads X-Forwarded-For.

Signed message (UTF-8, one field per line):

    doorward-gateway-v1 / METHOD / PATH[?QUERY] / sha256(body) hex / unix seconds / nonce /
    client address

A signature is good for MAX_AGE_SECONDS either side of the verifier's clock, and each nonce is
accepted once within that window (a captured request cannot be sent again): once per process by
the verifier's own memory, and once across every replica of the subgraph by a NonceLedger
(doorward_kit/nonce_ledger.py: a row in the subgraph's own PostgreSQL), since a balancer may
hand the copy of a request to any replica. Verifying costs one SHA-256 over the body and one
Ed25519 verification (tens of microseconds); the ledger one INSERT (~0.4 ms).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.net import canonical_ip

SIGNATURE_HEADER = "x-doorward-gateway-signature"
CLIENT_ADDRESS_HEADER = "x-doorward-client-address"
MAX_AGE_SECONDS = 30.0
_VERSION = b"doorward-gateway-v1"
# Bounds the replay memory even under a flood of valid requests (~100 bytes each).
_MAX_NONCES = 500_000

Clock = Callable[[], float]


class SignatureRefused(DoorwardError):
    """The request is not from the gateway: no, a bad, a stale or a replayed signature."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            ErrorCode.UNAUTHENTICATED, f"this subgraph answers only the gateway ({reason})"
        )
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    """A request the gateway signed: the end user's address it vouched for, and the nonce and
    time of the signature (for a NonceLedger)."""

    address: str
    nonce: str
    stamp: int


class NonceLedger(Protocol):
    """Nonces seen by every replica of one subgraph."""

    async def claim(self, nonce: str, stamp: int, keep_seconds: float) -> bool:
        """True the first time `nonce` is claimed by any replica; False ever after (until it is
        forgotten, `keep_seconds` after the later of now and `stamp`). Fails closed: raises
        DoorwardError(UNAVAILABLE) when it cannot tell."""
        ...


def _message(method: str, target: str, body: bytes, stamp: int, nonce: str, address: str) -> bytes:
    return b"\n".join(
        (
            _VERSION,
            method.upper().encode(),
            target.encode(),
            hashlib.sha256(body).hexdigest().encode(),
            str(stamp).encode(),
            nonce.encode(),
            address.encode(),
        )
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def clean_address(value: str) -> str:
    """An IP address in canonical form, or '' (doorward_kit.net.canonical_ip)."""
    return canonical_ip(value)


class GatewaySigner:
    """Held by the gateway only: its private key is the gateway's own credential."""

    def __init__(self, key: Ed25519PrivateKey, clock: Clock = time.time) -> None:
        self._key = key
        self._clock = clock

    @classmethod
    def from_file(cls, path: Path, clock: Clock = time.time) -> GatewaySigner:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(key, clock)

    def headers(self, method: str, target: str, body: bytes, client_address: str) -> dict[str, str]:
        """The headers that make this request the gateway's, for this end user's address."""
        address = clean_address(client_address)
        stamp = int(self._clock())
        nonce = secrets.token_urlsafe(16)
        signature = self._key.sign(_message(method, target, body, stamp, nonce, address))
        return {
            CLIENT_ADDRESS_HEADER: address,
            SIGNATURE_HEADER: f"t={stamp};n={nonce};s={_b64(signature)}",
        }


class GatewayVerifier:
    """Held by each subgraph: the gateway's public key and the nonces seen in the window."""

    def __init__(
        self, key: Ed25519PublicKey, *, max_age: float = MAX_AGE_SECONDS, clock: Clock = time.time
    ) -> None:
        self._key = key
        self._max_age = max_age
        self._clock = clock
        # nonce -> when it may be forgotten; insertion order is arrival order, so the expired
        # ones are always at the front and pruning is amortised O(1).
        self._seen: OrderedDict[str, float] = OrderedDict()

    @classmethod
    def from_file(cls, path: Path) -> GatewayVerifier:
        key = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path}: not an Ed25519 public key")
        return cls(key)

    @property
    def max_age(self) -> float:
        return self._max_age

    def verify(self, method: str, target: str, body: bytes, headers: Mapping[str, str]) -> str:
        """The end user's address the gateway signed; SignatureRefused when it did not sign."""
        return self.verified(method, target, body, headers).address

    def precheck(self, headers: Mapping[str, str]) -> None:
        """What can be refused before the body is read (SignatureRefused): no, a malformed or
        a stale signature header, or a nonce this process has seen. A subgraph reads up to its
        body limit before the signature can be checked; a stranger's junk header need not
        cost that much. Passing this proves nothing: `verified` decides."""
        _stamp, nonce, _signature = self._fresh_parts(headers)
        if nonce in self._seen and self._seen[nonce] > self._clock():
            raise SignatureRefused("replayed gateway signature")

    def _fresh_parts(self, headers: Mapping[str, str]) -> tuple[int, str, bytes]:
        raw = headers.get(SIGNATURE_HEADER)
        if not raw:
            raise SignatureRefused("no gateway signature")
        try:
            parts = dict(item.split("=", 1) for item in raw.split(";"))
            stamp = int(parts["t"])
            nonce = parts["n"]
            signature = _unb64(parts["s"])
        except (ValueError, KeyError, binascii.Error):
            raise SignatureRefused("malformed gateway signature") from None
        if not 8 <= len(nonce) <= 64:
            raise SignatureRefused("malformed gateway signature")
        if abs(self._clock() - stamp) > self._max_age:
            raise SignatureRefused("stale gateway signature")
        return stamp, nonce, signature

    def verified(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str]
    ) -> Verified:
        """What the gateway signed, its nonce used once in this process; SignatureRefused when
        the gateway did not sign it."""
        stamp, nonce, signature = self._fresh_parts(headers)
        address = headers.get(CLIENT_ADDRESS_HEADER, "")
        if address != clean_address(address):
            raise SignatureRefused("malformed client address")
        try:
            self._key.verify(signature, _message(method, target, body, stamp, nonce, address))
        except InvalidSignature:
            raise SignatureRefused("invalid gateway signature") from None
        self._remember(nonce, self._clock())
        return Verified(address, nonce, stamp)

    def _remember(self, nonce: str, now: float) -> None:
        while self._seen:
            oldest, until = next(iter(self._seen.items()))
            if until > now and len(self._seen) < _MAX_NONCES:
                break
            del self._seen[oldest]
        if nonce in self._seen:
            raise SignatureRefused("replayed gateway signature")
        # A stamp may be up to max_age in the future: keep the nonce until that one is stale too.
        self._seen[nonce] = now + 2 * self._max_age


def request_target(url: httpx.URL) -> str:
    """PATH[?QUERY] as both sides see it (decoded path, raw query)."""
    query = url.query.decode()
    return url.path + (f"?{query}" if query else "")


class SigningTransport(httpx.AsyncBaseTransport):
    """Signs every request going through `inner` (the gateway's subgraph connection pools).

    The end user's address travels in CLIENT_ADDRESS_HEADER, set by the gateway on the request
    (absent on the gateway's own calls, e.g. fetching SDL); this transport signs it."""

    def __init__(self, inner: httpx.AsyncBaseTransport, signer: GatewaySigner) -> None:
        self.inner = inner
        self.signer = signer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        address = request.headers.get(CLIENT_ADDRESS_HEADER, "")
        request.headers.update(
            self.signer.headers(request.method, request_target(request.url), body, address)
        )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def create_key_pair(private_file: Path, public_file: Path) -> None:
    """The gateway's key pair, created once (both files 0600); an existing pair is kept."""
    if not private_file.exists():
        private_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(private_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
    key = serialization.load_pem_private_key(private_file.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{private_file}: not an Ed25519 private key")
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public_file.exists() and public_file.read_bytes() == public:
        return
    tmp = public_file.with_name(public_file.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(public)
    os.replace(tmp, public_file)
