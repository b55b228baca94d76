"""Federation entity references resolved a batch at a time.

strawberry answers `_entities` by calling the type's `resolve_reference` once per
representation. An async one is a coroutine per entity, which graphql-core then completes in a
task of its own and gathers: for a board's 20 work orders at audit that was 20 coroutines, 20
principal look-ups and 20 policy checks, then 20 `auditTrail` coroutines meeting in a
DataLoader, before a single event was read.

A type may also define

    @classmethod
    def resolve_references(cls, info, representations: list[dict[str, str]]) -> list | awaitable

which `SubgraphSchema` calls once with all of the request's representations of that type (in
their order, each without its `__typename`) and whose answer has one item per representation:
the entity, None, or an exception (that entity's error, in its place, as a raising
`resolve_reference` gives it today). If it raises, every entity of its batch gets the error.
`resolve_reference` stays: it names the type's keys (SubgraphSchema checks representations
against its signature) and is what plain strawberry calls. The batch resolver authorizes as
the single one does: the rule "every subgraph authorizes inside its reference resolver" holds
for both.

With every batch resolved, the whole `_entities` level is one awaitable; the entities it
answers may carry what their fields need (read in the same batch), so that their fields are
plain reads and graphql-core completes the list without a task per item.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from strawberry.types import Info

Representation = dict[str, Any]
BatchResolver = Callable[[Info, list[Representation]], Sequence[Any] | Awaitable[Sequence[Any]]]

BATCH_RESOLVER = "resolve_references"


def batch_resolver(origin: object) -> BatchResolver | None:
    """The type's `resolve_references`, if it has one."""
    found: BatchResolver | None = getattr(origin, BATCH_RESOLVER, None)
    return found if callable(found) else None


def keys_of(representation: Representation) -> Representation:
    """A representation's keys as the reference resolver takes them (no __typename); a copy:
    the variables stay as they came."""
    return {k: v for k, v in representation.items() if k != "__typename"}


async def resolve_batches(
    info: Info,
    results: list[Any],
    batches: Sequence[tuple[BatchResolver, list[int]]],
    representations: Sequence[Representation],
) -> list[Any]:
    """Fill `results` at each batch's indexes with what its resolver answers for them."""
    for resolve, indexes in batches:
        try:
            found = resolve(info, [keys_of(representations[i]) for i in indexes])
            if inspect.isawaitable(found):
                found = await found
            items = list(found)
            if len(items) != len(indexes):
                raise ValueError(f"{BATCH_RESOLVER} answered {len(items)} items for {len(indexes)}")
        except Exception as error:  # each entity's error, as a raising resolve_reference's
            items = [error] * len(indexes)
        for index, item in zip(indexes, items, strict=True):
            results[index] = item
    return results
