"""After the fuzzers (this module runs after the others in tests/fuzz): the stack still serves
honest requests of every role, a whole secret flow still works, and both organisations'
audit chains still verify."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.fuzz.conftest import (
    ASSIGN,
    ATTACH,
    CREATE_JOB,
    DISPATCH,
    FUZZ_DOOR_CODE,
    REQUEST_ACCESS,
    FuzzWorld,
)

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

INTEGRITY = "{ auditIntegrity { ok checkedEvents firstBrokenSeq } }"


def test_every_role_is_still_served(fuzz_world: FuzzWorld) -> None:
    gql = fuzz_world.world.gql
    for role in ("ADMIN", "DISPATCHER", "TECHNICIAN", "SUBCONTRACTOR", "AUDITOR"):
        me = gql.data("{ me { id roles } }", token=fuzz_world.token(role))["me"]
        assert role in me["roles"]
    orders = gql.data(
        "{ workOrders(first: 5) { edges { node { id status } } } }",
        token=fuzz_world.token("DISPATCHER"),
    )["workOrders"]["edges"]
    assert fuzz_world.ids["job"] in {e["node"]["id"] for e in orders}
    assert gql.error_codes("{ me { id } }") == ["UNAUTHENTICATED"]


def test_a_whole_secret_flow_still_works(fuzz_world: FuzzWorld) -> None:
    gql, ids = fuzz_world.world.gql, fuzz_world.ids
    dispatcher, tech = fuzz_world.token("DISPATCHER"), fuzz_world.token("TECHNICIAN")
    now = datetime.now(UTC)
    # A 15-minute window around now: inside any lead/grace/maximum the fuzzer may have set.
    job = gql.data(
        CREATE_JOB,
        {
            "i": {
                "siteId": ids["site"],
                "title": "After the fuzz",
                "scheduledStart": (now - timedelta(minutes=5)).isoformat(),
                "scheduledEnd": (now + timedelta(minutes=10)).isoformat(),
            }
        },
        dispatcher,
    )["createWorkOrder"]["id"]
    gql.data(ASSIGN, {"id": job, "a": fuzz_world.actors["TECHNICIAN"].user_id}, dispatcher)
    gql.data(ATTACH, {"w": job, "s": ids["secret"]}, dispatcher)
    gql.data(DISPATCH, {"id": job}, dispatcher)
    grant = gql.data(REQUEST_ACCESS, {"w": job, "s": ids["secret"]}, tech)["requestSecretAccess"]
    revealed = httpx.post(
        grant["revealUrl"],
        json={"revealToken": grant["revealToken"]},
        headers={"authorization": f"Bearer {tech}"},
        timeout=30,
    )
    assert revealed.status_code == 200, revealed.text
    assert revealed.json()["value"] == FUZZ_DOOR_CODE


def test_the_audit_chains_still_verify(fuzz_world: FuzzWorld) -> None:
    gql = fuzz_world.world.gql
    report = gql.data(INTEGRITY, token=fuzz_world.token("AUDITOR"))["auditIntegrity"]
    assert report["ok"] is True and report["firstBrokenSeq"] is None, report
    assert report["checkedEvents"] > 0
    report = gql.data(INTEGRITY, token=fuzz_world.token("OTHER_ADMIN"))["auditIntegrity"]
    assert report["ok"] is True, report
