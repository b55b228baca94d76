import grpc
import pytest

from doorward_kit.errors import (
    GRPC_STATUS,
    HTTP_STATUS,
    DoorwardError,
    ErrorCode,
    error_code_from_grpc,
)

pytestmark = pytest.mark.unit


def test_every_code_maps_to_http_and_grpc():
    for code in ErrorCode:
        assert code in HTTP_STATUS
        assert code in GRPC_STATUS


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.UNAUTHENTICATED, 401),
        (ErrorCode.FORBIDDEN, 403),
        (ErrorCode.NOT_FOUND, 404),
        (ErrorCode.CONFLICT, 409),
        (ErrorCode.GONE, 410),
        (ErrorCode.BAD_USER_INPUT, 422),
        (ErrorCode.RATE_LIMITED, 429),
        (ErrorCode.UNAVAILABLE, 503),
    ],
)
def test_contract_http_statuses(code, status):
    assert DoorwardError(code, "x").http_status == status


def test_rest_error_body_shape():
    body = DoorwardError(ErrorCode.NOT_FOUND, "work order not found").to_json()
    assert body == {"error": {"code": "NOT_FOUND", "message": "work order not found"}}


def test_precise_code_survives_grpc_round_trip():
    # FORBIDDEN and OUTSIDE_ACCESS_WINDOW share PERMISSION_DENIED-like statuses; metadata decides.
    status = GRPC_STATUS[ErrorCode.OUTSIDE_ACCESS_WINDOW]
    assert error_code_from_grpc(status, "OUTSIDE_ACCESS_WINDOW") is ErrorCode.OUTSIDE_ACCESS_WINDOW
    assert error_code_from_grpc(grpc.StatusCode.DEADLINE_EXCEEDED, None) is ErrorCode.UNAVAILABLE
    assert error_code_from_grpc(grpc.StatusCode.UNKNOWN, "nonsense") is ErrorCode.INTERNAL
