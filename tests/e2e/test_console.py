"""The web console in a real browser (headless Debian Chromium driven by Playwright), against
the whole stack (`doorward up`): the contract's "Console" hooks, the strict CSP left on, axe-core
for accessibility, and a screenshot of every screen passed (under /tmp, never committed).

Skipped, saying why, when Chromium or the console build (web/dist, `make test` builds it when
Node.js is present) is missing.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from tests.e2e.world import NEW_PASSWORD, PASSWORD, Actor, World

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
DIST = ROOT / "web" / "dist" / "index.html"
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = Path("/tmp/doorward-console-shots")
ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
PHONE = {"width": 360, "height": 740}
DOOR_CODE = f"4{uuid.uuid4().int % 10**7:07d}"

if not CHROMIUM.exists() or not DIST.exists() or not AXE.exists():
    pytest.skip("needs /usr/bin/chromium (apt-get install -y chromium) and the built console "
                "(make console: Node.js 20+)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def fresh_otp(secret: str) -> str:
    """A TOTP code never used before: identity refuses replays, and the world's setup may
    have spent the current period's code; wait for the next period."""
    totp = pyotp.TOTP(secret)
    time.sleep(totp.interval - time.time() % totp.interval + 1)
    return totp.now()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Screen:
    """One browser context (nothing shared between users) with screenshots and axe checks."""

    def __init__(self, browser: Browser, base: str, name: str, phone: bool) -> None:
        self.context = browser.new_context(viewport=PHONE if phone else None)
        self.page: Page = self.context.new_page()
        self.base = base
        self.folder = SHOTS / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.csp_errors: list[str] = []
        self.page.on("console", lambda m: self.csp_errors.append(m.text)
                     if "Content Security Policy" in m.text else None)
        self.page.set_default_timeout(30_000)

    def shot(self, label: str) -> None:
        """Screenshot, then axe-core: no serious or critical violation on this screen."""
        self.count += 1
        self.page.screenshot(path=str(self.folder / f"{self.count:02d}-{label}.png"),
                             full_page=True)
        if not self.page.evaluate("() => typeof window.axe !== 'undefined'"):
            # Evaluated through the DevTools protocol: the page's CSP stays on for the app.
            self.page.evaluate(AXE.read_text())
        result: dict[str, Any] = self.page.evaluate(
            "() => axe.run(document, {resultTypes: ['violations']})")
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
               for v in result["violations"] if v["impact"] in ("serious", "critical")]
        assert not bad, f"{label}: {bad}"
        assert not self.csp_errors, self.csp_errors

    def sign_in(self, email: str, password: str, otp: str | None = None) -> None:
        self.page.goto(self.base)
        self.page.locator("input[name=email]").fill(email)
        self.page.locator("input[name=password]").fill(password)
        if otp:
            self.page.locator("input[name=otp]").fill(otp)
        self.shot("sign-in")
        self.page.locator("input[name=otp]").press("Enter")

    def storage_holds(self, text: str) -> bool:
        dumped: str = self.page.evaluate(
            "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage),"
            " document.cookie])")
        return text in dumped

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def base(stack) -> str:
    return stack.gateway_url.removesuffix("graphql")


