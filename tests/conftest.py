"""Session fixtures shared by every test package; the helpers live in tests/fixtures/."""

import os

# Before anything imports grpc. A test process runs services in process (gRPC threads busy)
# and starts PostgreSQL, OpenBao and stacks with a preexec_fn (deploy.embedded.die_with_parent),
# so it forks, not vforks: gRPC's fork handlers then ran in the child, and with other threads
# inside gRPC the child aborted before its exec (CI: "Check failed: next_worker->state ==
# KICKED", OpenBao "exited with code -11"). Every child here execs at once, so gRPC's fork
# support (for children that use gRPC themselves) is only a hazard.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import Iterator

import pytest
import uvloop

from doorward_kit.net import PORT_RANGE_ENV, worker_port_range
from tests.fixtures.infra import openbao, postgres
from tests.fixtures.pki import service_pki

__all__ = ["openbao", "postgres", "service_pki", "stack"]

# Each xdist worker picks free ports from a slice of its own (and so do the processes it
# starts, which inherit the variable): two workers never hand out the same port.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw") and PORT_RANGE_ENV not in os.environ:
    os.environ[PORT_RANGE_ENV] = worker_port_range(
        int(_WORKER[2:]), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    )

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
def event_loop_policy() -> uvloop.EventLoopPolicy:
    """Async tests run on uvloop's event loop, as every Doorward process does
    (doorward_kit.runner.run_loop; uvicorn runs the gateway on it)."""
    return uvloop.EventLoopPolicy()


@pytest.fixture(scope="session")
def stack(postgres, openbao) -> Iterator:
    """The whole stack as separate processes (`doorward up`), one per test run: tests/e2e and
    tests/fuzz both use it (see tests/e2e/conftest.py)."""
    from tests.e2e.conftest import run_stack

    yield from run_stack(postgres, openbao, STACK_LIMITS)

