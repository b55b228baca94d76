"""A service's HTTP port closes idle connections after its own keep-alive time."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI

from doorward_kit.net import free_port
from doorward_kit.runner import ServiceParts, serving
from services.traces.__main__ import RECEIVER_KEEP_ALIVE_SECONDS

pytestmark = pytest.mark.integration


async def _idle_connection_closed_after(keep_alive: int, idle: float) -> bool:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    parts = ServiceParts(
        app=app, host="127.0.0.1", http_port=free_port(), keep_alive_seconds=keep_alive
    )
    async with serving(parts, "keepalive"):
        reader, writer = await asyncio.open_connection("127.0.0.1", parts.http_port)
        try:
            writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            answer = await reader.readuntil(b'{"ok":true}')
            assert answer.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(idle)
            try:
                async with asyncio.timeout(0.3):
                    return await reader.read(1) == b""  # EOF: the server closed it
            except TimeoutError:
                return False  # nothing to read, and still open
        finally:
            writer.close()


async def test_an_idle_connection_is_closed_after_the_keep_alive_time() -> None:
    assert await _idle_connection_closed_after(keep_alive=1, idle=2.0) is True


async def test_a_longer_keep_alive_keeps_the_idle_connection() -> None:
    assert await _idle_connection_closed_after(keep_alive=4, idle=2.0) is False


def test_the_trace_receiver_outlasts_the_exporters_intervals() -> None:
    # 5 s between span exports, 15 s between metric exports (the SDKs' defaults).
    assert RECEIVER_KEEP_ALIVE_SECONDS > 15
