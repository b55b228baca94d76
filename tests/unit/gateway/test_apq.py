"""The persisted-query store and the protocol's request checks (pure logic)."""

from __future__ import annotations

import hashlib

import pytest

from gateway.apq import PersistedQueries, check_hash, requested_hash
from gateway.errors import RequestError

pytestmark = pytest.mark.unit


def sha(doc: str) -> str:
    return hashlib.sha256(doc.encode()).hexdigest()


def pq(**fields: object) -> dict:
    return {"extensions": {"persistedQuery": fields}}


def test_requested_hash_reads_version_one_only():
    h = sha("{ a }")
    assert requested_hash({"query": "{ a }"}) is None
    assert requested_hash(pq(version=1, sha256Hash=h)) == h
    with pytest.raises(RequestError) as exc:
        requested_hash(pq(version=2, sha256Hash=h))
    assert exc.value.code == "PERSISTED_QUERY_NOT_SUPPORTED"


@pytest.mark.parametrize("bad", [None, 7, "", "ABC", "A" * 64, "g" * 64, "a" * 63])
def test_requested_hash_refuses_what_is_not_a_sha256(bad):
    with pytest.raises(RequestError) as exc:
        requested_hash(pq(version=1, sha256Hash=bad))
    assert (exc.value.status, exc.value.code) == (400, "BAD_REQUEST")
    with pytest.raises(RequestError):
        requested_hash({"extensions": {"persistedQuery": "x"}})


def test_a_document_must_match_its_hash():
    check_hash("{ a }", sha("{ a }"))
    with pytest.raises(RequestError) as exc:
        check_hash("{ b }", sha("{ a }"))
    assert exc.value.code == "BAD_REQUEST"


def test_lookup_of_an_unknown_hash_speaks_the_protocol():
    store = PersistedQueries(10, 1000)
    with pytest.raises(RequestError) as exc:
        store.lookup(sha("{ a }"))
    assert (str(exc.value), exc.value.code) == ("PersistedQueryNotFound",
                                                "PERSISTED_QUERY_NOT_FOUND")
    store.remember(sha("{ a }"), "{ a }")
    assert store.lookup(sha("{ a }")) == "{ a }"


def test_switched_off_says_not_supported_and_learns_nothing():
    store = PersistedQueries(0, 1000)
    store.remember(sha("{ a }"), "{ a }")
    with pytest.raises(RequestError) as exc:
        store.lookup(sha("{ a }"))
    assert exc.value.code == "PERSISTED_QUERY_NOT_SUPPORTED"


def test_bounded_by_entries_least_recently_used_out():
    store = PersistedQueries(2, 1000)
    for doc in ("{ a }", "{ b }"):
        store.remember(sha(doc), doc)
    store.lookup(sha("{ a }"))  # used: { b } is now the oldest
    store.remember(sha("{ c }"), "{ c }")
    assert len(store) == 2
    assert store.lookup(sha("{ a }")) == "{ a }"
    with pytest.raises(RequestError):
        store.lookup(sha("{ b }"))


def test_bounded_by_characters():
    store = PersistedQueries(100, 20)
    store.remember(sha("x" * 30), "x" * 30)  # larger than the whole store: never kept
    assert len(store) == 0
    for doc in ("{ aaaaaa }", "{ bbbbbb }", "{ cccccc }"):
        store.remember(sha(doc), doc)
    assert len(store) == 2  # 3 x 10 characters > 20
