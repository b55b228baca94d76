"""Issue 15's failover test: `doorward up --replicas 2 --vault-nodes 3` keeps its promises while
the OpenBao leader and one replica of every process are SIGKILLed under load.

While technicians keep requesting and revealing codes, dispatchers keep reassigning jobs and the
board keeps being read, the test kills the OpenBao leader, then replica 1 of the gateway and of
every service. Then: every reveal either returned the value (once per grant) or failed with a
clear error; no grant revealed after its revocation; the audit chain verifies without gaps and
holds exactly one `secret.reveal` per value returned; a deactivated user is refused by every
surviving replica. The failover times are printed (`-s` shows them) and written to
$DOORWARD_FAILOVER_REPORT when set.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from doorward_kit.net import free_port
from tests.e2e.conftest import SERVICES, START_TIMEOUT, start_up, stop_up, wait_for_gateway
from tests.e2e.world import PASSWORD, Actor, GraphQLClient, World, bootstrap_org

pytestmark = pytest.mark.e2e

STEP = 100  # deploy.supervisor.REPLICA_PORT_STEP
DOOR_CODE = f"failover-{uuid.uuid4().hex}"
LOAD_SECONDS = float(os.environ.get("FAILOVER_LOAD_SECONDS", "40"))

CREATE_CUSTOMER = "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }"
CREATE_SITE = "mutation($i: CreateSiteInput!) { createSite(input: $i) { id } }"
PREPARE_UPLOAD = """mutation($s: ID!, $l: String!) {
  prepareSecretUpload(siteId: $s, kind: DOOR_CODE, label: $l) { secretRef { id } uploadUrl uploadToken } }"""
CREATE_JOB = "mutation($i: CreateWorkOrderInput!) { createWorkOrder(input: $i) { id } }"
ASSIGN = "mutation($id: ID!, $a: ID!) { assignWorkOrder(id: $id, assigneeId: $a) { id } }"
ATTACH = "mutation($w: ID!, $s: ID!) { attachSecret(workOrderId: $w, secretRefId: $s) { id } }"
DISPATCH = "mutation($id: ID!) { dispatchWorkOrder(id: $id) { id status } }"
REQUEST = """mutation($w: ID!, $s: ID!) {
  requestSecretAccess(workOrderId: $w, secretRefId: $s) { id revealUrl revealToken } }"""
BOARD = "query { myJobs { id status site { id } } }"
DEACTIVATE = "mutation($id: ID!, $r: String!) { deactivateUser(id: $id, reason: $r) { id } }"
INTEGRITY = "query { auditIntegrity { ok checkedEvents headSeq firstBrokenSeq problems } }"
EVENTS = """query($a: String!, $after: String) { auditEvents(action: $a, first: 100, after: $after) {
  edges { node { id seq outcome } } pageInfo { hasNextPage endCursor } } }"""


# --------------------------------------------------------------------------- the stack


@dataclass
class Replicated:
    env: dict[str, str]
    data_dir: Path
    log_file: Path
    pid: int

    def port(self, name: str, replica: int = 0) -> int:
        return int(self.env[name]) + STEP * replica

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.port('DOORWARD_GATEWAY_PORT')}/graphql"

    def children(self) -> list[int]:
        """The supervisor's direct children (services, gateways, OpenBao nodes)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.pid and fields[0] != "Z":
                    found.append(int(stat.parent.name))
        return found

    def replica_pid(self, process: str, replica: int) -> int:
        """The pid of `process`'s replica `replica` (found by the port it was told to bind)."""
        var = (
            "DOORWARD_GATEWAY_PORT"
            if process == "gateway"
            else f"DOORWARD_{process.upper()}_HTTP_PORT"
        )
        want = f"{var}={self.port(var, replica)}".encode()
        module = b"gateway" if process == "gateway" else f"services.{process}".encode()
        for pid in self.children():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if module in cmd and want in env:
                    return pid
        raise AssertionError(f"no process for {process} replica {replica}")

    def vault_leader_pid(self) -> tuple[int, str]:
        leader = httpx.get(
            f"http://127.0.0.1:{self.port('DOORWARD_VAULT_PORT')}/v1/sys/leader", timeout=5
        ).json()["leader_address"]
        node = (int(leader.rsplit(":", 1)[1]) - self.port("DOORWARD_VAULT_PORT")) // STEP
        folder = "openbao" if node == 1 else f"openbao-node{node}"
        config = f"-config={self.data_dir / folder / 'config.hcl'}".encode()
        for pid in self.children():
            with contextlib.suppress(OSError):
                if config in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                    return pid, leader
        raise AssertionError(f"no OpenBao process for leader {leader}")


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOORWARD_", "OTEL_"))}
    env.update(
        {
            "DOORWARD_DATA_DIR": str(data_dir),
            "DOORWARD_REPLICAS": "2",
            "DOORWARD_VAULT_NODES": "3",
            "DOORWARD_READY_TIMEOUT": str(max(START_TIMEOUT, 240)),
            "OTEL_TRACES_EXPORTER": "none",
            "DOORWARD_IDENTITY_ARGON2_TIME_COST": "1",
            "DOORWARD_IDENTITY_ARGON2_MEMORY_COST": "8192",
            "DOORWARD_IDENTITY_ARGON2_PARALLELISM": "1",
            # Generous limits: the load below is the point, not the limiter.
            "DOORWARD_SECRETS_REVEAL_RATE_LIMIT": "100000",
            "DOORWARD_SECRETS_GRANT_RATE_LIMIT": "100000",
            "DOORWARD_SECRETS_MAX_OPEN_GRANTS": "1000",
            "DOORWARD_GATEWAY_RATE_LIMIT_PER_SECOND": "0",
        }
    )
    # Base ports whose replica offsets (+100, +200, +300; +1 for OpenBao's cluster port, +50 for
    # a gateway replica's PROXY-protocol port) are free too.
    used: set[int] = set()
    names = ["DOORWARD_GATEWAY_PORT", "DOORWARD_VAULT_PORT", "DOORWARD_TRACES_HTTP_PORT",
             "DOORWARD_SECRETS_METRICS_PORT"]
    names += [f"DOORWARD_{s.upper()}_{k}_PORT" for s in SERVICES for k in ("HTTP", "GRPC")]
    for name in names:
        while True:
            port = free_port()
            family = {port + STEP * i + j for i in range(4) for j in (0, 1, 50)}
            if port + 4 * STEP < 65000 and not family & used and all(_free(p) for p in family):
                used |= family
                env[name] = str(port)
                break
    return env


