"""Identity benchmark: login cost and access-token verification rate (one core, one process).

    .venv/bin/python bench/identity_bench.py [--seconds 2]

Starts a throw-away embedded PostgreSQL and identity's real gRPC server, then reports:
  - argon2id verify time with the production defaults (RFC 9106 low-memory: t=3, m=64 MiB, p=4)
  - a whole login through identity's service layer (throttle lookup, argon2, session, tokens)
  - TokenVerifier.decode per second (signature + claims, no session check)
  - TokenVerifier.verify per second with the real guard, cache warm (WatchSessions live)
  - TokenVerifier.verify per second with the guard asking CheckSession every time
  - the cost of mutual TLS: p50 of one CheckSession call over mTLS and over plain TCP (the
    insecure development mode), and of the first call on a new channel (TLS handshake)
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from deploy.embedded import EmbeddedPostgres
from doorward_kit.auth import StaticJwksSource, TokenVerifier
from doorward_kit.db import Database, run_migrations_async
from doorward_kit.grpc import GrpcServer, InternalAuth, ServiceChannel
from doorward_kit.net import free_port
from doorward_kit.session_guard import IdentitySessionGuard
from services.identity.api.grpc import add_to_server
from services.identity.bootstrap import MIGRATIONS
from services.identity.models import Organisation
from services.identity.repository import Repository
from services.identity.runtime import build_identity
from services.identity.service.passwords import Passwords
from services.identity.settings import IdentitySettings
from tests.fixtures.pki import ServicePki

PASSWORD = "Bench-Passphrase-For-Login"
TOKEN = "bench-internal-" + uuid.uuid4().hex


async def _no_audit(*_: Any, **__: Any) -> None:
    return None


async def rate(fn: Callable[[], Awaitable[Any]], seconds: float) -> float:
    for _ in range(50):
        await fn()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            await fn()
        count += 100
    return count / (time.perf_counter() - started)


async def check_session_cost(identity: Any, pki: ServicePki, calls: int) -> dict[str, float]:
    """p50 of CheckSession over mutual TLS and over plain TCP: same servicer, same process, the
    two channels called in turn so that load on the machine weighs on both alike."""
    from doorward.identity.v1 import identity_pb2, identity_pb2_grpc

    request = identity_pb2.CheckSessionRequest(
        user_id=str(uuid.uuid4()), org_id=str(uuid.uuid4()), epoch=0, session_id="bench"
    )
    modes = {
        "mtls": (pki.auth("identity"), pki.auth("gateway")),
        "plain": (InternalAuth("identity", None, TOKEN), InternalAuth("gateway", None, TOKEN)),
    }
    servers, targets = [], {}
    for mode, (server_auth, _) in modes.items():
        port = free_port()
        server = GrpcServer("127.0.0.1", port, server_auth)
        add_to_server(server, identity)
        await server.start()
        servers.append(server)
        targets[mode] = f"127.0.0.1:{port}"
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    first: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for _ in range(20):  # a new channel each time: connection + handshake + call
            for mode, (_, client_auth) in modes.items():
                channel = ServiceChannel(targets[mode], client_auth, server="identity")
                stub = identity_pb2_grpc.IdentityStub(channel.channel)
                started = time.perf_counter()
                await channel.call(stub.CheckSession, request)
                first[mode].append(time.perf_counter() - started)
                await channel.close()
        warm = {
            mode: ServiceChannel(targets[mode], client_auth, server="identity")
            for mode, (_, client_auth) in modes.items()
        }
        checks = {
            m: identity_pb2_grpc.IdentityStub(c.channel).CheckSession for m, c in warm.items()
        }
        for i in range(calls + 50):
            for mode, channel in warm.items():
                started = time.perf_counter()
                await channel.call(checks[mode], request)
                if i >= 50:  # warm-up
                    samples[mode].append(time.perf_counter() - started)
        for channel in warm.values():
            await channel.close()
    finally:
        for server in servers:
            await server.stop(0)
    result = {mode: statistics.median(v) * 1000 for mode, v in samples.items()}
    result.update({f"{mode}_first": statistics.median(v) * 1000 for mode, v in first.items()})
    return result


async def main(seconds: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="doorward-bench-"))
    pg = EmbeddedPostgres(root / "pg")
    pg.start()
    try:
        url = pg.create_database("identity_bench")
        await run_migrations_async(MIGRATIONS, url)
        settings = IdentitySettings(
            identity_db_url=url,  # type: ignore[arg-type]
            identity_key_dir=root / "keys",
        )
        defaults = Passwords(
            time_cost=settings.identity_argon2_time_cost,
            memory_cost=settings.identity_argon2_memory_cost,
            parallelism=settings.identity_argon2_parallelism,
        )
        stored = defaults.hash(PASSWORD)
        samples = []
        for _ in range(10):
            started = time.perf_counter()
            assert defaults.verify(stored, PASSWORD)
            samples.append(time.perf_counter() - started)
        argon2_ms = statistics.median(samples) * 1000

        db = Database(url, pool_size=4)
        identity = build_identity(settings, db, audit=_no_audit)
        service = identity.service
        async with db.unit_of_work() as session:
            repo = Repository(session)
            org = Organisation(name="bench", mfa_required_roles=[])
            await repo.add_org(org)
            view = await service.add_user(
                repo,
                org_id=org.id,
                email="bench@example.com",
                display_name="Bench",
                roles=["TECHNICIAN"],
                region_ids=[],
                password=PASSWORD,
                password_change_required=False,
            )
        login_samples = []
        token = ""
        for _ in range(10):
            started = time.perf_counter()
            async with db.unit_of_work() as session:
                outcome = await service.login(
                    session, email="bench@example.com", password=PASSWORD, otp=None, source_ip=""
                )
            login_samples.append(time.perf_counter() - started)
            token = outcome.unwrap().access_token
        login_ms = statistics.median(login_samples) * 1000

        port = free_port()
        pki = ServicePki(root / "tls")
        server = GrpcServer("127.0.0.1", port, pki.auth("identity"))
        add_to_server(server, identity)
        await server.start()
        jwks = StaticJwksSource(identity.keys.jwks())
        target = f"127.0.0.1:{port}"
        cached_guard = IdentitySessionGuard(
            ServiceChannel(target, pki.auth("gateway"), server="identity")
        )
        uncached_guard = IdentitySessionGuard(
            ServiceChannel(target, pki.auth("gateway"), server="identity"), watch=False
        )
        cached = TokenVerifier(jwks, cached_guard)
        uncached = TokenVerifier(jwks, uncached_guard)
        await cached.verify(token)
        for _ in range(100):
            if cached_guard.stream_live:
                break
            await asyncio.sleep(0.05)
        assert cached_guard.stream_live, "the watch stream did not come up"
        assert (await cached.verify(token)).user_id == view.id

        decode_rate = await rate(lambda: cached.decode(token), seconds)
        cached_rate = await rate(lambda: cached.verify(token), seconds)
        uncached_rate = await rate(lambda: uncached.verify(token), seconds)

        await cached_guard.close()
        await uncached_guard.close()
        await server.stop(0.5)
        tls = await check_session_cost(identity, pki, max(int(seconds * 500), 200))
        await db.dispose()
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)

    print("identity benchmark (one process, one core)")
    print(
        f"  argon2id verify, production defaults (t={settings.identity_argon2_time_cost}, "
        f"m={settings.identity_argon2_memory_cost} KiB, p={settings.identity_argon2_parallelism})"
        f": {argon2_ms:.1f} ms"
    )
    print(f"  login through the service layer (median of 10):        {login_ms:.1f} ms")
    print(f"  TokenVerifier.decode:                                  {decode_rate:,.0f} /s")
    print(f"  TokenVerifier.verify, guard cache warm (stream live):   {cached_rate:,.0f} /s")
    print(f"  TokenVerifier.verify, CheckSession every time:          {uncached_rate:,.0f} /s")
    print(f"  ratio cached/uncached verify: {cached_rate / uncached_rate:.1f}x")
    print(f"  CheckSession p50, mutual TLS:                           {tls['mtls']:.3f} ms")
    print(f"  CheckSession p50, plain TCP (insecure dev mode):        {tls['plain']:.3f} ms")
    print(f"  mTLS cost per call: {tls['mtls'] - tls['plain']:+.3f} ms")
    print(
        f"  first call on a new channel (connect + handshake), p50: mTLS {tls['mtls_first']:.2f} "
        f"ms, plain {tls['plain_first']:.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    asyncio.run(main(parser.parse_args().seconds))
