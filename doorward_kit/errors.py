"""The one error type. Each adapter maps it: HTTP status, gRPC status code, GraphQL extensions.code.

Messages name what was wrong; they never carry a secret, a password, a token or contact data.
"""

from __future__ import annotations

import enum

import grpc


class ErrorCode(enum.StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    CONFLICT = "CONFLICT"
    OUTSIDE_ACCESS_WINDOW = "OUTSIDE_ACCESS_WINDOW"
    RATE_LIMITED = "RATE_LIMITED"
    UNAVAILABLE = "UNAVAILABLE"
    # REST only: a used, expired or revoked upload/reveal token (410 Gone).
    GONE = "GONE"
    # REST only: a request body longer than the route accepts (413).
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    INTERNAL = "INTERNAL_SERVER_ERROR"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.BAD_USER_INPUT: 422,
    ErrorCode.CONFLICT: 409,
    ErrorCode.OUTSIDE_ACCESS_WINDOW: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.GONE: 410,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.INTERNAL: 500,
}

GRPC_STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.BAD_USER_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.CONFLICT: grpc.StatusCode.ABORTED,
    ErrorCode.OUTSIDE_ACCESS_WINDOW: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.GONE: grpc.StatusCode.OUT_OF_RANGE,
    ErrorCode.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

# gRPC carries the precise Doorward code in trailing metadata, because several Doorward codes
# share one gRPC status (e.g. FORBIDDEN and OUTSIDE_ACCESS_WINDOW would both be lossy otherwise).
GRPC_CODE_METADATA_KEY = "x-doorward-error-code"

_FROM_GRPC: dict[grpc.StatusCode, ErrorCode] = {}
for _code, _status in GRPC_STATUS.items():
    _FROM_GRPC.setdefault(_status, _code)  # a shared status falls back to the first code


class DoorwardError(Exception):
    """A failure the caller may see: a code from the contract and a safe message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return GRPC_STATUS[self.code]

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code.value, "message": self.message}}

    def __repr__(self) -> str:
        return f"DoorwardError({self.code.value}, {self.message!r})"


def error_code_from_grpc(status: grpc.StatusCode, metadata_code: str | None) -> ErrorCode:
    if metadata_code:
        try:
            return ErrorCode(metadata_code)
        except ValueError:
            pass
    if status in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
        return ErrorCode.UNAVAILABLE
    return _FROM_GRPC.get(status, ErrorCode.INTERNAL)


def unauthenticated(message: str = "a valid access token is required") -> DoorwardError:
    return DoorwardError(ErrorCode.UNAUTHENTICATED, message)


def forbidden(message: str = "you are not allowed to do this") -> DoorwardError:
    return DoorwardError(ErrorCode.FORBIDDEN, message)


def not_found(what: str) -> DoorwardError:
    return DoorwardError(ErrorCode.NOT_FOUND, f"{what} not found")


def bad_input(message: str) -> DoorwardError:
    return DoorwardError(ErrorCode.BAD_USER_INPUT, message)


def conflict(message: str) -> DoorwardError:
    return DoorwardError(ErrorCode.CONFLICT, message)


def unavailable(message: str) -> DoorwardError:
    return DoorwardError(ErrorCode.UNAVAILABLE, message)
