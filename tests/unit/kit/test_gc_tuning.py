"""settle_heap (doorward_kit.gc_tuning): start-up's heap frozen, young collections spaced out,
garbage cycles still collected. Each case runs in a fresh interpreter: freezing is process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_start_up_objects_are_frozen_and_the_young_threshold_raised() -> None:
    out = _run(
        """
        import gc
        from doorward_kit.gc_tuning import YOUNG_THRESHOLD, settle_heap
        import doorward_kit.graphql  # a real start-up's worth of objects
        before = gc.get_threshold()
        settle_heap()
        after = gc.get_threshold()
        print(gc.get_freeze_count() > 10_000, after == (YOUNG_THRESHOLD,) + before[1:])
        """
    )
    assert out == "True True"


def test_garbage_cycles_made_after_start_up_are_still_collected() -> None:
    out = _run(
        """
        import gc, weakref
        from doorward_kit.gc_tuning import YOUNG_THRESHOLD, settle_heap
        settle_heap()

        class Node:
            pass

        def cycle():
            a, b = Node(), Node()
            a.other, b.other = b, a
            return weakref.ref(a)

        probe = cycle()
        # Enough fresh containers to pass the young threshold: a collection runs by itself.
        keep = [[] for _ in range(YOUNG_THRESHOLD * 2)]
        del keep
        print(probe() is None)
        """
    )
    assert out == "True"
