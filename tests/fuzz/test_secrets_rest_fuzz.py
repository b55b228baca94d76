"""schemathesis against the secrets REST door, driven by the description the door publishes
(GET /openapi.json): both calls, valid and invalid bodies, arbitrary path ids (and the real
upload slot / grant ids), with a real token of every role. Besides the suite's properties
(conftest.py), schemathesis checks that each answer is one the description declares: status
code, content type, headers (Cache-Control: no-store) and body schema."""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import given, seed
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.conftest import ALLOWED_REST, FUZZ_SETTINGS, ROLES, SEED, FuzzWorld, Oracle

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

OPERATIONS = {
    "upload": ("/v1/uploads/{slotId}", "PUT", "slotId"),
    "reveal": ("/v1/reveals/{grantId}", "POST", "grantId"),
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def door(fuzz_world: FuzzWorld) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz_world.secrets_url}/openapi.json")


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("role", ROLES)
def test_the_secrets_door_keeps_the_properties_for_any_request(fuzz_world, door, role, operation):
    path, method, id_name = OPERATIONS[operation]
    api_operation = door[path][method]
    real_id = fuzz_world.ids["spare_grant" if operation == "reveal" else "site"]
    strategy = st.one_of(
        api_operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
        api_operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
        api_operation.as_strategy(
            schemathesis.GenerationMode.POSITIVE, path_parameters={id_name: real_id}
        ),
    )
    oracle = Oracle(fuzz_world, ALLOWED_REST)

    @seed(SEED)
    @FUZZ_SETTINGS
    @given(case=strategy)
    def run(case) -> None:
        headers = fuzz_world.headers(role)
        started = time.monotonic()
        response = case.call(base_url=fuzz_world.secrets_url, headers=headers, timeout=30)
        elapsed = time.monotonic() - started
        oracle.check(
            f"secrets-rest:{operation}",
            role,
            response,
            elapsed,
            f"{case.method} {case.formatted_path} {case.body!r}",
        )
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()
