"""A private PostgreSQL for tests that provision the service roles.

The roles (`doorward_identity`, ...) are cluster-wide and provisioning sets their passwords:
on the session server that would lock out a stack another test (e2e) still runs on it."""

from __future__ import annotations

import atexit
import shutil
from collections.abc import Iterator

import pytest

from deploy.embedded import EmbeddedPostgres
from tests.fixtures.infra import PostgresHandle, _scratch_dir


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PostgresHandle]:
    root = _scratch_dir("doorward-test-pg-private-")
    server = EmbeddedPostgres(root / "pgdata")
    atexit.register(server.stop)
    try:
        server.start()
        yield PostgresHandle(server)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