def _free(port: int) -> bool:
    from doorward_kit.net import port_in_use

    return not port_in_use("127.0.0.1", port)


@pytest.fixture(scope="module")
def replicated() -> Iterator[Replicated]:
    root = Path(tempfile.mkdtemp(prefix="doorward-failover-"))
    data_dir, log_file = root / "data", root / "stack.log"
    # A port checked free can be taken before `up` binds it (under `make test` another worker
    # starts stacks too): `up` then refuses to start, naming the port, and one retry with new
    # ports is enough.
    for attempt in (1, 2):
        env = _env(data_dir)
        proc = start_up(env, log_file)
        try:
            wait_for_gateway(
                proc,
                f"http://127.0.0.1:{env['DOORWARD_GATEWAY_PORT']}/graphql",
                log_file,
                max(START_TIMEOUT, 420),
            )
            break
        except RuntimeError:
            stop_up(proc)
            if attempt == 2 or "already in use" not in log_file.read_text():
                shutil.rmtree(root, ignore_errors=True)
                raise
            shutil.rmtree(data_dir, ignore_errors=True)
            log_file.unlink()
    try:
        # The balancer answers as soon as one gateway does: wait for both.
        for replica in (1, 2):
            wait_for_gateway(
                proc,
                f"http://127.0.0.1:{int(env['DOORWARD_GATEWAY_PORT']) + STEP * replica}/graphql",
                log_file,
                120,
            )
        yield Replicated(env, data_dir, log_file, proc.pid)
    finally:
        stop_up(proc)
        if os.environ.get("DOORWARD_FAILOVER_LOG"):
            shutil.copy(log_file, os.environ["DOORWARD_FAILOVER_LOG"])
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- the load


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    revealed: list[str] = field(default_factory=list)  # grant ids whose value came back
    refused: dict[str, int] = field(default_factory=dict)  # error code -> count
    unclear: list[str] = field(default_factory=list)
    after_revocation: list[str] = field(default_factory=list)
    revocation_checks: int = 0
    successes: dict[str, list[float]] = field(default_factory=dict)  # path -> times
    failures: dict[str, list[float]] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # why calls failed, for the report

    def ok(self, path: str) -> None:
        with self.lock:
            self.successes.setdefault(path, []).append(time.monotonic())

    def failed(self, path: str, why: object = "") -> None:
        with self.lock:
            self.failures.setdefault(path, []).append(time.monotonic())
            key = f"{path}: {str(why)[:120]}"
            self.reasons[key] = self.reasons.get(key, 0) + 1

    def first_success_after(self, path: str, moment: float) -> float | None:
        later = [t for t in self.successes.get(path, []) if t > moment]
        return min(later) - moment if later else None

    def failures_after(self, path: str, moment: float, window: float) -> int:
        return len([t for t in self.failures.get(path, []) if moment < t <= moment + window])