@pytest.fixture(scope="module")
def seeded(world: World) -> dict[str, str]:
    """A site with a door code, a technician with MFA and a job of theirs running now, and a
    job of another technician on the same day."""
    gql, d = world.gql, world.people["dispatcher"].token
    london = world.regions["London"]
    key = f"tess{uuid.uuid4().hex[:4]}"
    tech = world.create_person(key, "TECHNICIAN", ["London"])
    enrolment = gql.data("mutation { enrollMfa { secret } }", token=tech.token)["enrollMfa"]
    tech.totp_secret = enrolment["secret"]
    gql.data("mutation($o: String!) { confirmMfa(otp: $o) { recoveryCodes } }",
             {"o": tech.otp()}, tech.token)
    customer = gql.data(
        "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }",
        {"i": {"name": "Console Customer", "phone": "", "email": "", "regionId": london}},
        d)["createCustomer"]["id"]
    site = gql.data("mutation($i: CreateSiteInput!) { createSite(input: $i) { id } }",
                    {"i": {"customerId": customer, "address": "7 Browser Row, London",
                           "regionId": london}}, d)["createSite"]["id"]
    upload = gql.data(
        """mutation($s: ID!) { prepareSecretUpload(siteId: $s, kind: DOOR_CODE, label: "Front door")
           { secretRef { id } uploadUrl uploadToken } }""", {"s": site}, d)["prepareSecretUpload"]
    put = httpx.put(upload["uploadUrl"], json={"uploadToken": upload["uploadToken"],
                                                "value": DOOR_CODE},
                    headers={"authorization": f"Bearer {d}"}, timeout=30)
    assert put.status_code == 201, put.text
    ref = upload["secretRef"]["id"]

    def job(assignee: str, title: str) -> str:
        start = datetime.now(UTC) - timedelta(minutes=5)
        jid = gql.data(
            "mutation($i: CreateWorkOrderInput!) { createWorkOrder(input: $i) { id } }",
            {"i": {"siteId": site, "title": title, "scheduledStart": iso(start),
                   "scheduledEnd": iso(start + timedelta(hours=2))}}, d)["createWorkOrder"]["id"]
        gql.data("mutation($id: ID!, $a: ID!) { assignWorkOrder(id: $id, assigneeId: $a) { id } }",
                 {"id": jid, "a": assignee}, d)
        gql.data("mutation($w: ID!, $s: ID!) { attachSecret(workOrderId: $w, secretRefId: $s) "
                 "{ id } }", {"w": jid, "s": ref}, d)
        gql.data("mutation($id: ID!) { dispatchWorkOrder(id: $id) { id } }", {"id": jid}, d)
        return str(jid)

    world.people["console_tech"] = tech
    return {"site": site, "ref": ref, "job": job(tech.user_id, "Replace door closer"),
            "other_job": job(world.people["tina"].user_id, "Tina's gutter job"),
            "tech_name": key.title()}


def test_technician_signs_in_with_mfa_gets_the_code_once_and_completes(browser, base, seeded,
                                                                        world):
    tech: Actor = world.people["console_tech"]
    s = Screen(browser, base, "technician", phone=True)
    try:
        s.sign_in(tech.email, tech.password, fresh_otp(tech.totp_secret or ""))
        job = s.page.get_by_test_id(f"job-{seeded['job']}")
        expect(job).to_be_visible()
        # Another technician's job on the same day and site is never listed.
        expect(s.page.get_by_test_id(f"job-{seeded['other_job']}")).to_have_count(0)
        s.shot("my-jobs")
        job.click()
        expect(s.page.get_by_text("7 Browser Row, London")).to_be_visible()
        expect(s.page.get_by_test_id("job-status")).to_have_text("Dispatched")
        s.shot("job")
        s.page.get_by_role("button", name="Start job").click()
        expect(s.page.get_by_test_id("job-status")).to_have_text("In progress")
        s.page.get_by_test_id(f"reveal-{seeded['ref']}").click()
        value = s.page.get_by_test_id("secret-value")
        expect(value).to_have_text(DOOR_CODE)
        expect(s.page.get_by_text(re.compile(r"Hidden in \d+ s"))).to_be_visible()
        assert not s.storage_holds(DOOR_CODE)
        s.shot("code-shown")
        s.page.get_by_role("button", name="Hide now").click()
        expect(value).to_have_count(0)
        s.page.get_by_test_id(f"reveal-{seeded['ref']}").click()
        expect(s.page.get_by_test_id("error")).to_contain_text("already been used")
        expect(s.page.get_by_test_id("secret-value")).to_have_count(0)
        s.shot("code-used")
        s.page.get_by_role("button", name="Complete job").click()
        expect(s.page.get_by_test_id("job-status")).to_have_text("Completed")
        s.shot("completed")
        s.page.get_by_role("button", name="Sign out").click()
        expect(s.page.locator("input[name=email]")).to_be_visible()
        assert DOOR_CODE not in s.page.content()
        assert not s.storage_holds(DOOR_CODE)
        s.shot("signed-out")
    finally:
        s.close()


