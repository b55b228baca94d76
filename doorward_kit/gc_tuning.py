"""The cyclic garbage collector of a serving process, set for a server's heap.

perf under the board bench put 10-12 % of the gateway's CPU in CPython's collector
(`gc_collect_main`, `visit_decref`, `visit_reachable`, the `*_traverse` functions). With the
default thresholds (700, 10, 10) a request's few thousand short-lived containers (parsed JSON,
query-plan results, futures) start a young collection every few hundred allocations, and every
tenth of those pulls the middle generation, and now and then the whole heap, into a traversal:
the whole heap is mostly what start-up built (the supergraph and its GraphQL schema, strawberry's
and graphql-core's types, SQLAlchemy's mappers, protobuf descriptors) and lives as long as the
process.

`settle_heap()` runs once a process has built what it serves with: it collects what start-up
left, moves every surviving object to the collector's permanent generation (`gc.freeze()`: never
traversed again; the objects are still freed by reference counting if they are dropped), and
raises the young generation's threshold so a collection runs every YOUNG_THRESHOLD net
allocations instead of 700. Garbage cycles are still collected, later and in larger batches:
memory holds at most a few thousand more dead containers.
"""

from __future__ import annotations

import gc

# Net container allocations between two young collections (CPython's default: 700). A board
# request at a subgraph allocates a few thousand; at 10,000 a young collection runs every few
# requests instead of several times per request.
YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Freeze what start-up built and space out collections (see the module's docstring)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
