"""The guard's cache and tombstones without a network: its gRPC call is replaced by a fake."""

import asyncio
import time

import pytest
from doorward.identity.v1 import identity_pb2

from doorward_kit.auth import Principal, Role
from doorward_kit.errors import DoorwardError, ErrorCode
from doorward_kit.grpc import InternalAuth, ServiceChannel
from doorward_kit.session_guard import IdentitySessionGuard
from services.identity.session_hub import SessionChange, SessionHub

pytestmark = pytest.mark.unit


def principal(user="u1", sid="s1", epoch=1):
    return Principal(
        user_id=user,
        org_id="o1",
        roles=frozenset({Role.TECHNICIAN}),
        region_ids=frozenset(),
        session_id=sid,
        epoch=epoch,
    )


class FakeIdentity:
    def __init__(self):
        self.calls = 0
        self.valid = True
        self.during_call = None

    async def call(self, method, request, **kwargs):
        self.calls += 1
        if self.during_call:
            self.during_call()
        return identity_pb2.CheckSessionResponse(valid=self.valid)

    async def close(self):
        return None


@pytest.fixture
async def guard():
    channel = ServiceChannel(
        "127.0.0.1:1", InternalAuth("gateway", None, "token"), server="identity"
    )
    guard = IdentitySessionGuard(channel, watch=False)
    fake = FakeIdentity()
    guard._channel = fake  # type: ignore[assignment]
    guard.fake = fake
    return guard


def make_live(guard):
    guard._live = True
    guard._last_seen = time.monotonic()


async def test_without_a_live_stream_every_check_asks(guard):
    for _ in range(3):
        await guard.check(principal())
    assert guard.fake.calls == 3


async def test_with_a_live_stream_answers_are_cached(guard):
    make_live(guard)
    for _ in range(3):
        await guard.check(principal())
    assert guard.fake.calls == 1
    # A different session or epoch is a different question.
    await guard.check(principal(sid="s2"))
    assert guard.fake.calls == 2


async def test_a_silent_stream_is_not_trusted(guard):
    make_live(guard)
    await guard.check(principal())
    guard._last_seen = time.monotonic() - 10
    await guard.check(principal())
    assert guard.fake.calls == 2


async def test_refusal(guard):
    guard.fake.valid = False
    with pytest.raises(DoorwardError) as error:
        await guard.check(principal())
    assert error.value.code is ErrorCode.UNAUTHENTICATED


async def test_an_event_drops_the_cache_and_leaves_a_tombstone(guard):
    make_live(guard)
    await guard.check(principal(epoch=1))
    guard.apply(identity_pb2.SessionEvent(event_id="e", user_id="u1", epoch=2, deactivated=True))
    with pytest.raises(DoorwardError):
        await guard.check(principal(epoch=1))
    assert guard.fake.calls == 1  # refused locally, identity not even asked
    # A token of the new epoch (e.g. after a role change and refresh) goes to identity.
    await guard.check(principal(epoch=2))
    assert guard.fake.calls == 2


async def test_an_ended_session_is_refused_locally(guard):
    make_live(guard)
    await guard.check(principal(sid="s1"))
    guard.apply(identity_pb2.SessionEvent(event_id="e", user_id="u1", epoch=1, session_id="s1"))
    with pytest.raises(DoorwardError):
        await guard.check(principal(sid="s1"))
    await guard.check(principal(sid="s9"))


async def test_an_answer_overtaken_by_an_event_is_not_cached(guard):
    make_live(guard)
    guard.fake.during_call = lambda: guard.apply(
        identity_pb2.SessionEvent(event_id="e", user_id="other", epoch=5)
    )
    await guard.check(principal())
    guard.fake.during_call = None
    await guard.check(principal())
    assert guard.fake.calls == 2


async def test_an_event_during_the_call_for_that_user_refuses(guard):
    guard.fake.during_call = lambda: guard.apply(
        identity_pb2.SessionEvent(event_id="e", user_id="u1", epoch=2, deactivated=True)
    )
    with pytest.raises(DoorwardError):
        await guard.check(principal(epoch=1))


async def test_losing_the_stream_empties_the_cache(guard):
    make_live(guard)
    await guard.check(principal())
    guard._went_down()
    make_live(guard)
    await guard.check(principal())
    assert guard.fake.calls == 2


# ---- the hub on identity's side ----------------------------------------------------------------


async def test_publish_without_watchers_returns_at_once():
    assert await SessionHub().publish(SessionChange("u", "o", 1), ack_seconds=5)


async def test_publish_waits_for_acks():
    hub = SessionHub()
    watcher = hub.register("w")

    async def acker():
        event_id, change = await watcher.queue.get()
        assert change.user_id == "u"
        await asyncio.sleep(0.05)
        hub.ack(watcher, event_id)

    task = asyncio.create_task(acker())
    started = time.monotonic()
    assert await hub.publish(SessionChange("u", "o", 1, deactivated=True), ack_seconds=5)
    assert time.monotonic() - started < 1
    await task


async def test_a_silent_watcher_is_dropped_after_the_timeout():
    hub = SessionHub()
    watcher = hub.register("w")
    assert not await hub.publish(SessionChange("u", "o", 1), ack_seconds=0.1)
    assert hub.watcher_count == 0
    await watcher.queue.get()  # the event
    assert await watcher.queue.get() is None  # then: close the stream