def test_a_technician_never_sees_another_technicians_job(browser, base, seeded, world):
    tina: Actor = world.people["tina"]
    s = Screen(browser, base, "other-technician", phone=True)
    try:
        s.sign_in(tina.email, tina.password)
        expect(s.page.get_by_test_id(f"job-{seeded['other_job']}")).to_be_visible()
        expect(s.page.get_by_test_id(f"job-{seeded['job']}")).to_have_count(0)
        s.shot("my-jobs")
    finally:
        s.close()


def opened(p: Page, title: str):  # type: ignore[no-untyped-def]
    """The job's card with its actions unfolded (a re-render keeps a <details> open)."""
    card = p.locator("li.board-job", has_text=title)
    if not card.locator("details").evaluate("d => d.open"):
        card.locator("summary").click()
    return card


def test_dispatcher_creates_assigns_dispatches_and_uploads_a_code(browser, base, seeded, world):
    dispatcher: Actor = world.people["dispatcher"]
    tech: Actor = world.people["console_tech"]
    customer = f"Board Customer {uuid.uuid4().hex[:6]}"
    address = f"{uuid.uuid4().int % 900 + 100} Dispatch Street, London"
    title = f"Fit new lock {uuid.uuid4().hex[:6]}"
    s = Screen(browser, base, "dispatcher", phone=False)
    p = s.page
    try:
        s.sign_in(dispatcher.email, dispatcher.password)
        expect(p.get_by_role("heading", name="Dispatch board")).to_be_visible()
        s.shot("board")
        p.get_by_label("Customer name").fill(customer)
        p.get_by_role("button", name="Create customer").click()
        expect(p.get_by_role("status").filter(has_text="Customer created.")).to_be_visible()
        p.get_by_label("Site's customer").select_option(label=customer)
        p.get_by_label("Address").fill(address)
        p.get_by_role("button", name="Create site").click()
        expect(p.get_by_role("status").filter(has_text="Site created.")).to_be_visible()
        p.get_by_label("Code's site").select_option(label=f"{customer}: {address}")
        p.get_by_label("Label").fill("Side gate")
        p.get_by_label("Kind").select_option(label="Gate code")
        p.get_by_label("Code value").fill("917353")
        s.shot("upload-form")
        p.get_by_label("Code value").press("Enter")
        expect(p.get_by_role("status").filter(has_text="Code uploaded.")).to_be_visible()
        expect(p.get_by_label("Code value")).to_have_value("")
        s.shot("uploaded")
        start = datetime.now() + timedelta(minutes=30)
        p.get_by_label("Site", exact=True).select_option(label=f"{customer}: {address}")
        p.get_by_label("Title").fill(title)
        p.get_by_label("Start", exact=True).fill(start.strftime("%Y-%m-%dT%H:%M"))
        p.get_by_label("End", exact=True).fill((start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
        p.get_by_role("button", name="Create job").click()
        expect(p.get_by_role("status").filter(has_text="Job created.")).to_be_visible()
        expect(p.locator("li.board-job", has_text=title)).to_contain_text("Scheduled")
        card = opened(p, title)
        s.shot("job-created")
        card.get_by_label(re.compile("Technician for")).select_option(
            label=seeded["tech_name"])
        card.get_by_role("button", name="Assign").click()
        expect(p.get_by_role("status").filter(has_text="assigned")).to_be_visible()
        card = opened(p, title)
        card.get_by_role("button", name="Attach code").click()
        expect(p.get_by_role("status").filter(has_text="Code attached")).to_be_visible()
        card = opened(p, title)
        card.get_by_role("button", name="Dispatch").click()
        expect(p.get_by_role("status").filter(has_text="dispatched")).to_be_visible()
        expect(p.locator("li.board-job", has_text=title)).to_contain_text("Dispatched")
        s.shot("dispatched")
    finally:
        s.close()
    # The API agrees: dispatched, assigned, with the uploaded code attached.
    jobs = world.gql.data(
        """query { workOrders(first: 200) { edges { node { title status assignee { id }
           secretRefs { label } } } } }""", token=dispatcher.token)["workOrders"]["edges"]
    mine = [e["node"] for e in jobs if e["node"]["title"] == title]
    assert mine and mine[0]["status"] == "DISPATCHED"
    assert mine[0]["assignee"]["id"] == tech.user_id
    assert [r["label"] for r in mine[0]["secretRefs"]] == ["Side gate"]


def test_auditor_enrols_mfa_at_first_sign_in_and_finds_the_reveal(browser, base, seeded, world):
    email = f"ops-{uuid.uuid4().hex[:6]}@acme-maintenance.com"
    world.gql.data(
        "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
        {"i": {"email": email, "displayName": "Ops Auditor", "roles": ["AUDITOR"],
               "regionIds": [world.regions["London"]], "initialPassword": PASSWORD}},
        world.admin.token)
    s = Screen(browser, base, "auditor", phone=False)
    p = s.page
    try:
        s.sign_in(email, PASSWORD)
        new_password = p.locator("input[name=newPassword]")
        expect(new_password).to_be_visible()
        expect(p.locator("input[name=password]")).to_have_count(0)  # the console holds it
        new_password.fill(NEW_PASSWORD)
        s.shot("change-password")
        new_password.press("Enter")
        expect(p.get_by_role("img", name=re.compile("QR code"))).to_be_visible()
        secret = p.locator("code.secret-key").inner_text().strip()
        p.locator("input[name=otp]").fill(pyotp.TOTP(secret).now())
        s.shot("enrol-mfa")
        p.locator("input[name=otp]").press("Enter")
        codes = p.get_by_test_id("recovery-codes").locator("code")
        expect(codes.first).to_be_visible()
        recovery = codes.first.inner_text().strip()
        s.shot("recovery-codes")
        p.get_by_role("button", name=re.compile("saved them")).click()
        p.locator("input[name=email]").fill(email)
        p.locator("input[name=password]").fill(NEW_PASSWORD)
        p.locator("input[name=otp]").fill(recovery)
        p.locator("input[name=otp]").press("Enter")
        expect(p.get_by_role("heading", name="Audit trail")).to_be_visible()
        expect(p.get_by_test_id("integrity")).to_contain_text("Chain intact")
        s.shot("trail")
        p.get_by_label(re.compile("^Action")).fill("secret.reveal")
        p.get_by_label("Work order id").fill(seeded["job"])
        p.get_by_label("Work order id").press("Enter")
        row = p.locator("tr", has_text="secret.reveal").filter(has_text="ALLOWED")
        expect(row.first).to_be_visible()
        expect(row.first).to_contain_text(seeded["ref"])
        assert DOOR_CODE not in p.content()
        s.shot("reveal-found")
        # The reveal's trace: the request across the services, with its access decision and
        # the audit events it wrote (spans reach the embedded trace store within seconds).
        trace = p.get_by_test_id("trace")
        for _ in range(10):
            row.first.get_by_role("button", name="Show trace").click()
            if p.get_by_test_id("span-doorward.secret.reveal").count():
                break
            p.wait_for_timeout(1000)
        expect(trace.get_by_test_id("span-doorward.secret.reveal").first).to_contain_text("allow")
        expect(trace).to_contain_text("secrets")
        expect(trace).to_contain_text("secret.reveal")
        assert DOOR_CODE not in p.content()
        s.shot("reveal-trace")
    finally:
        s.close()


def test_admin_sees_people_regions_and_settings_and_deactivates(browser, base, world):
    admin: Actor = world.admin
    leaver = world.create_person(f"leaver{uuid.uuid4().hex[:4]}", "TECHNICIAN", ["London"])
    s = Screen(browser, base, "admin", phone=False)
    p = s.page
    try:
        s.sign_in(admin.email, admin.password, fresh_otp(admin.totp_secret or ""))
        p.get_by_role("navigation").get_by_role("button", name="People").click()
        row = p.locator("tr", has_text=leaver.email)
        expect(row).to_contain_text("Active")
        expect(p.get_by_role("heading", name="Organisation settings")).to_be_visible()
        s.shot("people")
        row.locator("summary").click()
        row.get_by_label(re.compile("Reason to deactivate")).fill("left the company")
        row.get_by_role("button", name="Deactivate").click()
        expect(p.locator("tr", has_text=leaver.email)).to_contain_text("Deactivated")
        s.shot("deactivated")
        p.get_by_role("navigation").get_by_role("button", name="Audit").click()
        expect(p.get_by_role("heading", name="Audit trail")).to_be_visible()
        s.shot("audit")
    finally:
        s.close()
    refused = world.gql.error_codes("query { me { id } }", token=leaver.token)
    assert refused == ["UNAUTHENTICATED"]


def test_admin_breaks_glass_once_over_persisted_queries(browser, base, seeded, world):
    """Break-glass from the console: a fresh one-time code and a reason, the code shown once.
    The console speaks Automatic Persisted Queries: operations it sent before go as a bare hash."""
    admin: Actor = world.admin
    s = Screen(browser, base, "breakglass", phone=False)
    p = s.page
    bodies: list[dict[str, Any]] = []
    p.on("request", lambda r: bodies.append(r.post_data_json)
         if r.url.endswith("/graphql") and r.method == "POST" else None)
    try:
        s.sign_in(admin.email, admin.password, fresh_otp(admin.totp_secret or ""))
        nav = p.get_by_role("navigation")
        nav.get_by_role("button", name="Break-glass").click()
        expect(p.get_by_role("heading", name="Break-glass access")).to_be_visible()
        s.shot("break-glass")
        p.get_by_label("Site", exact=True).select_option(seeded["site"])
        p.get_by_label("Code", exact=True).select_option(seeded["ref"])
        p.get_by_label("Reason (kept on the audit trail)").fill("flood: customer unreachable")
        p.get_by_label("Your one-time code").fill(fresh_otp(admin.totp_secret or ""))
        p.get_by_role("button", name="Ask for break-glass access").click()
        button = p.get_by_test_id(f"reveal-{seeded['ref']}")
        expect(button).to_be_visible()
        s.shot("approved")
        button.click()
        expect(p.get_by_test_id("secret-value")).to_have_text(DOOR_CODE)
        s.shot("revealed")
        p.get_by_role("button", name="Hide now").click()
        expect(p.get_by_test_id("secret-value")).to_have_count(0)
        expect(button).to_have_count(0)  # shown once: no second "Get code"
        assert not s.storage_holds(DOOR_CODE)
        # Back and forth: the requests list is fetched again, this time by its hash alone.
        nav.get_by_role("button", name="People").click()
        nav.get_by_role("button", name="Break-glass").click()
        expect(p.locator("tr", has_text="flood: customer unreachable")).to_contain_text("Approved")
    finally:
        s.close()
    persisted = [b for b in bodies if isinstance(b, dict)
                 and "persistedQuery" in (b.get("extensions") or {})]
    assert persisted and all("persistedQuery" in (b.get("extensions") or {})
                             for b in bodies if isinstance(b, dict))
    assert any(b.get("operationName") == "BreakGlassRequests" and "query" not in b
               for b in persisted), "a repeated operation went as a bare hash"
    trail = world.gql.data(
        'query($r: ID) { auditEvents(secretRefId: $r, first: 20) { edges { node { action } } } }',
        {"r": seeded["ref"]}, admin.token)["auditEvents"]["edges"]
    assert any("break_glass" in e["node"]["action"] for e in trail)


def test_the_secrets_door_answers_cors_to_the_console_origin_only(stack, base):
    console = base.rstrip("/")
    url = f"{stack.http_url('secrets')}/v1/reveals/00000000-0000-0000-0000-000000000000"

    def preflight(origin: str) -> httpx.Response:
        return httpx.options(url, headers={
            "origin": origin, "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type"}, timeout=10)

    ok, evil = preflight(console), preflight("https://evil.example.net")
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == console
    assert evil.status_code == 400
    assert "access-control-allow-origin" not in evil.headers
    refused = httpx.post(url, json={"revealToken": "x"}, timeout=10,
                         headers={"origin": "https://evil.example.net"})
    assert "access-control-allow-origin" not in refused.headers
    assert refused.headers["cache-control"] == "no-store"
