"""A small TCP balancer for `doorward up --replicas N`: what a load balancer, a Kubernetes
Service or an Ingress does in front of replicas, on one machine and without installing one.

It listens on the public address of a process that has replicas (the gateway, the secrets
door, the OpenBao API) and hands each new connection to the next backend in turn; a backend
that refuses the connection (a dead replica) is skipped and the next one tried, so clients do
not notice a replica's death beyond the connections that were open to it. Bytes are copied
unchanged (TLS or not, HTTP or not). With `proxy_protocol` (the gateway) each backend
connection starts with a PROXY protocol v1 line naming the client (gateway/proxy_protocol.py),
so rate limits and audit see the client, not the balancer; the gateway reads that line only on
its PROXY port and only from the balancer's address. Without it the backends see the balancer.

Runs in its own thread with its own event loop; `start` returns once it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("doorward.deploy")

CONNECT_TIMEOUT_SECONDS = 2.0
CHUNK = 65536
PROBE_SECONDS = 0.5


class TcpBalancer:
    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        backends: Sequence[tuple[str, int]],
        *,
        prefer_path: str | None = None,
        proxy_protocol: bool = False,
    ) -> None:
        if not backends:
            raise ValueError(f"{name}: no backend to balance over")
        self.name = name
        self.host = host
        self.port = port
        self.backends = list(backends)
        self._next = 0
        # With `prefer_path` (OpenBao: /v1/sys/health, 200 only on the active node) every
        # connection goes to a backend answering 200 there, the others only when none does:
        # standbys serve reads from their own, possibly older, copy, and a write followed by a
        # read must see the write.
        self.prefer_path = prefer_path
        self.proxy_protocol = proxy_protocol
        self._preferred: set[tuple[str, int]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        # The tasks copying connections (and the probe's). asyncio's stream server drops its
        # own reference to a connection's task, and once the client has half-closed (sent its
        # request, shut down its side) the loop no longer watches that socket either: nothing
        # would reach the task while it waits for the backend's answer, and the garbage
        # collector would end it mid-answer (closing both sockets; the client got nothing).
        self._connections: set[asyncio.Task[Any]] = set()

    # ---- the proxy ------------------------------------------------------------------------

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        n = len(self.backends)
        start = self._next
        self._next = (self._next + 1) % n
        turn = [self.backends[(start + i) % n] for i in range(n)]
        turn = [b for b in turn if b in self._preferred] + [
            b for b in turn if b not in self._preferred
        ]
        last: Exception | None = None
        for host, port in turn:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    return await asyncio.open_connection(host, port)
            except (OSError, TimeoutError) as exc:
                last = exc  # a dead replica: try the next one
        raise ConnectionError(f"{self.name}: no backend accepts connections") from last

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if (task := asyncio.current_task()) is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        try:
            backend_r, backend_w = await self._connect()
        except ConnectionError:
            client_w.close()
            return
        try:
            if self.proxy_protocol:
                from gateway.proxy_protocol import v1_line

                peer = client_w.get_extra_info("peername")
                local = client_w.get_extra_info("sockname")
                backend_w.write(v1_line(peer[:2], local[:2]))
            await asyncio.gather(self._pipe(client_r, backend_w), self._pipe(backend_r, client_w))
        except asyncio.CancelledError:
            return  # the balancer stops: the connection ends with it, nothing to report
        finally:
            for w in (client_w, backend_w):
                with contextlib.suppress(OSError, RuntimeError):
                    w.close()

    # ---- lifecycle ------------------------------------------------------------------------

    async def _probe(self) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            while True:
                found = set()
                for host, port in self.backends:
                    with contextlib.suppress(httpx.HTTPError):
                        url = f"http://{host}:{port}{self.prefer_path}"
                        if (await client.get(url)).status_code == 200:
                            found.add((host, port))
                self._preferred = found
                await asyncio.sleep(PROBE_SECONDS)

    async def _serve(self, ready: Future[None]) -> None:
        self._stopped = asyncio.Event()
        if self.prefer_path is not None:
            probing = asyncio.get_running_loop().create_task(self._probe())
            self._connections.add(probing)  # held, as the connections' tasks are
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        async with self._server:
            await self._stopped.wait()

    def start(self) -> None:
        ready: Future[None] = Future()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self._serve(ready))
                # Connections still being copied end with the balancer.
                pending = asyncio.all_tasks(self._loop)
                for task in pending:
                    task.cancel()
                if pending:  # gather() of nothing wants a current loop, which this thread lacks
                    self._loop.run_until_complete(
                        asyncio.gather(*pending, return_exceptions=True)
                    )
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name=f"balancer-{self.name}", daemon=True)
        self._thread.start()
        ready.result(timeout=10)

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already gone
                self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout=5)
