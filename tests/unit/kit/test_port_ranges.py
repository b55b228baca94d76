"""free_port picks from DOORWARD_PORT_RANGE when set; test workers get disjoint slices, each
with room above it for the ports `doorward up` derives (+50), so two workers never pick the
same port."""

from __future__ import annotations

import itertools

import pytest

from doorward_kit import net

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_worker_slices_are_disjoint_with_room_for_the_derived_ports(count: int) -> None:
    slices = [tuple(map(int, net.worker_port_range(i, count).split("-"))) for i in range(count)]
    assert all(low + 1000 < high for low, high in slices)
    for (_, high), following in itertools.pairwise(slices):
        assert high + 50 < following[0]  # a picked port's +50 family stays in its own slice
    assert slices[0][0] >= 20000
    assert slices[-1][1] + 50 < net._ephemeral_floor()  # never into the kernel's own range


def test_free_port_picks_inside_the_configured_range(monkeypatch) -> None:
    monkeypatch.setenv(net.PORT_RANGE_ENV, "23000-24500")
    ports = {net.free_port() for _ in range(40)}
    assert len(ports) == 40
    assert all(23000 <= p < 24500 for p in ports)
