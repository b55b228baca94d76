"""A background loop stops when it is cancelled, even in the loop turn its wake-up arrives.

Python 3.11's `asyncio.wait_for` returns the awaited result when its task is cancelled in the
same loop turn the awaited thing completes: the cancellation is lost (CPython gh-86296, fixed
in 3.12). A loop of the form `while True: wait_for(wake.wait(), poll)` then never stops, and
whatever awaits it at shutdown waits forever. That is how the session bus's listener hung a
test's teardown for 300 s in CI. Doorward waits with `asyncio.timeout` instead, and ruff bans
`asyncio.wait_for` (TID251) so it does not come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest

from services.workorders.outbox import RevocationSender


async def _wait_for_loop(wake: asyncio.Event) -> None:
    while True:
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), 5)  # the hazard itself


async def _cancel_as_it_wakes(task: asyncio.Task[None], wake: asyncio.Event) -> bool:
    """Wake the loop and cancel it in the same turn; True when the task then ended."""
    await asyncio.sleep(0.01)  # the loop is waiting
    wake.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    if not done:
        task.cancel()  # it swallowed the first: the second reaches it outside the race
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return bool(done)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps cancellations from 3.12")
async def test_wait_for_loses_a_cancellation_that_meets_the_wake_up() -> None:
    wake = asyncio.Event()
    task = asyncio.get_running_loop().create_task(_wait_for_loop(wake))
    assert await _cancel_as_it_wakes(task, wake) is False


async def test_an_outbox_loop_stops_when_cancelled_as_it_is_kicked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sender = RevocationSender(db=None, secrets=None, poll_seconds=5.0)  # type: ignore[arg-type]

    async def nothing_due() -> int:
        return 0

    monkeypatch.setattr(sender, "deliver_once", nothing_due)
    task = asyncio.get_running_loop().create_task(sender.run())
    assert await _cancel_as_it_wakes(task, sender._wake) is True
    assert task.cancelled()
