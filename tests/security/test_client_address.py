"""Issue 10, finding 2: one address for everyone.

Subgraphs take GraphQL only from the gateway (its signature on every request), and the client
address only from that signature; the gateway determines the address (the TCP peer, or behind a
trusted proxy the right-most untrusted X-Forwarded-For entry); identity throttles by it, so a
stranger failing logins with unknown emails locks out only their own address; `sourceIp` of an
audit event is the client's. Against the real identity service and a real gateway in front."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import uvicorn
from doorward.audit.v1 import audit_pb2

from doorward_kit.gateway_signature import GatewaySigner
from doorward_kit.net import free_port
from gateway.server import create_app
from gateway.settings import GatewaySettings
from tests.fixtures.gateway_signing import gateway_keys
from tests.integration.identity import conftest as identity_fixtures
from tests.integration.identity.conftest import (
    ADMIN_PASSWORD,
    LOGIN,
    NEW_PASSWORD,
    Running,
    create_staff,
    error_code,
    eventually,
    login,
    otp_now,
)

pytestmark = pytest.mark.integration

# The real identity service and an organisation in it (tests/integration/identity/conftest.py).
identity_service = identity_fixtures.identity_service
running = identity_fixtures.running
org = identity_fixtures.org


def login_body(email: str, password: str, otp: str | None = None) -> bytes:
    variables = {"email": email, "password": password, "otp": otp}
    return orjson.dumps({"query": LOGIN, "variables": variables})


async def post_raw(running: Running, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            running.graphql_url,
            content=body,
            headers={"content-type": "application/json", **headers},
        )


@contextlib.asynccontextmanager
async def gateway_in_front(running: Running, *, trusted_proxies: str = "") -> AsyncIterator[str]:
    """The real gateway, composing the real identity subgraph and signing with the test key."""
    settings = GatewaySettings(
        stack=running.stack,
        subgraphs={"identity": running.graphql_url},
        auth_enabled=False,  # identity checks every token itself; this is about addresses
        rate_limit_per_second=0,
        trusted_proxies=trusted_proxies,
        signing_key_file=gateway_keys().private_file,
    )
    port = free_port()
    # As gateway/cli.py serves it: uvicorn must not rewrite the peer from X-Forwarded-For.
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, proxy_headers=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert not task.done() and time.monotonic() < deadline, "gateway did not start"
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}/graphql"
    finally:
        server.should_exit = True
        await task


async def gateway_login(
    url: str, email: str, password: str, otp: str | None = None, *, forwarded_for: str = ""
) -> dict:
    headers = {"content-type": "application/json"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(url, content=login_body(email, password, otp), headers=headers)
    return dict(response.json())


def denied_logins(running: Running, org_id: str) -> list[audit_pb2.AuditEvent]:
    return [e for e in running.audit.of("auth.login", org_id) if e.outcome == audit_pb2.DENIED]


# ---- subgraphs answer only the gateway --------------------------------------------------------


async def test_a_direct_caller_is_refused_whatever_forwarded_for_it_sends(running, org):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    body = login_body(staff.email, "guess-password-xyz")
    # The attack: straight to the subgraph, past the gateway, with a made-up address each time
    # (the old subgraph believed X-Forwarded-For, so every guess came from a "new" client).
    for n in range(5):  # more than the account's free failures (3 in the test settings)
        refused = await post_raw(running, body, {"X-Forwarded-For": f"198.51.100.{n}"})
        assert refused.status_code == 401
        error = refused.json()["errors"][0]
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
        assert "gateway" in error["message"]
        assert "data" not in refused.json()
    # None of them ran: the account is not blocked, and the honest (signed) login works.
    ok = await login(running, staff.email, NEW_PASSWORD, source_ip="198.51.100.200")
    assert "errors" not in ok, ok


async def test_stale_replayed_or_altered_signatures_are_refused(running, org):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    keys = gateway_keys()
    body = login_body(staff.email, NEW_PASSWORD)

    def sign(body: bytes, address: str = "192.0.2.10", skew: float = 0.0) -> dict[str, str]:
        signer = GatewaySigner.from_file(keys.private_file, clock=lambda: time.time() + skew)
        return signer.headers("POST", "/graphql", body, address)

    stale = await post_raw(running, body, sign(body, skew=-120))
    assert stale.status_code == 401 and "stale" in stale.json()["errors"][0]["message"]
    future = await post_raw(running, body, sign(body, skew=120))
    assert future.status_code == 401
    # Another body under a signature made for this one.
    other = login_body(org.admin_email, "guess-password-xyz")
    swapped = await post_raw(running, other, sign(body))
    assert swapped.status_code == 401 and "invalid" in swapped.json()["errors"][0]["message"]
    # Another client address under the gateway's signature.
    headers = sign(body, "192.0.2.10")
    headers["x-doorward-client-address"] = "192.0.2.99"
    forged = await post_raw(running, body, headers)
    assert forged.status_code == 401
    # A signature from another key.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = GatewaySigner(Ed25519PrivateKey.generate())
    foreign = await post_raw(running, body, stranger.headers("POST", "/graphql", body, ""))
    assert foreign.status_code == 401
    # The honest request works once; the very same request again is a replay.
    honest = sign(body)
    first = await post_raw(running, body, honest)
    assert first.status_code == 200 and "errors" not in first.json(), first.json()
    again = await post_raw(running, body, honest)
    assert again.status_code == 401 and "replayed" in again.json()["errors"][0]["message"]


async def test_get_is_no_way_around(running):
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(running.graphql_url, params={"query": "{ regions { id } }"})
    assert response.status_code in {401, 404, 405}
    assert "data" not in response.text


# ---- the gateway determines the address -------------------------------------------------------


async def test_forwarded_for_from_an_untrusted_peer_is_discarded(running, org):
    async with gateway_in_front(running) as url:  # no trusted proxies (the default)
        wrong = await gateway_login(
            url, org.admin_email, "guess-password-xyz", forwarded_for="203.0.113.50"
        )
    assert error_code(wrong) == "UNAUTHENTICATED"
    await eventually(lambda: len(denied_logins(running, org.id)) >= 1)
    # The address is the gateway's TCP peer (this test), not what the peer claimed.
    assert {e.source_ip for e in denied_logins(running, org.id)} == {"127.0.0.1"}


async def test_behind_a_trusted_proxy_source_ip_is_the_client(running, org):
    async with gateway_in_front(running, trusted_proxies="127.0.0.1/32") as url:
        # The client wrote the left entry itself; the trusted proxy (this test) appended the
        # address it saw. The right-most untrusted entry is the client.
        wrong = await gateway_login(
            url, org.admin_email, "guess-password-xyz", forwarded_for="10.9.9.9, 203.0.113.51"
        )
        assert error_code(wrong) == "UNAUTHENTICATED"
        ok = await gateway_login(
            url,
            org.admin_email,
            ADMIN_PASSWORD,
            otp_now(org.totp_secret, offset=30),
            forwarded_for="203.0.113.52",
        )
        assert "errors" not in ok, ok
    await eventually(lambda: len(denied_logins(running, org.id)) >= 1)
    assert [e.source_ip for e in denied_logins(running, org.id)] == ["203.0.113.51"]

    def allowed_from() -> set[str]:
        events = running.audit.of("auth.login", org.id)
        return {e.source_ip for e in events if e.outcome == audit_pb2.ALLOWED}

    await eventually(lambda: "203.0.113.52" in allowed_from())
    assert "10.9.9.9" not in allowed_from() | {e.source_ip for e in denied_logins(running, org.id)}


# ---- identity throttles by the real address ---------------------------------------------------


async def test_a_stranger_spraying_unknown_emails_locks_out_only_their_own_address(running, org):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    stranger, colleague = "203.0.113.60", "198.51.100.61"
    free = running.settings.identity_login_free_failures_address
    async with gateway_in_front(running, trusted_proxies="127.0.0.1/32") as url:
        # The attack: failed logins for unknown emails until the stranger's address is blocked.
        codes: list[str | None] = []
        while "RATE_LIMITED" not in codes and len(codes) < free + 5:
            email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
            body = await gateway_login(url, email, "guess-password-xyz", forwarded_for=stranger)
            codes.append(error_code(body))
        assert codes[-1] == "RATE_LIMITED" and len(codes) > free, codes
        # Right away (while that block lasts) everyone else logs in as before: no bucket is
        # shared by every client. (Before the fix every login here came from the gateway.)
        ok = await gateway_login(url, staff.email, NEW_PASSWORD, forwarded_for=colleague)
        assert "errors" not in ok, ok
        admin = await gateway_login(
            url,
            org.admin_email,
            ADMIN_PASSWORD,
            otp_now(org.totp_secret, offset=30),
            forwarded_for="192.0.2.62",
        )
        assert "errors" not in admin, admin


async def test_an_ipv6_client_cannot_escape_by_changing_its_interface_id(running, org):
    staff = await create_staff(running, org, ["TECHNICIAN"], [])
    free = running.settings.identity_login_free_failures_address
    async with gateway_in_front(running, trusted_proxies="127.0.0.1/32") as url:
        # Every attempt from a new address of the same /64, until that /64 is blocked.
        codes: list[str | None] = []
        while "RATE_LIMITED" not in codes and len(codes) < free + 5:
            email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
            address = f"2001:db8:1:2::{len(codes) + 1:x}"
            codes.append(
                error_code(await gateway_login(url, email, "guess", forwarded_for=address))
            )
        assert codes[-1] == "RATE_LIMITED" and len(codes) > free, codes
        other_64 = await gateway_login(
            url, staff.email, NEW_PASSWORD, forwarded_for="2001:db8:1:3::1"
        )
        assert "errors" not in other_64, other_64
