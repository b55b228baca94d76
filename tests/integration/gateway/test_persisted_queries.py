"""Automatic persisted queries (Apollo protocol) through the gateway over real HTTP."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from tests.integration.gateway.conftest import gateway_settings, start_gateway
from tests.integration.gateway.test_gateway import fake_authenticator

pytestmark = pytest.mark.integration

ME = "query Me { me { id name } }"


def sha(doc: str) -> str:
    return hashlib.sha256(doc.encode()).hexdigest()


def ext(doc: str) -> dict:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha(doc)}}


def code(resp: httpx.Response) -> str:
    return resp.json()["errors"][0]["extensions"]["code"]


def test_hash_then_document_then_hash_alone(gateway):
    # The client's first try: the hash alone, unknown yet.
    r = httpx.post(gateway.url, json={"extensions": ext(ME)})
    assert (r.status_code, code(r)) == (400, "PERSISTED_QUERY_NOT_FOUND")
    assert r.json()["errors"][0]["message"] == "PersistedQueryNotFound"
    # Its retry with the document registers it ...
    r = gateway.post(ME, extensions=ext(ME))
    assert r.json() == {"data": {"me": {"id": "1", "name": "Ada"}}}
    # ... and from then on the hash alone runs it, by POST or by a cacheable GET.
    r = httpx.post(gateway.url, json={"extensions": ext(ME)})
    assert r.json() == {"data": {"me": {"id": "1", "name": "Ada"}}}
    r = httpx.get(gateway.url, params={"extensions": json.dumps(ext(ME))})
    assert r.json() == {"data": {"me": {"id": "1", "name": "Ada"}}}


def test_a_document_that_does_not_match_its_hash_is_refused_and_not_learned(gateway):
    other = "{ me { id } }"
    r = gateway.post(other, extensions=ext("{ me { name } }"))
    assert (r.status_code, code(r)) == (400, "BAD_REQUEST")
    r = httpx.post(gateway.url, json={"extensions": ext("{ me { name } }")})
    assert code(r) == "PERSISTED_QUERY_NOT_FOUND"


def test_an_invalid_document_is_not_learned(gateway):
    bad = "{ me { noSuchField } }"
    r = gateway.post(bad, extensions=ext(bad))
    assert code(r) == "GRAPHQL_VALIDATION_FAILED"
    r = httpx.post(gateway.url, json={"extensions": ext(bad)})
    assert code(r) == "PERSISTED_QUERY_NOT_FOUND"


def test_a_mutation_stays_off_get_even_when_persisted(gateway):
    rename = 'mutation { rename(id: "1", name: "Ada") { id } }'
    assert gateway.post(rename, extensions=ext(rename)).status_code == 200
    r = httpx.get(gateway.url, params={"extensions": json.dumps(ext(rename))})
    assert r.status_code == 405


def test_version_two_is_not_supported(gateway):
    r = httpx.post(gateway.url, json={"extensions": {"persistedQuery": {
        "version": 2, "sha256Hash": sha(ME)}}})
    assert code(r) == "PERSISTED_QUERY_NOT_SUPPORTED"


def test_switched_off_tells_clients_to_stop(subgraphs):
    gw = start_gateway(gateway_settings(subgraphs.urls, persisted_queries_max_entries=0))
    try:
        assert gw.post(ME, extensions=ext(ME)).json()["data"]["me"]["id"] == "1"
        r = httpx.post(gw.url, json={"extensions": ext(ME)})
        assert code(r) == "PERSISTED_QUERY_NOT_SUPPORTED"
    finally:
        gw.stop()


def test_a_stranger_cannot_register_what_a_stranger_may_not_run(subgraphs):
    gw = start_gateway(gateway_settings(subgraphs.urls, auth_enabled=True),
                       authenticator=fake_authenticator)
    good = {"Authorization": "Bearer good"}
    try:
        # Refused for the stranger (401), so not learned: the hash stays unknown even to a
        # signed-in user, who must send the document once.
        assert gw.post(ME, extensions=ext(ME)).status_code == 401
        r = httpx.post(gw.url, json={"extensions": ext(ME)}, headers=good)
        assert code(r) == "PERSISTED_QUERY_NOT_FOUND"
        # The honest use: a signed-in user registers it; the hash alone still needs a token.
        assert gw.post(ME, extensions=ext(ME), headers=good).json()["data"]["me"]["id"] == "1"
        assert httpx.post(gw.url, json={"extensions": ext(ME)}).status_code == 401
        r = httpx.post(gw.url, json={"extensions": ext(ME)}, headers=good)
        assert r.json()["data"]["me"]["id"] == "1"
        # A stranger may persist the public operations (login), as any Apollo client does.
        login = 'mutation { login(username: "ada") }'
        assert gw.post(login, extensions=ext(login)).json() == {"data": {"login": "token-for-ada"}}
        assert httpx.post(gw.url, json={"extensions": ext(login)}).json() == {
            "data": {"login": "token-for-ada"}}
    finally:
        gw.stop()


def test_trusted_documents_decide_when_configured(subgraphs, tmp_path):
    path = tmp_path / "trusted.json"
    path.write_text(json.dumps({sha(ME): ME}))
    gw = start_gateway(gateway_settings(subgraphs.urls, trusted_documents=str(path)))
    try:
        other = "{ me { id } }"
        r = gw.post(other, extensions=ext(other))  # APQ cannot widen the list
        assert code(r) == "PERSISTED_QUERY_NOT_FOUND"
        assert code(httpx.post(gw.url, json={"extensions": ext(other)})) == (
            "PERSISTED_QUERY_NOT_FOUND")
        r = httpx.post(gw.url, json={"extensions": ext(ME)})
        assert r.json()["data"]["me"]["name"] == "Ada"
    finally:
        gw.stop()
