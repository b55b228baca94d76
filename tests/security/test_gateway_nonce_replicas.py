"""Issue 15, finding P1: a gateway-signed subgraph request is served once by ALL replicas.

Each replica used to remember nonces in its own memory only, so a captured signed request could
be sent once more to every other replica within the 30 s window. Now a nonce is also claimed in
the subgraph's own PostgreSQL (doorward_kit/nonce_ledger.py). Two real identity replicas on one
database: the copy of a request one served is refused by the other, honest requests still pass
on both, and the ledger fails closed when it cannot answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from starlette.requests import Request

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.gateway_signature import GatewayVerifier, SignatureRefused
from doorward_kit.graphql import GatewayGate
from doorward_kit.net import free_port
from doorward_kit.nonce_ledger import PostgresNonceLedger
from doorward_kit.runner import serving
from services.identity.__main__ import build_parts
from tests.fixtures.gateway_signing import gateway_keys
from tests.integration.identity import conftest as identity_fixtures
from tests.integration.identity.conftest import Org, Running, create_region, create_staff

pytestmark = pytest.mark.integration

identity_service = identity_fixtures.identity_service
running = identity_fixtures.running
org = identity_fixtures.org

ME = '{"query": "{ me { id email } }"}'
REFRESH = "mutation($t: String!) { refresh(refreshToken: $t) { accessToken refreshToken } }"


@pytest_asyncio.fixture
async def second_replica(running: Running) -> AsyncIterator[str]:
    """Another identity process on the same database (its own ports): what a balancer or a
    Kubernetes Service may hand a request to. Yields its GraphQL URL."""
    stack = running.stack.model_copy(
        update={"identity_http_port": free_port(), "identity_grpc_port": free_port()}
    )
    parts, _ = await build_parts(stack, running.settings)
    async with serving(parts, "identity-2"):
        yield stack.http_url("identity") + "/graphql"


def signed(body: bytes, token: str = "") -> dict[str, str]:
    headers = gateway_keys().signer.headers("POST", "/graphql", body, "198.51.100.20")
    headers["content-type"] = "application/json"
    if token:
        headers["authorization"] = f"Bearer {token}"
    return headers


async def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(url, content=body, headers=headers)


async def test_a_request_served_by_one_replica_is_refused_by_every_other(
    running: Running, second_replica: str, org: Org
) -> None:
    body = ME.encode()
    headers = signed(body, org.admin_token)
    first = await post(running.graphql_url, body, headers)
    assert first.status_code == 200 and first.json()["data"]["me"]["id"] == org.admin_id
    # The attack: the captured copy, to the replica that has not seen it (and to the first).
    for url in (second_replica, running.graphql_url):
        replay = await post(url, body, headers)
        assert replay.status_code == 401, replay.text
        assert "replayed gateway signature" in replay.json()["errors"][0]["message"]
        assert "data" not in replay.json()


async def test_a_replayed_refresh_is_refused_by_the_other_replica_before_it_runs(
    running: Running, second_replica: str, org: Org
) -> None:
    # A mutation is what a replay wants most: here the copy of a refresh would, on a replica
    # that had not seen it, count as refresh-token reuse and end the user's whole session.
    region = await create_region(running, org, f"r-{uuid.uuid4().hex[:6]}")
    staff = await create_staff(running, org, ["TECHNICIAN"], [region])
    body = orjson.dumps({"query": REFRESH, "variables": {"t": staff.refresh_token}})
    headers = signed(body)
    first = await post(second_replica, body, headers)
    assert first.status_code == 200, first.text
    rotated = first.json()["data"]["refresh"]
    assert rotated["accessToken"]
    replay = await post(running.graphql_url, body, headers)
    assert replay.status_code == 401 and "replayed" in replay.text
    assert "accessToken" not in replay.text
    # The session lives on: the rotated refresh token still works (no reuse was detected).
    honest = orjson.dumps({"query": REFRESH, "variables": {"t": rotated["refreshToken"]}})
    again = await post(running.graphql_url, honest, signed(honest))
    assert again.json()["data"]["refresh"]["accessToken"], again.text


async def test_honest_requests_pass_on_every_replica(
    running: Running, second_replica: str, org: Org
) -> None:
    body = ME.encode()
    for url in [running.graphql_url, second_replica] * 3:
        response = await post(url, body, signed(body, org.admin_token))
        assert response.status_code == 200, response.text
        assert response.json()["data"]["me"]["email"] == org.admin_email
    # Concurrent honest requests with distinct nonces to both replicas: all served.
    results = await asyncio.gather(
        *(
            post(url, body, signed(body, org.admin_token))
            for url in [running.graphql_url, second_replica] * 5
        )
    )
    assert [r.status_code for r in results] == [200] * 10


async def test_concurrent_copies_to_both_replicas_are_served_once(
    running: Running, second_replica: str, org: Org
) -> None:
    body = ME.encode()
    for _ in range(5):
        headers = signed(body, org.admin_token)
        results = await asyncio.gather(
            *(post(url, body, headers) for url in [running.graphql_url, second_replica] * 2)
        )
        assert sorted(r.status_code for r in results) == [200, 401, 401, 401]


async def test_the_ledger_fails_closed_and_forgets_only_stale_nonces(running: Running) -> None:
    url = running.settings.db_url
    ledger = PostgresNonceLedger(url)
    try:
        now = int(time.time())
        assert await ledger.claim("nonce-fresh-0001", now, 60) is True
        assert await ledger.claim("nonce-fresh-0001", now, 60) is False
        # A nonce whose keep time has passed is pruned; a fresh one is not.
        assert await ledger.claim("nonce-stale-0001", now - 120, 0.1) is True
        await asyncio.sleep(0.3)
        assert await ledger.prune() >= 1
        assert await ledger.claim("nonce-fresh-0001", now, 60) is False
    finally:
        await ledger.close()
    # A database that cannot be reached: the gate refuses (UNAVAILABLE), never serves unchecked.
    dead = PostgresNonceLedger(
        f"postgresql+asyncpg://nobody:x@127.0.0.1:{free_port()}/none", timeout=0.5
    )
    gate = GatewayGate(GatewayVerifier.from_file(gateway_keys().public_file), nonces=dead)
    body = ME.encode()
    headers = signed(body)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        with pytest.raises(DoorwardError) as refused:
            await gate.check(Request(scope, receive))
        assert refused.value.code is ErrorCode.UNAVAILABLE
        assert not isinstance(refused.value, SignatureRefused)
    finally:
        await dead.close()


async def test_two_ledgers_refuse_a_replay_and_a_release_sends_nothing(running: Running) -> None:
    # Each replica's ledger has its own pool; a connection going back to it is not reset
    # (asyncpg's default reset was a second statement per claim), and the claims keep one
    # connection between them (no checkout at all): the claims stay single-use across
    # ledgers all the same, however often that one connection of each ledger is reused.
    first = PostgresNonceLedger(running.settings.db_url, pool_size=1)
    second = PostgresNonceLedger(running.settings.db_url, pool_size=1)
    sent: list[str] = []

    def log(record: Any) -> None:
        sent.append(record.query)

    try:
        for ledger in (first, second):
            pool = await ledger._ready()
            async with pool.acquire() as conn:
                conn.add_query_logger(log)
                pooled = conn.get_server_pid()
            assert sent == []  # the release after the logger was added sent nothing
            claims = await ledger._claimer()
            if claims.get_server_pid() != pooled:
                claims.add_query_logger(log)
        now = int(time.time())
        for round_ in range(5):
            nonce = f"nonce-two-ledgers-{uuid.uuid4().hex[:8]}-{round_}"
            claimer, other = (first, second) if round_ % 2 else (second, first)
            assert await claimer.claim(nonce, now, 60) is True
            assert await other.claim(nonce, now, 60) is False
            assert await claimer.claim(nonce, now, 60) is False
        await asyncio.sleep(0.05)  # asyncpg calls its query loggers soon after, not at once
        # Only the claims went to the database: no reset statement after any of them.
        assert len(sent) == 15
        assert all(query.startswith("INSERT INTO gateway_nonces") for query in sent), sent
    finally:
        await first.close()
        await second.close()
