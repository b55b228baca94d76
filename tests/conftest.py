"""Session fixtures shared by every test package; the helpers live in tests/fixtures/."""

from collections.abc import Iterator

import pytest

from tests.fixtures.infra import openbao, postgres
from tests.fixtures.pki import service_pki

__all__ = ["openbao", "postgres", "service_pki", "stack"]

# The fuzz suite (tests/fuzz) shares the e2e stack. Fuzzing is not an attack on the throttles:
# a login refused for the 31st time from 127.0.0.1 would turn every later request into
# RATE_LIMITED and test nothing, so the limits are raised (the e2e tests test no throttle).
STACK_LIMITS = {
    "DOORWARD_GATEWAY_RATE_LIMIT_PER_SECOND": "10000",
    "DOORWARD_GATEWAY_RATE_LIMIT_BURST": "10000",
    "DOORWARD_SECRETS_REVEAL_RATE_LIMIT": "100000",
    "DOORWARD_IDENTITY_LOGIN_FREE_FAILURES_ADDRESS": "1000000",
    "DOORWARD_IDENTITY_LOGIN_FREE_FAILURES_ACCOUNT": "1000000",
}


@pytest.fixture(scope="session")
def stack(postgres, openbao) -> Iterator:
    """The whole stack as separate processes (`doorward up`), one per test run: tests/e2e and
    tests/fuzz both use it (see tests/e2e/conftest.py)."""
    from tests.e2e.conftest import run_stack

    yield from run_stack(postgres, openbao, STACK_LIMITS)


# `make test` runs the suite on two pytest-xdist workers (`--dist loadgroup`). Every test file is
# one work unit (its module fixtures start their services once), except that every test on the
# shared `stack` is one unit: one worker starts that stack, not each. Units are handed out in
# the order below, longest first, so the last one to start is short and neither worker idles
# while the other finishes a drill.
_FIRST = (
    "tests/e2e/test_failover.py",
    "tests/e2e/test_restore_drill.py",
    "tests/e2e/test_up.py",
    "tests/integration/deploy/test_up.py",
)


def _unit(item: pytest.Item) -> str:
    return "stack" if "stack" in getattr(item, "fixturenames", ()) else item.nodeid.split("::")[0]


def _rank(item: pytest.Item) -> int:
    unit = _unit(item)
    if unit == "stack":
        return 0
    if unit in _FIRST:
        return 1 + _FIRST.index(unit)
    for rank, folder in enumerate(("tests/e2e/", "tests/compat/", "tests/fuzz/",
                                   "tests/integration/", "tests/security/"), start=10):
        if unit.startswith(folder):
            return rank
    return 99


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: a file's own order is kept
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_unit(item)))
