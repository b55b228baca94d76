"""Session fixtures shared by every test package; the helpers live in tests/fixtures/."""

from tests.fixtures.infra import openbao, postgres

__all__ = ["openbao", "postgres"]
