"""Rate limits hold across replicas: two limiters on one secrets database (the real
PostgreSQL) count together, whichever replica a request reaches."""

from __future__ import annotations

from pathlib import Path

import pytest

from doorward_kit.db import Database, run_migrations_async
from doorward_kit.errors import DoorwardError, ErrorCode
from services.secrets.ratelimit import SharedRateLimiter

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "secrets" / "migrations"


async def test_a_limit_holds_across_replicas_and_frees_up_with_time(postgres: object) -> None:
    url = postgres.fresh_database("rate")  # type: ignore[attr-defined]
    await run_migrations_async(MIGRATIONS, url)
    db = Database(url)
    now = [1_000_000.0]
    try:
        replicas = [
            SharedRateLimiter(db, "reveal", 5, 60.0, clock=lambda: now[0]) for _ in range(2)
        ]
        for i in range(5):
            await replicas[i % 2].acquire("org/alice")
        # The sixth request is refused by either replica: the attack spread over replicas fails.
        for replica in replicas:
            with pytest.raises(DoorwardError) as refused:
                await replica.acquire("org/alice")
            assert refused.value.code is ErrorCode.RATE_LIMITED
        # Another user is not affected (the honest use still works).
        await replicas[1].acquire("org/bob")
        # Two windows later the limit is whole again.
        now[0] += 121.0
        await replicas[0].acquire("org/alice")
        # Another limit with the same key counts apart.
        await SharedRateLimiter(db, "grant", 1, 60.0, clock=lambda: now[0]).acquire("org/alice")
    finally:
        await db.dispose()
