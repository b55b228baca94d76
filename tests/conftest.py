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

