import pytest

from doorward_kit.errors import DoorwardError
from services.identity.service.identity import Throttling, normalise_email, parse_roles

pytestmark = pytest.mark.unit


def test_delays_grow_and_are_capped():
    policy = Throttling(free_failures_account=5, block_base_seconds=2.0, block_max_seconds=60.0)
    delays = [policy.block_for(n, 5) for n in range(1, 12)]
    assert delays[:4] == [0.0] * 4
    assert delays[4:8] == [2.0, 4.0, 8.0, 16.0]
    assert max(delays) == 60.0
    assert delays == sorted(delays)


def test_email_and_roles_normalised():
    assert normalise_email("  Boss@Example.COM ") == "boss@example.com"
    assert parse_roles(["TECHNICIAN", "ADMIN", "ADMIN"]) == ["ADMIN", "TECHNICIAN"]
    with pytest.raises(DoorwardError):
        parse_roles(["ROOT"])
