"""`enduser.pseudo.id`: a keyed HMAC of a user id, the only way a span or metric names a user.

Security ops need to see that the same technician was denied ten times without the trace store
learning who they are: HMAC-SHA256(key, user id), 128 bits as 32 hex digits. Without the key
the pseudonym cannot be computed from a user id (an unkeyed hash of a UUID could be, by anyone
holding the user list); auditors holding the key can resolve one.

The key lives in Vault (`doorward-kv/data/telemetry/pseudonym-key`, provisioned by
deploy/embedded.py `provision_vault`); the secrets service reads it at start and hands it over
mutual TLS to the services that name users in spans (secrets `PseudonymKey`, callers in its
ALLOWED_CALLERS). Until a process has the key it emits no pseudonym at all: never the raw id,
never an unkeyed hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
from functools import lru_cache
from typing import TYPE_CHECKING

from doorward_kit.errors import DoorwardError

if TYPE_CHECKING:
    from doorward_kit.grpc import ServiceChannel

log = logging.getLogger(__name__)

PSEUDONYM_KEY_PATH = "telemetry/pseudonym-key"  # under the KV v2 mount
MIN_KEY_BYTES = 32

_lock = threading.Lock()
_key: bytes | None = None


def set_pseudonym_key(key: bytes | None) -> None:
    """Install the process's key (None forgets it). A short key is refused."""
    global _key
    if key is not None and len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the pseudonym key must be at least {MIN_KEY_BYTES} bytes")
    with _lock:
        _key = key
        _cached.cache_clear()


def has_pseudonym_key() -> bool:
    return _key is not None


def current_pseudonym_key() -> bytes | None:
    """The installed key (the secrets service hands it on; nobody else needs it)."""
    return _key


@lru_cache(maxsize=4096)
def _cached(key: bytes, user_id: str) -> str:
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:32]


def pseudonym(user_id: str) -> str:
    """The pseudonymous id of `user_id`, or '' when there is no user or no key yet."""
    key = _key
    if not user_id or key is None:
        return ""
    return _cached(key, user_id)


async def keep_pseudonym_key(channel: ServiceChannel, *, interval: float = 5.0) -> None:
    """Background task of a service that names users in decision spans (workorders, identity):
    ask the secrets service for the key (GetPseudonymKey, mutual TLS) until it is installed.
    Until then that process's spans carry no pseudonym."""
    from doorward.secrets.v1 import secrets_pb2, secrets_pb2_grpc

    stub = secrets_pb2_grpc.SecretsStub(channel.channel)
    while not has_pseudonym_key():
        try:
            answer = await channel.call(
                stub.GetPseudonymKey, secrets_pb2.GetPseudonymKeyRequest(), what="secrets"
            )
            set_pseudonym_key(bytes(answer.key))
            log.info("pseudonym key loaded")
            return
        except (DoorwardError, ValueError) as error:
            log.info(
                "pseudonym key not available yet", extra={"fields": {"error": type(error).__name__}}
            )
        await asyncio.sleep(interval)
