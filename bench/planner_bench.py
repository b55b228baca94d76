"""Planning time, cold and cached, for the Doorward supergraph and a 20-subgraph synthetic one,
beside @apollo/query-planner on the same supergraphs (when the compat test has installed it in
.cache/node-gateway).

    .venv/bin/python bench/planner_bench.py [--rounds 20]

cold: a new planner (query graph built, no plan cached) plans the operation; cached: the same
text again (a cache lookup, what every repeated request costs). Apollo's gateway caches plans
too; its cold figure is @apollo/query-planner's buildQueryPlan on a new QueryPlanner.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.composition import compose  # noqa: E402
from gateway.planner import QueryPlanner  # noqa: E402
from gateway.supergraph import Supergraph  # noqa: E402

NODE = ROOT / ".cache" / "node-gateway"
LINK = (
    'extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", '
    'import: ["@key", "@shareable", "@requires", "@external"])\n'
)


def doorward_supergraph() -> str:
    from services.audit.api.graphql import build_schema as audit
    from services.identity.api.graphql import build_schema as identity
    from services.workorders.api.graphql import build_schema as workorders

    sdls = {}
    for name, build in (("identity", identity), ("workorders", workorders), ("audit", audit)):
        sdl = build().execute_sync("{ _service { sdl } }").data["_service"]["sdl"]
        sdls[name] = (f"http://{name}.test/graphql", sdl)
    return compose(sdls)


DOORWARD_QUERIES = [
    "{ me { id displayName } }",
    "query MyDay { myJobs { id number title status site { id address } "
    "assignee { id displayName } } me { id displayName accessHistory { action outcome "
    "occurredAt } } }",
]


def synthetic_supergraph(n: int = 20) -> tuple[str, list[str]]:
    """A chain of n subgraphs: s_i owns T_i and extends T_{i-1} with a link to T_i, plus a
    shared `Node` entity every subgraph adds one field to."""
    sdls = {}
    for i in range(n):
        parts = [
            f'type T{i} @key(fields: "id") {{ id: ID! name{i}: String node: Node }}',
            f'type Node @key(fields: "id") {{ id: ID! f{i}: Int }}',
        ]
        if i == 0:
            parts.append("type Query { root: [T0] }")
        else:
            parts.append(f'type T{i - 1} @key(fields: "id") {{ id: ID! next: T{i} }}')
            parts.append(f"type Query {{ q{i}: Int }}")
        sdls[f"s{i}"] = (f"http://s{i}.test/graphql", LINK + "\n".join(parts))
    deep = "{ root { " + " ".join(f"next {{ name{i} " for i in range(1, 8)) + "}" * 7 + " } }"
    wide = "{ root { name0 node { " + " ".join(f"f{i}" for i in range(n)) + " } } }"
    chain = (
        "{ root { "
        + " ".join(f"next {{ node {{ f{i} }} " for i in range(1, n))
        + "}" * (n - 1)
        + " } }"
    )
    return compose(sdls), [deep, wide, chain]


CONTEXT_LINK = (
    'extend schema @link(url: "https://specs.apollo.dev/federation/v2.8", '
    'import: ["@key", "@shareable", "@external", "@context", "@fromContext"])\n'
)


def context_supergraph() -> tuple[str, list[str]]:
    """Apollo's docs example of @context/@fromContext: a user's currency, resolved by another
    subgraph, read by the user's transactions; nested folders for the nearest context."""
    users = CONTEXT_LINK + """
type Query { me: User! folders: [Folder!]! }
type User @key(fields: "id") @context(name: "userContext") {
  id: ID! name: String! userCurrency: Currency! @external transactions: [Transaction!]!
}
type Currency @shareable { id: ID! isoCode: String! }
type Transaction @key(fields: "id") {
  id: ID! amount: Int!
  amountInUserCurrency(
    currencyCode: String @fromContext(field: "$userContext { userCurrency { isoCode } }")
  ): Int!
}
type Folder @key(fields: "id") @context(name: "folder") {
  id: ID! name: String! folders: [Folder!]! files: [File!]!
}
type File @key(fields: "id") {
  id: ID! path(dir: String @fromContext(field: "$folder { name }")): String
}
"""
    accounts = CONTEXT_LINK + """
type User @key(fields: "id") { id: ID! userCurrency: Currency! }
type Currency @shareable { id: ID! isoCode: String! }
"""
    sdl = compose({"users": ("http://users.test/graphql", users),
                   "accounts": ("http://accounts.test/graphql", accounts)})
    return sdl, [
        "{ me { name transactions { id amountInUserCurrency } } }",
        "{ folders { files { path } folders { name files { id path } } } }",
    ]


def ours(sdl: str, queries: list[str], rounds: int) -> tuple[float, list[float], list[float]]:
    t = time.perf_counter()
    sg = Supergraph.from_sdl(sdl)
    QueryPlanner(sg).get(queries[0], None)
    build = (time.perf_counter() - t) * 1000
    cold = [0.0] * len(queries)
    cached = [0.0] * len(queries)
    for _ in range(rounds):
        sg = Supergraph.from_sdl(sdl)  # a new query graph and search memo each round
        planner = QueryPlanner(sg)
        for i, q in enumerate(queries):
            t = time.perf_counter()
            planner.get(q, None)
            cold[i] += (time.perf_counter() - t) * 1000 / rounds
            t = time.perf_counter()
            for _ in range(100):
                planner.get(q, None)
            cached[i] += (time.perf_counter() - t) * 1000 / 100 / rounds
    return build, cold, cached


def apollo(sdl: str, queries: list[str], rounds: int) -> dict | None:
    if (
        shutil.which("node") is None
        or not (NODE / "node_modules" / "@apollo" / "query-planner").exists()
    ):
        return None
    shutil.copyfile(ROOT / "bench" / "apollo_planner.mjs", NODE / "apollo_planner.mjs")
    proc = subprocess.run(
        ["node", "apollo_planner.mjs"],
        cwd=NODE,
        capture_output=True,
        text=True,
        timeout=600,
        input=json.dumps({"supergraph": sdl, "queries": queries, "rounds": rounds}),
    )
    if proc.returncode != 0:
        print(proc.stderr[-1000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    synth, synth_queries = synthetic_supergraph()
    ctx, ctx_queries = context_supergraph()
    for label, sdl, queries in (
        ("doorward (3 subgraphs)", doorward_supergraph(), DOORWARD_QUERIES),
        ("synthetic (20 subgraphs)", synth, synth_queries),
        ("@context (2 subgraphs)", ctx, ctx_queries),
    ):
        build, cold, cached = ours(sdl, queries, args.rounds)
        theirs = apollo(sdl, queries, args.rounds)
        print(
            f"{label}: supergraph + query graph + first plan {build:.1f} ms"
            + (
                f"; Apollo Supergraph.build + QueryPlanner {theirs['build_ms']:.1f} ms"
                if theirs
                else ""
            )
        )
        for i, q in enumerate(queries):
            line = f"  q{i}: ours cold {cold[i]:.2f} ms, cached {cached[i] * 1000:.1f} us"
            if theirs:
                line += f"; @apollo/query-planner cold {theirs['cold_ms'][i]:.2f} ms"
            print(line + f"   {' '.join(q.split())[:70]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
