"""identity remembers a positive session check for a few seconds (services/identity/runtime.py
LocalSessionGuard), as every other process's guard does: the check was one statement on every
request reaching identity. From both sides: the honest repeat costs no session statement, and
yet a deactivation, a logout or an epoch bump is refused at once, on this replica and on
another one (the session bus relays the change before deactivateUser returns); with the bus
deaf nothing is remembered; an answer read while a change arrived is not remembered."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from doorward_kit.auth import Principal, Role
from doorward_kit.errors import DoorwardError
from doorward_kit.net import free_port
from doorward_kit.runner import serving
from services.identity.__main__ import build_parts
from services.identity.runtime import LocalSessionGuard
from services.identity.session_hub import SessionChange, SessionHub
from tests.fixtures.round_trips import statements_of
from tests.integration.identity import conftest as identity_fixtures
from tests.integration.identity.conftest import (
    Org,
    Running,
    create_region,
    create_staff,
    db_of,
    error_code,
    eventually,
)

pytestmark = pytest.mark.integration

identity_service = identity_fixtures.identity_service
running = identity_fixtures.running
org = identity_fixtures.org

ME = "{ me { id } }"
DEACTIVATE = 'mutation($id: ID!) { deactivateUser(id: $id, reason: "left") { id status } }'


@pytest_asyncio.fixture
async def second_replica(running: Running) -> AsyncIterator[Running]:
    """Another identity process on the same database, with its own session bus."""
    stack = running.stack.model_copy(
        update={"identity_http_port": free_port(), "identity_grpc_port": free_port()}
    )
    parts, identity = await build_parts(stack, running.settings)
    async with serving(parts, "identity-2"):
        other = dataclasses.replace(
            running, stack=stack, identity=identity, http_url=stack.http_url("identity")
        )
        await eventually(lambda: identity.accepts_watchers)
        yield other


async def _staff(running: Running, org: Org) -> str:
    region = await create_region(running, org, f"r-{uuid.uuid4().hex[:6]}")
    return (await create_staff(running, org, ["TECHNICIAN"], [region])).token


async def test_the_repeat_is_not_checked_again_but_a_deactivation_is_refused_at_once(
    running: Running, org: Org
) -> None:
    token = await _staff(running, org)
    me = await running.gql(ME, token=token)
    staff_id = me["data"]["me"]["id"]
    with statements_of(db_of(running).engine) as queries:
        assert (await running.gql(ME, token=token))["data"]["me"]["id"] == staff_id
    assert len(queries) == 1  # the user; the session check was remembered
    done = await running.gql(DEACTIVATE, {"id": staff_id}, token=org.admin_token)
    assert done["data"]["deactivateUser"]["status"] == "DEACTIVATED", done
    refused = await running.gql(ME, token=token)
    assert refused["data"] is None and error_code(refused) == "UNAUTHENTICATED"


async def test_a_deactivation_on_one_replica_is_refused_at_once_by_the_other(
    running: Running, second_replica: Running, org: Org
) -> None:
    token = await _staff(running, org)
    staff_id = (await second_replica.gql(ME, token=token))["data"]["me"]["id"]
    assert (await second_replica.gql(ME, token=token))["data"]["me"]["id"] == staff_id
    done = await running.gql(DEACTIVATE, {"id": staff_id}, token=org.admin_token)
    assert done["data"]["deactivateUser"]["status"] == "DEACTIVATED", done
    refused = await second_replica.gql(ME, token=token)
    assert refused["data"] is None and error_code(refused) == "UNAUTHENTICATED"


async def test_a_logout_on_one_replica_is_refused_at_once_by_the_other(
    running: Running, second_replica: Running, org: Org
) -> None:
    token = await _staff(running, org)
    assert (await second_replica.gql(ME, token=token))["data"]["me"]
    assert (await running.gql("mutation { logout }", token=token))["data"]["logout"] is True
    refused = await second_replica.gql(ME, token=token)
    assert refused["data"] is None and error_code(refused) == "UNAUTHENTICATED"


def _principal(org: Org) -> Principal:
    return Principal(
        user_id=org.admin_id,
        org_id=org.id,
        roles=frozenset({Role.ADMIN}),
        region_ids=frozenset(),
        session_id="",
        epoch=0,
    )


async def _admin_principal(running: Running, org: Org) -> Principal:
    verifier = running.identity.verifier
    assert verifier is not None
    return await verifier.decode(org.admin_token)


async def test_nothing_is_remembered_while_changes_cannot_reach_the_replica(
    running: Running, org: Org
) -> None:
    principal = await _admin_principal(running, org)
    identity = running.identity
    deaf = LocalSessionGuard(identity.db, identity.service, hub=SessionHub(), trusted=lambda: False)
    hearing = LocalSessionGuard(identity.db, identity.service, hub=SessionHub())
    with statements_of(db_of(running).engine) as queries:
        for _ in range(3):
            await deaf.check(principal)
    assert len(queries) == 3
    with statements_of(db_of(running).engine) as queries:
        for _ in range(3):
            await hearing.check(principal)
    assert len(queries) == 1


async def test_any_change_forgets_and_an_answer_overtaken_by_one_is_not_kept(
    running: Running, org: Org
) -> None:
    principal = await _admin_principal(running, org)
    identity = running.identity
    hub = SessionHub()
    guard = LocalSessionGuard(identity.db, identity.service, hub=hub)
    await guard.check(principal)
    # A change (any user's: a logout somewhere) forgets what was remembered.
    await hub.publish(SessionChange(user_id="someone", org_id=org.id, epoch=1), ack_seconds=1)
    with statements_of(db_of(running).engine) as queries:
        await guard.check(principal)
    assert len(queries) == 1
    # The bus going deaf (close_all) forgets too.
    hub.close_all()
    with statements_of(db_of(running).engine) as queries:
        await guard.check(principal)
    assert len(queries) == 1
    # A change that arrives while the check reads: that answer is not remembered.
    hub2 = SessionHub()
    racing = LocalSessionGuard(identity.db, identity.service, hub=hub2)
    checking = asyncio.create_task(racing.check(principal))
    await asyncio.sleep(0)  # the read is on its way
    await hub2.publish(SessionChange(user_id="someone", org_id=org.id, epoch=2), ack_seconds=1)
    await checking
    with statements_of(db_of(running).engine) as queries:
        await racing.check(principal)
    assert len(queries) == 1


async def test_a_refused_session_is_never_remembered(running: Running, org: Org) -> None:
    identity = running.identity
    guard = LocalSessionGuard(identity.db, identity.service, hub=SessionHub())
    stranger = _principal(org)  # no such session family
    for _ in range(2):
        with pytest.raises(DoorwardError):
            await guard.check(stranger)