def _gql(url: str, query: str, variables: dict | None, token: str) -> dict:
    response = httpx.post(
        url,
        json={"query": query, "variables": variables or {}},
        headers={"authorization": f"Bearer {token}"},
        timeout=15,
    )
    body = response.json()
    if body.get("errors") or response.status_code != 200:
        raise RuntimeError(
            str(
                [
                    (e.get("extensions", {}).get("code"), str(e.get("message"))[:60])
                    for e in body.get("errors", [])
                ]
            )
        )
    return dict(body["data"])


def _reveal(grant: dict, token: str, tally: Tally, *, expect_refusal: bool = False) -> None:
    try:
        response = httpx.post(
            grant["revealUrl"],
            json={"revealToken": grant["revealToken"]},
            headers={"authorization": f"Bearer {token}"},
            timeout=15,
        )
    except httpx.HTTPError:
        # The connection died with the replica: the value never reached the phone.
        with tally.lock:
            tally.refused["connection"] = tally.refused.get("connection", 0) + 1
        tally.failed("reveal")
        return
    with tally.lock:
        if response.status_code == 200:
            if expect_refusal:
                tally.after_revocation.append(grant["id"])
            if response.json().get("value") != DOOR_CODE:
                tally.unclear.append(f"200 without the value for {grant['id']}")
            tally.revealed.append(grant["id"])
        else:
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = None
            if code:
                tally.refused[code] = tally.refused.get(code, 0) + 1
            else:
                tally.unclear.append(f"{response.status_code}: {response.text[:80]}")
    (tally.ok if response.status_code == 200 else tally.failed)("reveal")


# --------------------------------------------------------------------------- the test


@dataclass
class Scene:
    """An organisation on the replicated stack: a dispatcher, three technicians with two
    dispatched jobs each (inside their window, one door code attached), an auditor."""

    url: str
    world: World
    dispatcher: Actor
    techs: list[Actor]
    auditor: Actor
    secret: str
    jobs: dict[str, str]  # job -> assignee user id


def build_scene(stack: Replicated) -> Scene:
    url = stack.gateway_url
    gql = GraphQLClient(url)
    org_id, admin = bootstrap_org(stack.env, "Failover", "admin@failover.example", PASSWORD)
    world = World(gql=gql, org_id=org_id, admin=admin)
    world.login(admin)
    london = world.create_region("London")
    dispatcher = world.create_person("dispatcher", "DISPATCHER", ["London"])
    techs = [world.create_person(f"tech{i}", "TECHNICIAN", ["London"]) for i in range(3)]
    auditor = world.create_person("auditor", "AUDITOR", ["London"])
    d = dispatcher.token
    contact = {"phone": "+44 7700 900001", "email": "ops@failover-customer.com"}
    customer = _gql(
        url, CREATE_CUSTOMER, {"i": {"name": "Failover Ltd", "regionId": london, **contact}}, d
    )["createCustomer"]["id"]
    site = _gql(
        url,
        CREATE_SITE,
        {"i": {"customerId": customer, "address": "1 Raft Road", "regionId": london}},
        d,
    )["createSite"]["id"]
    upload = _gql(url, PREPARE_UPLOAD, {"s": site, "l": "Front door"}, d)["prepareSecretUpload"]
    put = httpx.put(
        upload["uploadUrl"],
        json={"uploadToken": upload["uploadToken"], "value": DOOR_CODE},
        headers={"authorization": f"Bearer {d}"},
        timeout=15,
    )
    assert put.status_code == 201, put.text
    secret = upload["secretRef"]["id"]
    start = datetime.now(UTC) - timedelta(minutes=30)
    window = {
        "scheduledStart": start.isoformat(),
        "scheduledEnd": (start + timedelta(hours=4)).isoformat(),
    }
    jobs: dict[str, str] = {}
    for i, tech in enumerate(techs * 2):
        job = _gql(url, CREATE_JOB, {"i": {"siteId": site, "title": f"Job {i}", **window}}, d)[
            "createWorkOrder"
        ]["id"]
        _gql(url, ASSIGN, {"id": job, "a": tech.user_id}, d)
        _gql(url, ATTACH, {"w": job, "s": secret}, d)
        _gql(url, DISPATCH, {"id": job}, d)
        jobs[job] = tech.user_id
    return Scene(url, world, dispatcher, techs, auditor, secret, jobs)


