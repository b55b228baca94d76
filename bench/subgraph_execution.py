"""The pure CPU of GraphQL execution for the board's two subgraph operations (issue 11).

    .venv/bin/python bench/subgraph_execution.py [--runs 300] [--batch 20]
        [--profile audit|workorders] [--stock] [--per-row] [--fast-json]

Runs audit's `_entities { auditTrail { action outcome } }` for 20 work orders x 10 events and
workorders' `workOrders` board selection against the real schemas, with the services faked at
the service layer (tests/fixtures/subgraph_fakes.py): no database, no HTTP, no gateway. What it
prints is strawberry + graphql-core + the resolvers, per operation, in CPU milliseconds
(process time, median of batches), beside the same with graphql-core's own execution context
(strawberry's stock one, without doorward_kit/execution.py's short path), batches interleaved.
`--profile NAME` prints cProfile's top functions for one; `--stock` profiles the stock context.
`--fast-json` prints only the kit's context's fastest batch per operation as one JSON line,
with the heap settled as a service's (what bench/board_bench.py reads).
`--per-row` adds, for workorders, the fast context with every row loading its own `site`,
`address` and `secretRefs` (the page's one-batch-per-level prefetch off, as before it existed).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures import subgraph_fakes as fakes  # noqa: E402


def _operations() -> dict[str, tuple[Any, str, Any, Any]]:
    from services.audit.api.graphql import build_schema as audit_schema
    from services.workorders.api.graphql import build_schema as workorders_schema

    return {
        "audit": (
            audit_schema(),
            fakes.AUDIT_BOARD,
            fakes.audit_variables,
            fakes.FakeAuditRuntime,
        ),
        "workorders": (
            workorders_schema(serving=True),
            fakes.WORKORDERS_BOARD,
            lambda: {"region": fakes.REGION},
            fakes.FakeWorkOrdersRuntime,
        ),
    }


async def _no_prefetch(*args: Any) -> None:
    return None


async def _run(
    schema: Any, query: str, variables: Any, runtime: Any, n: int, per_row: bool = False
) -> None:
    from services.workorders.api import graphql as workorders_api

    prefetch = workorders_api._prefetch
    if per_row:
        workorders_api._prefetch = _no_prefetch  # type: ignore[assignment]
    try:
        await _execute(schema, query, variables, runtime, n)
    finally:
        workorders_api._prefetch = prefetch


async def _execute(schema: Any, query: str, variables: Any, runtime: Any, n: int) -> None:
    for _ in range(n):
        result = await schema.execute(
            query, variable_values=variables(), context_value=fakes.context(runtime)
        )
        if result.errors:
            raise SystemExit(f"unexpected errors: {result.errors}")


async def fast_execution_ms(
    runs: int = 200,
    batch: int = 20,
    operations: dict[str, tuple[Any, str, Any, Any]] | None = None,
) -> dict[str, float]:
    """CPU ms per operation of each board operation with the subgraphs' own execution context
    (what `main` prints as "fast"), the fastest batch's: board_bench's least cost of GraphQL
    execution (a lower bound, so not the median)."""
    from doorward_kit.execution import FastExecutionContext

    out: dict[str, float] = {}
    for name, (schema, query, variables, make_runtime) in (operations or _operations()).items():
        schema.execution_context_class = FastExecutionContext
        runtime = make_runtime()
        await _run(schema, query, variables, runtime, 20)  # warm: caches, imports
        times = []
        for _ in range(max(1, runs // batch)):
            start = time.process_time()
            await _run(schema, query, variables, runtime, batch)
            times.append((time.process_time() - start) * 1000 / batch)
        out[name] = min(times)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--profile", choices=("audit", "workorders"))
    parser.add_argument("--stock", action="store_true")
    parser.add_argument("--per-row", action="store_true")
    parser.add_argument(
        "--fast-json",
        action="store_true",
        help="only the subgraphs' own context, heap settled as a service's, as one JSON line",
    )
    args = parser.parse_args()
    if args.fast_json:
        from doorward_kit.gc_tuning import settle_heap

        operations = _operations()  # built first: what a service has built when it settles
        settle_heap()
        print(json.dumps(await fast_execution_ms(args.runs, args.batch, operations)))
        return
    from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

    from doorward_kit.execution import FastExecutionContext

    for name, (schema, query, variables, make_runtime) in _operations().items():
        # (context class, rows load their own fields?)
        contexts = {
            "fast": (FastExecutionContext, False),
            "stock": (StrawberryGraphQLCoreExecutionContext, False),
        }
        if args.per_row and name == "workorders":
            contexts["fast per-row"] = (FastExecutionContext, True)
        runtime = make_runtime()
        for context_class, per_row in contexts.values():
            schema.execution_context_class = context_class
            await _run(schema, query, variables, runtime, 20, per_row)  # warm: caches, imports
        if args.profile == name:
            schema.execution_context_class = contexts["stock" if args.stock else "fast"][0]
            profile = cProfile.Profile()
            profile.enable()
            await _run(schema, query, variables, runtime, args.runs)
            profile.disable()
            stats = pstats.Stats(profile).sort_stats("tottime")
            stats.print_stats(30)
            stats.sort_stats("cumulative").print_stats(40)
        per_op: dict[str, list[float]] = {kind: [] for kind in contexts}
        for _ in range(max(1, args.runs // args.batch)):
            for kind, (context_class, per_row) in contexts.items():
                schema.execution_context_class = context_class
                start = time.process_time()
                await _run(schema, query, variables, runtime, args.batch, per_row)
                per_op[kind].append((time.process_time() - start) * 1000 / args.batch)
        print(
            f"{name:10s} CPU per operation ({args.runs} runs each, interleaved): "
            + ", ".join(
                f"{kind} median {statistics.median(v):.2f} ms (min {min(v):.2f})"
                for kind, v in per_op.items()
            )
        )


if __name__ == "__main__":
    asyncio.run(main())
