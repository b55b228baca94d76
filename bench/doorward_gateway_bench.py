"""The technician's `myJobs` query on the real stack: this gateway vs @apollo/gateway vs calling
the subgraphs directly, side by side in one run.

    .venv/bin/python bench/doorward_gateway_bench.py [--requests 2000] [--concurrency 16]
                                                     [--sequential 500] [--jobs 20] [--address]

What it does, every process on free loopback ports and stopped by its PID at the end (also on
failure or Ctrl-C):
  1. embedded PostgreSQL + a dev-mode OpenBao in a fresh /tmp folder;
  2. `doorward up` in external mode against them (the real identity, workorders, audit, secrets
     and our gateway, rate limit off);
  3. `doorward bootstrap`, then through the gateway: a region, a dispatcher, a technician, a few
     customers and sites, and --jobs work orders for today assigned to the technician;
  4. `doorward gateway compose` -> supergraph file; @apollo/gateway (tests/compat's pinned
     packages, `npm ci` into .cache/node-gateway) serves that same supergraph and forwards the
     Authorization header to the subgraphs (RemoteGraphQLDataSource.willSendRequest);
  5. the technician's query (workorders + identity + audit), with the same access token, through
     our gateway, @apollo/gateway and straight to the subgraphs: at --concurrency (throughput)
     and at concurrency 1 (latency; gateway overhead p50 = gateway p50 - direct p50).

"Direct" runs the same subgraph requests the gateway's query plan sends, with the plan's
parallelism (stage 1: workorders `myJobs` || identity `me`; stage 2: identity `_entities` for
the assignees || audit `_entities` for accessHistory), representations built from stage 1's
answers. "direct (sum)" sends the same four requests one after another.

@apollo/gateway does not deduplicate entity representations (apollographql/federation#180):
the 20 jobs' assignee (the technician, 20 times) become 20 representations to identity, ours
sends one. --assignee-ids drops `displayName` from the assignee so both gateways send exactly
the same subgraph requests (the pure gateway-vs-gateway comparison).

The machine may be shared: the paths run in interleaved blocks (--blocks), so a busy moment
costs all alike, and the CPU each process spent per request is printed next to the latencies.

--address adds `site { address }`: personal data whose every read is an audit event, so the
technician's accessHistory (newest 1000) grows with every request and the answer changes size
during the run; off by default so all paths answer the same bytes.

Without Node.js the benchmark says so and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = ROOT / ".cache" / "node-gateway"
COMPAT = ROOT / "tests" / "compat"

JOB_FIELDS = "id number title status priority scheduledStart scheduledEnd"


def technician_query(address: bool, assignee_names: bool = True) -> str:
    site = "site { id address }" if address else "site { id }"
    assignee = "assignee { id displayName }" if assignee_names else "assignee { id }"
    return (
        "query MyDay { myJobs { " + JOB_FIELDS + " " + site + " " + assignee + " } "
        "me { id displayName accessHistory { action outcome occurredAt } } }"
    )


def direct_queries(address: bool) -> dict[str, str]:
    """The subgraph requests equivalent to technician_query (what a query plan sends)."""
    site = "site { id address }" if address else "site { id }"
    return {
        "workorders": "{ myJobs { " + JOB_FIELDS + " " + site + " assignee { __typename id } } }",
        "identity": "{ me { __typename id displayName } }",
        "identity_entities": "query($r: [_Any!]!) { _entities(representations: $r) "
        "{ ... on User { displayName } } }",
        "audit_entities": "query($r: [_Any!]!) { _entities(representations: $r) "
        "{ ... on User { accessHistory { action outcome occurredAt } } } }",
    }


# ---- processes -----------------------------------------------------------------------------


def ensure_apollo() -> Path | None:
    """@apollo/gateway from tests/compat's lock file, in .cache/node-gateway; None if no Node."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    changed = False
    for name in ("package.json", "package-lock.json", "apollo_gateway.mjs"):
        src, dst = COMPAT / name, CACHE / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)
            changed = changed or name != "apollo_gateway.mjs"
    if changed or not (CACHE / "node_modules" / "@apollo" / "gateway").exists():
        print("installing @apollo/gateway (npm ci) ...", flush=True)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CACHE,
                       check=True, timeout=600)
    return CACHE / "apollo_gateway.mjs"


