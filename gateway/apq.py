"""Automatic persisted queries, Apollo's protocol (`extensions.persistedQuery`).

A client first sends only `{"version": 1, "sha256Hash": H}`. When the gateway knows H it runs
that document; otherwise it answers `PERSISTED_QUERY_NOT_FOUND` and the client sends the
document with the same hash, which the gateway checks, runs, and remembers. Repeated operations
then cost a few dozen bytes upstream and fit in a cacheable GET.

The store is memory only and bounded twice (entries and characters), so nobody can grow it
without limit; an evicted document just costs its client one more round trip. A document is
remembered only after it passed everything a request must pass (authentication, the limits,
validation): the store never holds what the gateway would refuse to run. With a trusted
documents list the list decides instead (gateway/limits.py TrustedDocuments): a hash the list
does not hold is never learned.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from typing import Any

from gateway.errors import RequestError

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def requested_hash(payload: dict[str, Any]) -> str | None:
    """The sha256 the request names in `extensions.persistedQuery`, or None when it names none.
    A malformed entry is refused rather than ignored: a client that thinks it is speaking the
    protocol should hear that it is not."""
    ext = payload.get("extensions")
    if not isinstance(ext, dict) or "persistedQuery" not in ext:
        return None
    pq = ext["persistedQuery"]
    if not isinstance(pq, dict):
        raise RequestError(400, "`extensions.persistedQuery` must be an object.",
                                  "BAD_REQUEST")
    if pq.get("version") != 1:
        raise RequestError(400, "Only version 1 of persisted queries is supported.",
                                  "PERSISTED_QUERY_NOT_SUPPORTED")
    sha = pq.get("sha256Hash")
    if not isinstance(sha, str) or not _SHA256_HEX.fullmatch(sha):
        raise RequestError(
            400, "`persistedQuery.sha256Hash` must be 64 lowercase hexadecimal digits.",
            "BAD_REQUEST")
    return sha


def check_hash(query: str, sha: str) -> None:
    """A document sent with a hash must be the document of that hash."""
    if hashlib.sha256(query.encode()).hexdigest() != sha:
        raise RequestError(400, "The persisted query's sha256Hash does not match its "
                                       "document.", "BAD_REQUEST")


class PersistedQueries:
    """Documents by sha256, least recently used first out, within `max_entries` documents and
    `max_chars` characters in all. `max_entries == 0` switches the protocol off: clients are
    told PERSISTED_QUERY_NOT_SUPPORTED and stop sending bare hashes."""

    def __init__(self, max_entries: int, max_chars: int) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._documents: OrderedDict[str, str] = OrderedDict()
        self._chars = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._documents)

    def lookup(self, sha: str) -> str:
        if not self.enabled:
            raise RequestError(400, "PersistedQueryNotSupported",
                                      "PERSISTED_QUERY_NOT_SUPPORTED")
        document = self._documents.get(sha)
        if document is None:
            # The message is the protocol's: clients match on it (or on the code).
            raise RequestError(400, "PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
        self._documents.move_to_end(sha)
        return document

    def remember(self, sha: str, document: str) -> None:
        if not self.enabled or len(document) > self.max_chars:
            return
        if sha in self._documents:
            self._documents.move_to_end(sha)
            return
        self._documents[sha] = document
        self._chars += len(document)
        while len(self._documents) > self.max_entries or self._chars > self.max_chars:
            _, evicted = self._documents.popitem(last=False)
            self._chars -= len(evicted)
