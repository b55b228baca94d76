"""Ed25519 signatures over checkpoints (tree size + Merkle root of an organisation's trail).

Pure except for key loading: `doorward audit verify` checks signatures with the public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.audit.chain import format_time

CHECKPOINT_DOMAIN = "doorward-audit-checkpoint/v1"
# A different domain: a prune anchor's signature can never pass for a checkpoint's, or back.
PRUNE_DOMAIN = "doorward-audit-prune/v1"


@dataclass(frozen=True)
class Checkpoint:
    org_id: str
    tree_size: int
    root_hash: str  # hex
    signed_at: datetime
    key_id: str
    signature: str  # base64

    def message(self) -> bytes:
        return checkpoint_message(self.org_id, self.tree_size, self.root_hash, self.signed_at)


def checkpoint_message(org_id: str, tree_size: int, root_hash: str, signed_at: datetime) -> bytes:
    body = {
        "domain": CHECKPOINT_DOMAIN,
        "org_id": org_id,
        "tree_size": tree_size,
        "root_hash": root_hash,
        "signed_at": format_time(signed_at),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class PruneAnchor:
    """What stays of a pruned prefix (events 1..tree_size): its chain head (the prev_hash the
    first remaining event links to), its Merkle root and the tree's frontier (so later
    checkpoints' roots can still be recomputed), signed like a checkpoint."""

    org_id: str
    tree_size: int
    root_hash: str  # hex
    last_hash: str  # hash of event tree_size
    frontier: tuple[tuple[int, str], ...]  # (subtree size, hex root), biggest first
    signed_at: datetime
    key_id: str
    signature: str  # base64

    def message(self) -> bytes:
        return prune_message(
            self.org_id,
            self.tree_size,
            self.root_hash,
            self.last_hash,
            self.frontier,
            self.signed_at,
        )


def prune_message(
    org_id: str,
    tree_size: int,
    root_hash: str,
    last_hash: str,
    frontier: Sequence[tuple[int, str]],
    signed_at: datetime,
) -> bytes:
    body = {
        "domain": PRUNE_DOMAIN,
        "org_id": org_id,
        "tree_size": tree_size,
        "root_hash": root_hash,
        "last_hash": last_hash,
        "frontier": [[int(size), str(node)] for size, node in frontier],
        "signed_at": format_time(signed_at),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def public_key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = public_key_id(self.public_key)

    def sign(self, org_id: str, tree_size: int, root_hash: str, signed_at: datetime) -> Checkpoint:
        signature = self._key.sign(checkpoint_message(org_id, tree_size, root_hash, signed_at))
        return Checkpoint(
            org_id=org_id,
            tree_size=tree_size,
            root_hash=root_hash,
            signed_at=signed_at,
            key_id=self.key_id,
            signature=base64.b64encode(signature).decode(),
        )

    def sign_prune(
        self,
        org_id: str,
        tree_size: int,
        root_hash: str,
        last_hash: str,
        frontier: Sequence[tuple[int, str]],
        signed_at: datetime,
    ) -> PruneAnchor:
        cut = tuple((int(size), str(node)) for size, node in frontier)
        message = prune_message(org_id, tree_size, root_hash, last_hash, cut, signed_at)
        return PruneAnchor(
            org_id=org_id,
            tree_size=tree_size,
            root_hash=root_hash,
            last_hash=last_hash,
            frontier=cut,
            signed_at=signed_at,
            key_id=self.key_id,
            signature=base64.b64encode(self._key.sign(message)).decode(),
        )


def verify_checkpoint(checkpoint: Checkpoint | PruneAnchor, public_key: Ed25519PublicKey) -> bool:
    if checkpoint.key_id != public_key_id(public_key):
        return False
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
        public_key.verify(signature, checkpoint.message())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key PEM, or the private key PEM (its public half is taken)."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key")
        return private.public_key()
    public = serialization.load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return public


def load_or_create_signer(path: Path, *, create: bool) -> Signer:
    """The signing key from its PEM file; generated (0600) only when `create` (development)."""
    if not path.exists():
        if not create:
            raise RuntimeError(
                f"the audit signing key {path} is missing (set DOORWARD_AUDIT_SIGNING_KEY_FILE)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError(f"the audit signing key {path} is not an Ed25519 private key")
    return Signer(key)
