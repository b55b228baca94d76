"""The gateway's one request error: what the client is told, with its HTTP status and code."""

from __future__ import annotations


class RequestError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
