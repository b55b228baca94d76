"""Issue 10, finding 3: break-glass was a boolean any process could set, with no step-up.

Now (contract section "Break-glass"):
- secrets issues a break-glass grant only against identity-signed step-up assertions: the
  requesting ADMIN's (bound to the request, secret, job and reason) and, when the organisation
  wants one, a second ADMIN's; never the requester approving themself, once per request;
- identity signs a step-up only for the user of a valid access token who typed a fresh TOTP code
  (a code already used, a recovery code, a wrong code, a deactivated user: refused);
- workorders keeps the requests (PENDING / APPROVED / DENIED / EXPIRED), lets only another ADMIN
  approve, and audits and alerts every step.
Each attack is shown failing beside the honest flow.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import grpc
import pyotp
import pytest
from doorward.identity.v1 import identity_pb2, identity_pb2_grpc
from sqlalchemy import update

from doorward_kit.auth import (
    PURPOSE_BREAK_GLASS_APPROVE,
    PURPOSE_BREAK_GLASS_REQUEST,
    HttpJwksSource,
    NoSessionGuard,
    Role,
    TokenVerifier,
    break_glass_binding,
)
from doorward_kit.errors import DoorwardError
from doorward_kit.grpc import ServiceChannel
from services.workorders.models import BreakGlassRequest
from tests.fixtures.tokens import TestTokenIssuer
from tests.integration.identity.conftest import (
    NEW_PASSWORD,
    create_staff,
    identity_service,  # noqa: F401  (a fixture)
    login,
    new_org,
)
from tests.integration.identity.conftest import Running as IdentityRunning
from tests.integration.identity.conftest import eventually as identity_eventually
from tests.integration.secrets.conftest import (
    SecretsHarness,
    error_code,
    secrets_svc,  # noqa: F401  (a fixture)
)
from tests.integration.workorders.conftest import (
    FRESH_OTP,
    Org,
    Person,
    eventually,
    make_job,
    workorders_service,  # noqa: F401  (a fixture)
)
from tests.integration.workorders.conftest import Running as WorkOrdersRunning
from tests.integration.workorders.conftest import error_code as gql_code

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

REASON = "Fire brigade at the door, technician unreachable"


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value


# ---- secrets: no break-glass grant without verified approvals ---------------------------------


async def test_secrets_issues_break_glass_only_against_verified_step_ups(
    secrets_svc: SecretsHarness,  # noqa: F811
) -> None:
    h = secrets_svc
    org_id = str(uuid.uuid4())
    ref_id, site_id = await h.new_secret(org_id, "glass-canary")
    job = await h.job(org_id, ref_id, site_id)
    admin = str(uuid.uuid4())
    admin_token, honest = h.break_glass(job, ref_id, admin, REASON)

    async def attempt(token: str | None, approval: Any, reason: str = REASON) -> str:
        error = await _refused(
            h.grant(job, ref_id, token=token, break_glass=approval, reason=reason)
        )
        return error_code(error)

    # A process's credentials alone, with the requester's (stolen) approval: no user token.
    assert await attempt(None, honest) == "UNAUTHENTICATED"
    # An ADMIN token without any step-up (the old boolean), or with an empty one.
    empty = type(honest)(request_id=honest.request_id)
    assert await attempt(admin_token, empty) == "FORBIDDEN"
    # A step-up signed by anyone but identity.
    forged_approval = type(honest)(
        request_id=honest.request_id,
        step_up=TestTokenIssuer().step_up(
            user_id=admin,
            org_id=org_id,
            purpose=PURPOSE_BREAK_GLASS_REQUEST,
            binding=break_glass_binding(honest.request_id, ref_id, job.work_order_id, REASON),
        ),
    )
    assert await attempt(admin_token, forged_approval) == "FORBIDDEN"
    # Another ADMIN's step-up under this admin's token; this admin's under another's token.
    other_admin = str(uuid.uuid4())
    assert await attempt(h.token(other_admin, org_id, (Role.ADMIN,)), honest) == "FORBIDDEN"
    # Bound to another reason (workorders rewording the reason), or another secret.
    assert await attempt(admin_token, honest, reason="routine check of the door") == "FORBIDDEN"
    # An access token passed off as a step-up.
    token_as_step_up = type(honest)(request_id=honest.request_id, step_up=admin_token)
    assert await attempt(admin_token, token_as_step_up) == "FORBIDDEN"
    # An expired step-up.
    stale = type(honest)(
        request_id=honest.request_id,
        step_up=h.issuer.step_up(
            user_id=admin,
            org_id=org_id,
            purpose=PURPOSE_BREAK_GLASS_REQUEST,
            binding=break_glass_binding(honest.request_id, ref_id, job.work_order_id, REASON),
            lifetime=-1,
        ),
    )
    assert await attempt(admin_token, stale) == "FORBIDDEN"
    # A technician with a step-up of their own: break-glass is for ADMINs.
    _, tech_approval = h.break_glass(job, ref_id, job.user_id, REASON)
    assert await attempt(job.token, tech_approval) == "FORBIDDEN"
    # The requester's own step-up offered again as the second approval.
    _, self_approved = h.break_glass(job, ref_id, admin, REASON, approvers=(admin,))
    assert await attempt(admin_token, self_approved) == "FORBIDDEN"
    await h.audit.wait_for(org_id, "secret.access.denied", reason="approver_not_distinct")
    assert h.audit.of(org_id, "secret.break_glass") == []
    denied = {e.details["reason"] for e in h.audit.of(org_id, "secret.access.denied")}
    assert {"step_up_missing", "step_up_invalid", "step_up_mismatch", "not_admin"} <= denied
    assert "approver_not_distinct" in denied

    # The step-up assertion is no access token either.
    grant = await h.grant(job, ref_id, token=admin_token, break_glass=honest, reason=REASON)
    assert (await h.reveal(grant, honest.step_up)).status_code == 401
    assert (await h.reveal(grant, admin_token)).json()["value"] == "glass-canary"
    event = await h.audit.wait_for(org_id, "secret.break_glass")
    assert event.details["request_id"] == honest.request_id
    await h.audit.wait_for(org_id, "security.alert", reason="break_glass")
    # One grant per approval, ever.
    assert await attempt(admin_token, honest) == "CONFLICT"

    # With a second ADMIN's approval (another user) it works too.
    _, approved = h.break_glass(job, ref_id, admin, REASON, approvers=(other_admin,))
    grant = await h.grant(job, ref_id, token=admin_token, break_glass=approved, reason=REASON)
    assert grant.reveal_token


# ---- identity: a step-up needs the user's token and a fresh TOTP code -------------------------


async def test_identity_signs_a_step_up_only_for_a_fresh_totp_code(
    identity_service: IdentityRunning,  # noqa: F811
    service_pki: Any,
) -> None:
    running = identity_service
    org = await new_org(running)
    staff = await create_staff(running, org, ["ADMIN"], [])
    restricted = (await login(running, staff.email, NEW_PASSWORD))["data"]["login"]["accessToken"]
    enrolled = await running.gql("mutation { enrollMfa { secret } }", token=restricted)
    secret = enrolled["data"]["enrollMfa"]["secret"]
    used = pyotp.TOTP(secret).now()
    step = int(time.time() // 30)
    confirmed = await running.gql(
        "mutation($otp: String!) { confirmMfa(otp: $otp) { recoveryCodes } }",
        {"otp": used},
        token=restricted,
    )
    codes = confirmed["data"]["confirmMfa"]["recoveryCodes"]
    logged_in = await login(running, staff.email, NEW_PASSWORD, codes[0])
    token = logged_in["data"]["login"]["accessToken"]

    # workorders is the service that asks identity for step-ups (its allow-list).
    channel = ServiceChannel(running.grpc_target, service_pki.auth("workorders"), server="identity")
    stub = identity_pb2_grpc.IdentityStub(channel.channel)

    async def step_up(otp: str, bearer: str | None = token) -> identity_pb2.StepUp:
        return await channel.call(
            stub.VerifyStepUp,
            identity_pb2.VerifyStepUpRequest(
                otp=otp, purpose=PURPOSE_BREAK_GLASS_APPROVE, binding=str(uuid.uuid4())
            ),
            bearer_token=bearer,
        )

    async def code_of(call: Any) -> str:
        with pytest.raises(DoorwardError) as refused:
            await call
        return refused.value.code.value

    try:
        fresh = pyotp.TOTP(secret).at((step + 1) * 30)
        # The process's credentials alone: no user, no step-up.
        assert await code_of(step_up(fresh, None)) == "UNAUTHENTICATED"
        # The code already used (at MFA confirmation): replay refused.
        assert await code_of(step_up(used)) == "FORBIDDEN"
        # A recovery code is not a step-up.
        assert await code_of(step_up(codes[1])) == "FORBIDDEN"
        # The honest step-up: a signed assertion that the kit verifies against the JWKS.
        answer = await step_up(fresh)
        verifier = TokenVerifier(
            HttpJwksSource(running.http_url + "/.well-known/jwks.json"), NoSessionGuard()
        )
        assertion = await verifier.verify_step_up(answer.assertion)
        assert assertion.user_id == staff.id and assertion.org_id == org.id
        assert assertion.purpose == PURPOSE_BREAK_GLASS_APPROVE and Role.ADMIN in assertion.roles
        with pytest.raises(DoorwardError):
            await verifier.verify(answer.assertion)  # not an access token
        # The same fresh code twice: the second is a replay.
        assert await code_of(step_up(fresh)) == "FORBIDDEN"
        # Guessing is throttled.
        for _ in range(3):
            await code_of(step_up("000000"))
        assert await code_of(step_up("000000")) == "RATE_LIMITED"
        # A deactivated user's token: nothing.
        body = await running.gql(
            'mutation($id: ID!) { deactivateUser(id: $id, reason: "left") { id } }',
            {"id": staff.id},
            token=org.admin_token,
        )
        assert "errors" not in body, body
        assert await code_of(step_up(pyotp.TOTP(secret).now())) == "UNAUTHENTICATED"
        await identity_eventually(
            lambda: {e.outcome for e in running.audit.of("user.step_up", org.id)} == {1, 2}
        )
    finally:
        await channel.close()


# ---- workorders: the request, the second approver, expiry, audit and alerts -------------------

REQUEST = """mutation($s: ID!, $r: String!, $o: String!, $w: ID) {
  requestBreakGlassAccess(secretRefId: $s, reason: $r, otp: $o, workOrderId: $w) {
    id status requester { id } grant { id revealToken secretRef { id } } } }"""
APPROVE = """mutation($id: ID!, $o: String!) { approveBreakGlass(requestId: $id, otp: $o) {
  id status approver { id } grant { id } } }"""
DENY = "mutation($id: ID!) { denyBreakGlass(requestId: $id) { id status } }"
POLICY = "mutation($v: Boolean!) { updateBreakGlassPolicy(requireSecondApprover: $v) }"
LIST = """query($st: BreakGlassStatus) { breakGlassRequests(status: $st) {
  id status grant { id revealToken } } }"""


def _admin(running: WorkOrdersRunning, org: Org) -> Person:
    return running.person(org.id, (Role.ADMIN,), (org.r1, org.r2))


async def _gql(running: WorkOrdersRunning, doc: str, variables: dict[str, Any], who: Person) -> Any:
    return await running.gql(doc, variables, token=who.token)


async def test_second_admin_approves_never_the_requester(
    workorders_service: WorkOrdersRunning,  # noqa: F811
) -> None:
    running = workorders_service
    org = running.new_org()
    second = _admin(running, org)
    job = await make_job(running, org)
    ask = {"s": job.secret_ref_id, "r": REASON, "o": FRESH_OTP, "w": job.work_order_id}

    # Only an ADMIN sets the policy.
    assert gql_code(await _gql(running, POLICY, {"v": True}, org.dispatcher)) == "FORBIDDEN"
    body = await _gql(running, POLICY, {"v": True}, org.admin)
    assert body["data"]["updateBreakGlassPolicy"] is True

    grants_before = len(running.secrets.grants)
    body = await _gql(running, REQUEST, dict(ask, o="999999"), org.admin)
    assert gql_code(body) == "FORBIDDEN"  # wrong one-time code
    body = await _gql(running, REQUEST, ask, org.admin)
    pending = body["data"]["requestBreakGlassAccess"]
    assert pending["status"] == "PENDING" and pending["grant"] is None
    assert pending["requester"] == {"id": org.admin.id}
    assert len(running.secrets.grants) == grants_before  # nothing asked of secrets yet

    # The requester cannot approve their own request; a dispatcher cannot approve at all;
    # another ADMIN needs a good fresh code.
    own = await _gql(running, APPROVE, {"id": pending["id"], "o": FRESH_OTP}, org.admin)
    assert gql_code(own) == "FORBIDDEN"
    for who in (org.dispatcher, org.tech, org.auditor, running.new_org().admin):
        body = await _gql(running, APPROVE, {"id": pending["id"], "o": FRESH_OTP}, who)
        assert gql_code(body) in ("FORBIDDEN", "NOT_FOUND"), body
    wrong = await _gql(running, APPROVE, {"id": pending["id"], "o": "000000"}, second)
    assert gql_code(wrong) == "FORBIDDEN"
    still = (await _gql(running, LIST, {"st": "PENDING"}, org.admin))["data"]["breakGlassRequests"]
    assert [r["id"] for r in still] == [pending["id"]]

    approved = await _gql(running, APPROVE, {"id": pending["id"], "o": FRESH_OTP}, second)
    answer = approved["data"]["approveBreakGlass"]
    assert answer["status"] == "APPROVED" and answer["approver"] == {"id": second.id}
    assert answer["grant"] is None  # the grant is the requester's, not the approver's
    assert len(running.secrets.grants) == grants_before
    # Approving twice is a conflict.
    again = await _gql(running, APPROVE, {"id": pending["id"], "o": FRESH_OTP}, second)
    assert gql_code(again) == "CONFLICT"

    # The approver reading the list sees no grant; the requester gets it, once.
    seen = (await _gql(running, LIST, {"st": "APPROVED"}, second))["data"]["breakGlassRequests"]
    assert [(r["id"], r["grant"]) for r in seen] == [(pending["id"], None)]
    mine = (await _gql(running, LIST, {"st": "APPROVED"}, org.admin))["data"]["breakGlassRequests"]
    assert mine[0]["grant"]["revealToken"]
    request, bearer = running.secrets.grants[-1]
    assert bearer == f"Bearer {org.admin.token}"
    assert request.break_glass.request_id == pending["id"]
    assert list(request.break_glass.approvals) == [
        f"step-up:{second.id}:{PURPOSE_BREAK_GLASS_APPROVE}:{pending['id']}"
    ]
    binding = break_glass_binding(pending["id"], job.secret_ref_id, job.work_order_id, REASON)
    assert request.break_glass.step_up == (
        f"step-up:{org.admin.id}:{PURPOSE_BREAK_GLASS_REQUEST}:{binding}"
    )
    later = (await _gql(running, LIST, {"st": "APPROVED"}, org.admin))["data"]["breakGlassRequests"]
    assert later[0]["grant"] is None

    # Every step audited, each with a security alert; the refusals too.
    def actions() -> set[str]:
        return {e.action for e in running.audit.events if e.org_id == org.id}

    await eventually(
        lambda: {f"secret.break_glass.{s}" for s in ("request", "approve", "grant")} <= actions()
    )
    await eventually(
        lambda: (
            {e.details["mode"] for e in running.audit.of(org.id, "security.alert")}
            >= {"request", "approve", "break_glass_policy"}
        )
    )

    def refusals() -> set[str]:
        return {
            e.details["reason"]
            for e in running.audit.events
            if e.org_id == org.id and e.action.startswith("secret.break_glass") and e.outcome == 2
        }

    await eventually(lambda: refusals() >= {"step_up_refused", "own_request"})


async def test_without_the_policy_the_requester_gets_the_grant_at_once(
    workorders_service: WorkOrdersRunning,  # noqa: F811
) -> None:
    running = workorders_service
    org = running.new_org()
    job = await make_job(running, org)
    ask = {"s": job.secret_ref_id, "r": REASON, "o": FRESH_OTP, "w": None}
    for who in (org.dispatcher, org.tech, org.auditor):
        assert gql_code(await _gql(running, REQUEST, ask, who)) == "FORBIDDEN"
    assert gql_code(await _gql(running, REQUEST, dict(ask, o=""), org.admin)) == "BAD_USER_INPUT"
    body = await _gql(running, REQUEST, ask, org.admin)
    answer = body["data"]["requestBreakGlassAccess"]
    assert answer["status"] == "APPROVED"
    assert answer["grant"]["secretRef"] == {"id": job.secret_ref_id}
    request, _ = running.secrets.grants[-1]
    assert request.break_glass.request_id == answer["id"] and not request.break_glass.approvals


async def test_pending_requests_expire_and_can_be_denied(
    workorders_service: WorkOrdersRunning,  # noqa: F811
) -> None:
    running = workorders_service
    org = running.new_org()
    second = _admin(running, org)
    job = await make_job(running, org)
    await _gql(running, POLICY, {"v": True}, org.admin)
    ask = {"s": job.secret_ref_id, "r": REASON, "o": FRESH_OTP, "w": job.work_order_id}

    first = (await _gql(running, REQUEST, ask, org.admin))["data"]["requestBreakGlassAccess"]
    denied = await _gql(running, DENY, {"id": first["id"]}, second)
    assert denied["data"]["denyBreakGlass"]["status"] == "DENIED"
    late = await _gql(running, APPROVE, {"id": first["id"], "o": FRESH_OTP}, second)
    assert gql_code(late) == "CONFLICT"

    old = (await _gql(running, REQUEST, ask, org.admin))["data"]["requestBreakGlassAccess"]
    async with running.runtime.db.unit_of_work() as session:
        await session.execute(
            update(BreakGlassRequest)
            .where(BreakGlassRequest.id == old["id"])
            .values(expires_at=BreakGlassRequest.created_at - timedelta(seconds=1))
        )
    expired = (await _gql(running, LIST, {"st": "EXPIRED"}, org.admin))["data"]
    assert [r["id"] for r in expired["breakGlassRequests"]] == [old["id"]]
    late = await _gql(running, APPROVE, {"id": old["id"], "o": FRESH_OTP}, second)
    assert gql_code(late) == "CONFLICT"
    await eventually(
        lambda: (
            bool(running.audit.of(org.id, "secret.break_glass.deny"))
            and any(
                e.details.get("reason") == "expired"
                for e in running.audit.of(org.id, "secret.break_glass.approve")
            )
        )
    )