@pytest.mark.timeout(1800)  # the replicated stack alone takes minutes to start on 2 cores
def test_failover_keeps_every_promise(replicated: Replicated) -> None:
    stack = replicated
    scene = build_scene(stack)
    url, world, techs, auditor, secret = (
        scene.url,
        scene.world,
        scene.techs,
        scene.auditor,
        scene.secret,
    )
    d = scene.dispatcher.token
    jobs = dict(scene.jobs)
    swap_job = next(iter(jobs))  # the one the dispatcher keeps reassigning
    by_id = {t.user_id: t for t in techs}
    tokens = {t.user_id: t.token for t in techs}

    tally = Tally()
    stop = threading.Event()
    jobs_lock = threading.Lock()

    def technician(tech_id: str) -> None:
        while not stop.is_set():
            with jobs_lock:
                mine = [j for j, a in jobs.items() if a == tech_id and j != swap_job]
            for job in mine:
                try:
                    grant = _gql(url, REQUEST, {"w": job, "s": secret}, tokens[tech_id])
                    tally.ok("grant")
                except (RuntimeError, httpx.HTTPError, ValueError) as exc:
                    tally.failed("grant", exc)
                    continue
                _reveal(grant["requestSecretAccess"], tokens[tech_id], tally)

    def dispatcher_loop() -> None:
        """Grant to the current assignee, reassign, then the old grant must be refused."""
        while not stop.is_set():
            with jobs_lock:
                current = jobs[swap_job]
            other = next(t for t in tokens if t != current)
            try:
                grant = _gql(url, REQUEST, {"w": swap_job, "s": secret}, tokens[current])
                _gql(url, ASSIGN, {"id": swap_job, "a": other}, d)
                tally.ok("assign")
            except (RuntimeError, httpx.HTTPError, ValueError) as exc:
                tally.failed("assign", exc)
                time.sleep(0.1)
                continue
            with jobs_lock:
                jobs[swap_job] = other
            with tally.lock:
                tally.revocation_checks += 1
            _reveal(grant["requestSecretAccess"], tokens[current], tally, expect_refusal=True)

    def board() -> None:
        while not stop.is_set():
            try:
                _gql(url, BOARD, None, tokens[techs[0].user_id])
                tally.ok("board")
            except (RuntimeError, httpx.HTTPError, ValueError) as exc:
                tally.failed("board", exc)

    threads = [threading.Thread(target=technician, args=(t.user_id,)) for t in techs]
    threads += [threading.Thread(target=dispatcher_loop), threading.Thread(target=board)]
    for thread in threads:
        thread.start()
    figures: dict[str, object] = {}
    try:
        time.sleep(LOAD_SECONDS / 4)
        leader_pid, leader = stack.vault_leader_pid()
        os.kill(leader_pid, signal.SIGKILL)
        vault_killed = time.monotonic()
        figures["vault_leader"] = leader
        time.sleep(LOAD_SECONDS / 4)
        victims = {p: stack.replica_pid(p, 1) for p in ("gateway", *SERVICES)}
        for pid in victims.values():
            os.kill(pid, signal.SIGKILL)
        replicas_killed = time.monotonic()
        time.sleep(LOAD_SECONDS / 2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    figures.update(
        {
            "vault_leader_loss_to_next_reveal_s": tally.first_success_after("reveal", vault_killed),
            "replica_loss_to_next_reveal_s": tally.first_success_after("reveal", replicas_killed),
            "replica_loss_to_next_board_s": tally.first_success_after("board", replicas_killed),
            "replica_loss_to_next_assign_s": tally.first_success_after("assign", replicas_killed),
            "reveal_failures_5s_after_vault_loss": tally.failures_after("reveal", vault_killed, 5),
            "board_failures_5s_after_replica_loss": tally.failures_after(
                "board", replicas_killed, 5
            ),
            "reveals_ok": len(tally.revealed),
            "refusals": tally.refused,
            "revocation_checks": tally.revocation_checks,
            "board_ok": len(tally.successes.get("board", [])),
            "failure_reasons": tally.reasons,
        }
    )
    print("failover figures:", json.dumps(figures, default=str))
    if os.environ.get("DOORWARD_FAILOVER_REPORT"):
        Path(os.environ["DOORWARD_FAILOVER_REPORT"]).write_text(json.dumps(figures, default=str))

    # Every reveal succeeded once or failed with a clear error.
    assert not tally.unclear, tally.unclear
    assert len(tally.revealed) == len(set(tally.revealed)), "a grant was revealed twice"
    assert tally.revealed, "no reveal succeeded at all"
    # The service recovered from both losses.
    assert figures["vault_leader_loss_to_next_reveal_s"] is not None
    assert figures["replica_loss_to_next_reveal_s"] is not None
    assert figures["replica_loss_to_next_board_s"] is not None
    # No grant outlived its revocation.
    assert tally.revocation_checks > 0
    assert not tally.after_revocation, tally.after_revocation

    # No audit event lost or duplicated: the chain verifies, no gap, one event per value.
    auditor_token = auditor.token
    report = _gql(url, INTEGRITY, None, auditor_token)["auditIntegrity"]
    assert report["ok"], report
    assert report["firstBrokenSeq"] is None
    assert report["checkedEvents"] == report["headSeq"]
    allowed: list[str] = []
    after = None
    while True:
        page = _gql(url, EVENTS, {"a": "secret.reveal", "after": after}, auditor_token)
        edges = page["auditEvents"]["edges"]
        allowed += [e["node"]["id"] for e in edges if e["node"]["outcome"] == "ALLOWED"]
        if not page["auditEvents"]["pageInfo"]["hasNextPage"]:
            break
        after = page["auditEvents"]["pageInfo"]["endCursor"]
    assert len(allowed) == len(set(allowed))
    # Every value returned has its event; a reveal whose answer was lost with a dying replica
    # may have its event without the phone having seen the value, never the other way round.
    assert len(allowed) >= len(tally.revealed)

    # A deactivated user is refused by every surviving replica, at once.
    victim = techs[1]
    _gql(url, DEACTIVATE, {"id": victim.user_id, "r": "failover test"}, world.admin.token)
    gateway2 = f"http://127.0.0.1:{stack.port('DOORWARD_GATEWAY_PORT', 2)}/graphql"
    for gateway in (url, gateway2):
        response = httpx.post(
            gateway,
            json={"query": BOARD},
            headers={"authorization": f"Bearer {victim.token}"},
            timeout=15,
        )
        codes = [e.get("extensions", {}).get("code") for e in response.json().get("errors", [])]
        assert "UNAUTHENTICATED" in codes, (gateway, response.text)
    secrets2 = f"http://127.0.0.1:{stack.port('DOORWARD_SECRETS_HTTP_PORT', 2)}"
    for base in (f"http://127.0.0.1:{stack.port('DOORWARD_SECRETS_HTTP_PORT')}", secrets2):
        response = httpx.post(
            f"{base}/v1/reveals/{uuid.uuid4()}",
            json={"revealToken": "x" * 40},
            headers={"authorization": f"Bearer {victim.token}"},
            timeout=15,
        )
        assert response.status_code == 401, (base, response.text)
    # The honest user next to them still works.
    assert _gql(url, BOARD, None, by_id[techs[0].user_id].token) is not None