def stop_popen(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[Any], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            r = httpx.post(url, json={"query": "{ __typename }"},
                           headers={"apollo-require-preflight": "1"}, timeout=2)
            if r.status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up at {url}")


def processes_of(parent_pid: int, marker: str) -> list[int]:
    """PIDs of the descendants whose command line contains `marker` (for CPU figures)."""
    import psutil

    found = []
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(parent_pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if marker in " ".join(child.cmdline()):
                    found.append(child.pid)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (and their reaped children), /proc."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


# ---- the organisation ------------------------------------------------------------------------


def build_org(stack_env: dict[str, str], gateway_url: str, jobs: int) -> tuple[Any, Any]:
    """Bootstrap, then through the gateway: London, a dispatcher, a technician and `jobs` work
    orders for today (UTC, the org's default zone) on a few sites, assigned to the technician."""
    from tests.e2e.world import PASSWORD, GraphQLClient, World, bootstrap_org

    gql = GraphQLClient(gateway_url)
    org_id, admin = bootstrap_org(stack_env, "Bench", "admin@bench-maintenance.com", PASSWORD)
    world = World(gql=gql, org_id=org_id, admin=admin)
    world.login(admin)
    london = world.create_region("London")
    dispatcher = world.create_person("dispatcher", "DISPATCHER", ["London"])
    tech = world.create_person("tom", "TECHNICIAN", ["London"])
    d = dispatcher.token
    sites = []
    for i in range(5):
        customer = gql.data(
            "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }",
            {"i": {"name": f"Customer {i}", "phone": f"+44 20 7946 00{i:02d}",
                   "email": f"customer{i}@example.com", "regionId": london}}, d,
        )["createCustomer"]["id"]
        sites.append(gql.data(
            "mutation($i: CreateSiteInput!) { createSite(input: $i) { id } }",
            {"i": {"customerId": customer, "address": f"{i + 1} High Street, London",
                   "regionId": london}}, d,
        )["createSite"]["id"])
    # Between now and midnight UTC (a new order may not end in the past); run it before 23:00.
    first = datetime.now(UTC) + timedelta(minutes=5)
    midnight = first.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    step = (midnight - first - timedelta(minutes=5)) / max(jobs, 1)
    if step < timedelta(minutes=2):
        raise RuntimeError("too close to midnight UTC for a day of jobs: run it after 00:00")
    for n in range(jobs):
        start = first + n * step
        job = gql.data(
            "mutation($i: CreateWorkOrderInput!) { createWorkOrder(input: $i) { id } }",
            {"i": {"siteId": sites[n % len(sites)], "title": f"Boiler service {n}",
                   "description": "Annual service", "priority": "NORMAL",
                   "scheduledStart": start.isoformat(),
                   "scheduledEnd": (start + step / 2).isoformat()}}, d,
        )["createWorkOrder"]["id"]
        gql.data("mutation($id: ID!, $a: ID!) { assignWorkOrder(id: $id, assigneeId: $a) "
                 "{ id } }", {"id": job, "a": tech.user_id}, d)
    return world, tech


# ---- load --------------------------------------------------------------------------------------

HEADERS = {"content-type": "application/json", "apollo-require-preflight": "1"}
Call = Callable[[httpx.AsyncClient], Awaitable[dict[str, Any]]]


def check(body: dict[str, Any], where: str) -> dict[str, Any]:
    if body.get("errors") or not isinstance(body.get("data"), dict):
        raise RuntimeError(f"bad answer from {where}: {json.dumps(body)[:400]}")
    data: dict[str, Any] = body["data"]
    return data


class Token:
    """The technician's access token, shared by every path; renewed (a new login) before it
    gets near its 10-minute lifetime."""

    def __init__(self, world: Any, tech: Any, max_age: float = 420) -> None:
        self.world, self.tech, self.max_age = world, tech, max_age
        self.headers: dict[str, str] = {}
        self.renew()

    def renew(self) -> None:
        self.world.login(self.tech)
        self.issued = time.monotonic()
        self.headers = {**HEADERS, "authorization": f"Bearer {self.tech.token}"}

    def fresh(self) -> None:
        if time.monotonic() - self.issued > self.max_age:
            self.renew()


def gateway_call(url: str, query: str, token: Token) -> Call:
    payload = json.dumps({"query": query}).encode()

    async def call(client: httpx.AsyncClient) -> dict[str, Any]:
        r = await client.post(url, content=payload, headers=token.headers)
        return check(r.json(), url)

    return call


def direct_call(urls: dict[str, str], address: bool, token: Token, *, parallel: bool,
                assignee_names: bool = True) -> Call:
    q = direct_queries(address)

    async def post(client: httpx.AsyncClient, graph: str, query: str,
                   variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        r = await client.post(urls[graph], content=json.dumps(body).encode(),
                              headers=token.headers)
        return check(r.json(), graph)

    def user_reps(ids: list[str]) -> list[dict[str, str]]:
        return [{"__typename": "User", "id": i} for i in dict.fromkeys(ids)]

    async def call(client: httpx.AsyncClient) -> dict[str, Any]:
        if parallel:
            jobs, me = await asyncio.gather(post(client, "workorders", q["workorders"]),
                                            post(client, "identity", q["identity"]))
        else:
            jobs = await post(client, "workorders", q["workorders"])
            me = await post(client, "identity", q["identity"])
        assignees = user_reps([j["assignee"]["id"] for j in jobs["myJobs"] if j["assignee"]])
        second = [post(client, "audit", q["audit_entities"], {"r": user_reps([me["me"]["id"]])})]
        if assignees and assignee_names:
            second.append(post(client, "identity", q["identity_entities"], {"r": assignees}))
        if parallel:
            answers = await asyncio.gather(*second)
        else:
            answers = [await c for c in second]
        return {"myJobs": jobs["myJobs"], "me": me["me"], "entities": answers}

    return call


async def run_block(call: Call, requests: int, concurrency: int, warmup: int = 0
                    ) -> tuple[list[float], float, list[str]]:
    """`requests` calls by `concurrency` workers: (latencies of the good answers in seconds,
    elapsed seconds, the failures)."""
    latencies: list[float] = []
    failures: list[str] = []
    limits = httpx.Limits(max_connections=concurrency * 4,
                          max_keepalive_connections=concurrency * 4)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        # Open the connections first: a block measures serving, not TCP handshakes. Between
        # blocks a gateway's pooled connections to the subgraphs may have idled out (uvicorn
        # closes them after 5 s; Node's keep-alive agent then fails its next request with
        # "socket hang up"): warm up until a whole round succeeds, unmeasured.
        for _ in range(10):
            answers = await asyncio.gather(
                *(call(client) for _ in range(max(warmup, concurrency))), return_exceptions=True)
            failed = [a for a in answers if isinstance(a, BaseException)]
            if not failed:
                break
        else:
            raise failed[0]
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                try:
                    await call(client)
                except (RuntimeError, httpx.HTTPError, ValueError) as exc:
                    failures.append(str(exc)[:300])
                    continue
                latencies.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed, failures


def summarise(latencies: list[float], elapsed: float) -> dict[str, float]:
    if not latencies:
        return {"rps": 0.0, "p50": float("nan"), "p99": float("nan")}
    latencies = sorted(latencies)
    return {"rps": len(latencies) / elapsed,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000}


# ---- main ----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per throughput row")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--sequential", type=int, default=500,
                    help="requests at concurrency 1 per path (latency and overhead figures)")
    ap.add_argument("--jobs", type=int, default=20, help="the technician's jobs today")
    ap.add_argument("--blocks", type=int, default=10,
                    help="interleaved blocks per concurrency level (fairness on a busy machine)")
    ap.add_argument("--address", action="store_true",
                    help="also read site { address } (audited personal data; see the docstring)")
    ap.add_argument("--assignee-ids", action="store_true",
                    help="assignee { id } only: no identity _entities fetch, so both gateways "
                    "send exactly the same subgraph requests (@apollo/gateway does not "
                    "deduplicate representations: 20 jobs = 20 identical User reps)")
    ap.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    script = ensure_apollo()
    if script is None:
        print("Node.js (node and npm) is missing: cannot compare with @apollo/gateway; skipped.")
        return 0

    from deploy.embedded import EmbeddedOpenBao, EmbeddedPostgres, free_port_pair, provision_vault
    from doorward_kit.net import free_port
    from tests.e2e.conftest import stack_env, start_up, stop_up, wait_for_gateway

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM (e.g. a CI timeout) and SIGINT (even when started in the background, which
    # ignores it) unwind through the finally below.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    root = Path(tempfile.mkdtemp(prefix="doorward-bench-"))
    postgres = EmbeddedPostgres(root / "pgdata")
    bao = EmbeddedOpenBao(root / "bao", free_port_pair(), dev=True)
    up: subprocess.Popen[bytes] | None = None
    node: subprocess.Popen[bytes] | None = None
    try:
        postgres.start()
        bao.start()
        provision_vault(bao.client())
        env = stack_env(root / "data", root / "spans.jsonl", postgres.admin_url(), bao.addr,
                        bao.root_token)
        env["DOORWARD_GATEWAY_RATE_LIMIT_PER_SECOND"] = "0"
        env["DOORWARD_OTEL_FILE"] = ""  # no span file: measure serving, not span export
        # @apollo/gateway cannot sign subgraph requests as Doorward's gateway does, so the
        # subgraphs must take unsigned GraphQL, which only development allows; the gateway is
        # held to production behaviour (no introspection, no GraphiQL) explicitly.
        env["DOORWARD_ENV"] = "development"
        env["DOORWARD_ALLOW_UNSIGNED_GRAPHQL"] = "true"
        env["DOORWARD_GATEWAY_INTROSPECTION"] = "false"
        env["DOORWARD_GATEWAY_GRAPHIQL"] = "false"
        log_file = root / "stack.log"
        up = start_up(env, log_file)
        ours_url = f"http://127.0.0.1:{env['DOORWARD_GATEWAY_PORT']}/graphql"
        wait_for_gateway(up, ours_url, log_file, 180)
        print(f"stack up (logs: {log_file})", flush=True)

        world, tech = build_org(env, ours_url, args.jobs)
        urls = {svc: f"http://127.0.0.1:{env[f'DOORWARD_{svc.upper()}_HTTP_PORT']}/graphql"
                for svc in ("identity", "workorders", "audit")}

        supergraph = root / "supergraph.graphql"
        doorward = str(Path(sys.executable).with_name("doorward"))
        subprocess.run([doorward, "gateway", "compose", "--out", str(supergraph)], env=env,
                       check=True, timeout=120, stdout=subprocess.DEVNULL)
        apollo_port = free_port()
        node = subprocess.Popen(
            ["node", str(script)], cwd=script.parent, stdout=subprocess.DEVNULL,
            env={**os.environ, "PORT": str(apollo_port), "NODE_ENV": "production",
                 "SUPERGRAPH_IN": str(supergraph)},
        )
        apollo_url = f"http://127.0.0.1:{apollo_port}/"
        wait_ready(apollo_url, node, "@apollo/gateway")
        up_pid, node_pid, pg_pid = up.pid, node.pid, postgres.pid or 0
        pids: dict[str, Callable[[], list[int]]] = {
            "gateway (python)": lambda: processes_of(up_pid, "-m gateway"),
            "@apollo/gateway": lambda: [node_pid],
            "subgraphs": lambda: [p for svc in ("identity", "workorders", "audit")
                                  for p in processes_of(up_pid, f"-m services.{svc}")],
            # The postmaster (its reaped children) and its current backends.
            "postgres": lambda: [pg_pid, *processes_of(pg_pid, "postgres")],
        }

        query = technician_query(args.address, assignee_names=not args.assignee_ids)
        if args.hold:  # debugging: keep the stack up, print where everything is
            world.login(tech)
            print(json.dumps({"ours": ours_url, "apollo": apollo_url, "subgraphs": urls,
                              "token": tech.token, "query": query, "root": str(root)}),
                  flush=True)
            while True:  # until SIGINT or SIGTERM (the finally below stops everything)
                time.sleep(1)
            return 0
        measure(args, world, tech, query, urls, ours_url, apollo_url,
                pids, supergraph.read_text())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if node is not None:
            stop_popen(node)
        if up is not None:
            stop_up(up)
        bao.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


def show_plan(query: str, supergraph_sdl: str) -> None:
    """Our planner's subgraph requests for the query: what "direct (plan)" reproduces."""
    from gateway.composition import Supergraph
    from gateway.planner import QueryPlanner

    plan = QueryPlanner(Supergraph.from_sdl(supergraph_sdl)).get(query, None).plan
    print("our query plan (stage: subgraph <- request):")
    for group in plan.describe():
        for n, level in enumerate(group, 1):
            for graph, q in level:
                print(f"  {n}: {graph:<10} <- {' '.join(q.split())[:150]}")


def breakdown(urls: dict[str, str], address: bool, token: Token, n: int) -> None:
    """p50 of each direct subgraph request alone at concurrency 1: where the time goes."""
    q = direct_queries(address)
    headers = token.headers

    async def run() -> dict[str, float]:
        out: dict[str, float] = {}
        async with httpx.AsyncClient(timeout=30) as client:
            me = check((await client.post(urls["identity"], json={"query": q["identity"]},
                                          headers=headers)).json(), "identity")["me"]["id"]
            reps = [{"__typename": "User", "id": me}]
            calls = {
                "workorders myJobs": ("workorders", q["workorders"], None),
                "identity me": ("identity", q["identity"], None),
                "identity _entities": ("identity", q["identity_entities"], {"r": reps}),
                "audit _entities": ("audit", q["audit_entities"], {"r": reps}),
            }
            for name, (graph, query, variables) in calls.items():
                body = json.dumps({"query": query, "variables": variables or {}}).encode()
                times = []
                for _ in range(n + 5):
                    t = time.perf_counter()
                    r = await client.post(urls[graph], content=body, headers=headers)
                    check(r.json(), graph)
                    times.append(time.perf_counter() - t)
                out[name] = statistics.median(times[5:]) * 1000
        return out

    figures = asyncio.run(run())
    print("direct subgraph requests alone, p50 at c=1: " + ", ".join(
        f"{k} {v:.2f} ms" for k, v in figures.items()) + "\n", flush=True)


def measure(args: argparse.Namespace, world: Any, tech: Any, query: str, urls: dict[str, str],
            ours_url: str, apollo_url: str, pids: dict[str, Callable[[], list[int]]],
            supergraph_sdl: str) -> None:
    token = Token(world, tech)
    paths: dict[str, Call] = {
        "gateway (python)": gateway_call(ours_url, query, token),
        "@apollo/gateway": gateway_call(apollo_url, query, token),
        "direct (plan)": direct_call(urls, args.address, token, parallel=True,
                                     assignee_names=not args.assignee_ids),
        "direct (sum)": direct_call(urls, args.address, token, parallel=False,
                                    assignee_names=not args.assignee_ids),
    }
    # Sanity: the gateways give the same data, and it is the technician's whole day.
    ours = asyncio.run(_once(paths["gateway (python)"]))
    apollo = asyncio.run(_once(paths["@apollo/gateway"]))
    direct = asyncio.run(_once(paths["direct (plan)"]))
    if not args.address:  # (with addresses every read adds to the history in between)
        assert ours == apollo, ("our gateway and @apollo/gateway disagree", ours, apollo)
    jobs = len(ours["myJobs"])
    history = len(ours["me"]["accessHistory"])
    assert jobs == args.jobs and len(direct["myJobs"]) == jobs, (jobs, args.jobs)
    assert history > 0, "the technician's accessHistory is empty: audit not reached"
    print(f"\ntechnician's query ({jobs} jobs, {history} accessHistory events, "
          f"{len(json.dumps({'data': ours}))} bytes of JSON):\n  {query}", flush=True)
    show_plan(query, supergraph_sdl)
    breakdown(urls, args.address, token, max(args.sequential // 4, 20))

    # The machine may be shared: every path runs in short interleaved blocks (order rotated
    # each block), so a busy moment costs all paths alike; figures pool all blocks.
    names = list(paths)
    lat: dict[tuple[str, int], list[float]] = {}
    spent: dict[tuple[str, int], float] = {}
    errors: dict[tuple[str, int], list[str]] = {}
    cpu: dict[tuple[str, int], dict[str, float]] = {}
    for conc, total in ((args.concurrency, args.requests), (1, args.sequential)):
        per_block = max(total // args.blocks, 1)
        for b in range(args.blocks):
            for name in names[b % len(names):] + names[:b % len(names)]:
                token.fresh()
                procs = {k: find() for k, find in pids.items()}
                before = {k: cpu_seconds(v) for k, v in procs.items()}
                got, elapsed, failed = asyncio.run(run_block(paths[name], per_block, conc,
                                                     warmup=10 if b == 0 else 0))
                used = {k: cpu_seconds(v) - before[k] for k, v in procs.items()}
                lat.setdefault((name, conc), []).extend(got)
                errors.setdefault((name, conc), []).extend(failed)
                spent[(name, conc)] = spent.get((name, conc), 0.0) + elapsed
                acc = cpu.setdefault((name, conc), {k: 0.0 for k in pids})
                for k, v in used.items():
                    acc[k] += v
            print(f"  c={conc}: block {b + 1}/{args.blocks} done", flush=True)

    results = {key: summarise(lat[key], spent[key]) for key in lat}
    print(f"\n{args.requests} requests at concurrency {args.concurrency} and {args.sequential} at "
          f"concurrency 1 per path, in {args.blocks} interleaved blocks each\n")
    print(f"{'path':<18} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  "
          f"CPU ms/request: {'gateway':>7} {'subgraphs':>9} {'postgres':>8}")
    for (name, conc), r in results.items():
        n = len(lat[(name, conc)]) + len(errors[(name, conc)])
        used = cpu[(name, conc)]
        gw = used.get(name)
        gw_text = f"{gw * 1000 / n:>7.2f}" if gw is not None else f"{'-':>7}"
        print(f"{name:<18} {conc:>4} {r['rps']:>8.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
              f"{len(errors[(name, conc)]):>6}  "
              f"{'':>15}{gw_text} {used['subgraphs'] * 1000 / n:>9.2f} "
              f"{used['postgres'] * 1000 / n:>8.2f}")
    for key, failed in errors.items():
        if failed:
            print(f"{key[0]} c={key[1]}: {len(failed)} failed, e.g. {failed[0]}")
    c = args.concurrency
    ours_c, apollo_c = results[("gateway (python)", c)], results[("@apollo/gateway", c)]
    ours_1, apollo_1 = results[("gateway (python)", 1)], results[("@apollo/gateway", 1)]
    plan_1, sum_1 = results[("direct (plan)", 1)], results[("direct (sum)", 1)]
    print(f"\nthroughput ratio python/apollo at c={c}: {ours_c['rps'] / apollo_c['rps']:.2f} "
          f"(target >= 1.00); p50 ratio {ours_c['p50'] / apollo_c['p50']:.2f}, "
          f"p99 ratio {ours_c['p99'] / apollo_c['p99']:.2f}")
    print(f"python vs direct (plan) at c={c}: throughput "
          f"{ours_c['rps'] / results[('direct (plan)', c)]['rps']:.2f}x")
    print(f"latency ratio python/apollo at c=1: p50 {ours_1['p50'] / apollo_1['p50']:.2f}, "
          f"p99 {ours_1['p99'] / apollo_1['p99']:.2f}")
    print(f"gateway overhead p50 at c=1: python - direct (plan) = "
          f"{ours_1['p50'] - plan_1['p50']:.2f} ms (target < 2 ms); python - direct (sum) = "
          f"{ours_1['p50'] - sum_1['p50']:.2f} ms; @apollo/gateway - direct (plan) = "
          f"{apollo_1['p50'] - plan_1['p50']:.2f} ms")


async def _once(call: Call) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await call(client)


if __name__ == "__main__":
    sys.exit(main())
