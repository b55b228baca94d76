"""The replay guard's nonce claims travel together under concurrency (doorward_kit/nonce_ledger.py):
a claim arriving while another claim's INSERT is on its way waits and goes in the next statement
with every other that waited. What must not change: each nonce is good exactly once, in a batch,
alone, in one ledger or across two; a ledger that cannot answer refuses every claim it holds; a
claim whose request is gone does not strand the others. And it pays: concurrent claims take
fewer statements than claims."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.net import free_port
from doorward_kit.nonce_ledger import PostgresNonceLedger
from tests.integration.identity import conftest as identity_fixtures
from tests.integration.identity.conftest import Running

pytestmark = pytest.mark.integration

identity_service = identity_fixtures.identity_service
running = identity_fixtures.running


def _nonce(tag: str) -> str:
    return f"nonce-{tag}-{uuid.uuid4().hex[:12]}"


async def _logged(ledger: PostgresNonceLedger, sent: list[str]) -> None:
    """Every claim statement the ledger sends from now on goes into `sent` (the claims run on
    one connection the ledger keeps for them)."""
    conn = await ledger._claimer()
    conn.add_query_logger(lambda record: sent.append(record.query))


async def test_concurrent_claims_are_each_good_once_in_fewer_statements(running: Running) -> None:
    ledger = PostgresNonceLedger(running.settings.db_url, pool_size=1)
    sent: list[str] = []
    try:
        await _logged(ledger, sent)
        now = int(time.time())
        nonces = [_nonce("batch") for _ in range(20)]
        first = await asyncio.gather(*(ledger.claim(n, now, 60) for n in nonces))
        assert first == [True] * 20
        assert len(sent) < 20, sent  # they went together
        assert any("unnest" in query for query in sent)
        # The copies, concurrently again (a batch of replays): every one refused.
        again = await asyncio.gather(*(ledger.claim(n, now, 60) for n in nonces))
        assert again == [False] * 20
    finally:
        await ledger.close()


async def test_the_same_nonce_claimed_at_once_is_good_once(running: Running) -> None:
    # Ten copies of one request at once on one ledger (a batch holding the nonce several
    # times), and the same on two ledgers (two replicas): one claim wins, every other loses.
    first = PostgresNonceLedger(running.settings.db_url)
    second = PostgresNonceLedger(running.settings.db_url)
    try:
        now = int(time.time())
        for _ in range(3):
            nonce = _nonce("copies")
            results = await asyncio.gather(
                *(ledger.claim(nonce, now, 60) for ledger in [first, second] * 5)
            )
            assert sorted(results) == [False] * 9 + [True]
        # Distinct nonces mixed with copies in one batch: each distinct nonce once.
        nonces = [_nonce("mixed") for _ in range(4)]
        mixed = await asyncio.gather(*(first.claim(n, now, 60) for n in nonces * 3))
        for index in range(4):
            assert sorted(mixed[index::4]) == [False, False, True]
    finally:
        await first.close()
        await second.close()


async def test_a_cancelled_claim_does_not_strand_the_others(running: Running) -> None:
    ledger = PostgresNonceLedger(running.settings.db_url, pool_size=1)
    try:
        now = int(time.time())
        claims = [asyncio.create_task(ledger.claim(_nonce("cancel"), now, 60)) for _ in range(8)]
        await asyncio.sleep(0)  # all started: one on its way, seven waiting
        claims[0].cancel()  # the one whose statement is on its way
        claims[3].cancel()  # and one that waits
        done = await asyncio.gather(*claims, return_exceptions=True)
        assert isinstance(done[0], asyncio.CancelledError)
        assert isinstance(done[3], asyncio.CancelledError)
        assert [d for i, d in enumerate(done) if i not in (0, 3)] == [True] * 6
        # And the ledger goes on as before.
        assert await ledger.claim(_nonce("after"), now, 60) is True
    finally:
        await ledger.close()


async def test_a_ledger_that_cannot_answer_refuses_every_waiting_claim() -> None:
    dead = PostgresNonceLedger(
        f"postgresql+asyncpg://nobody:x@127.0.0.1:{free_port()}/none", timeout=0.5
    )
    try:
        now = int(time.time())
        results = await asyncio.gather(
            *(dead.claim(_nonce("dead"), now, 60) for _ in range(6)), return_exceptions=True
        )
        assert all(isinstance(r, DoorwardError) for r in results), results
        assert {r.code for r in results if isinstance(r, DoorwardError)} == {ErrorCode.UNAVAILABLE}
    finally:
        await dead.close()


async def test_claims_go_on_after_their_connection_is_lost(running: Running) -> None:
    """The claims keep one connection between them: when the server ends it (a restart, an
    administrator), the claim on its way fails closed and the next claim takes a new one."""
    ledger = PostgresNonceLedger(running.settings.db_url, pool_size=1)
    try:
        now = int(time.time())
        nonce = _nonce("lost")
        assert await ledger.claim(nonce, now, 60) is True
        conn = await ledger._claimer()
        pid = conn.get_server_pid()
        pool = await ledger._ready()
        async with pool.acquire() as other:  # the second connection (a prune's)
            assert await other.fetchval("SELECT pg_terminate_backend($1)", pid)
        outcome: bool | DoorwardError
        try:
            outcome = await ledger.claim(_nonce("during"), now, 60)
        except DoorwardError as refused:  # the loss noticed by this claim: refused, not served
            outcome = refused
        assert outcome is True or (
            isinstance(outcome, DoorwardError) and outcome.code is ErrorCode.UNAVAILABLE
        )
        assert await ledger.claim(_nonce("after"), now, 60) is True
        assert (await ledger._claimer()).get_server_pid() != pid
        assert await ledger.claim(nonce, now, 60) is False  # a replay is still refused
        # Pruning (another connection) works beside the kept one.
        assert await ledger.prune() >= 0
    finally:
        await ledger.close()


async def test_claims_waiting_when_the_ledger_closes_are_refused(running: Running) -> None:
    ledger = PostgresNonceLedger(running.settings.db_url, pool_size=1)
    now = int(time.time())
    claims = [asyncio.create_task(ledger.claim(_nonce("close"), now, 60)) for _ in range(5)]
    await asyncio.sleep(0)
    await ledger.close()
    results = await asyncio.gather(*claims, return_exceptions=True)
    # Whatever was claimed before the close answered True; nothing was left hanging, and
    # nothing unclaimed was let through.
    for result in results:
        assert result is True or (
            isinstance(result, DoorwardError) and result.code is ErrorCode.UNAVAILABLE
        ), result
