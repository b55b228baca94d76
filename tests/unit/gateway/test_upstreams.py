"""Balancing over a subgraph's replicas: round-robin, failover, retries for reads only, health."""

from __future__ import annotations

import httpx
import pytest

from doorward_kit.settings import StackSettings
from gateway.settings import GatewaySettings
from gateway.upstreams import HealthChecker, Replica, Upstream, UpstreamUnavailable

pytestmark = pytest.mark.unit

TIMEOUTS: dict[str, float | None] = httpx.Timeout(1.0).as_dict()


class FakeReplica:
    """A replica's transport: counts what it got, answers 200, a status, or refuses."""

    def __init__(self, name: str, *, status: int = 200, up: bool = True) -> None:
        self.name, self.status, self.up = name, status, up
        self.posts = 0
        self.ready_checks = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("refused", request=request)
        if request.url.path == "/readyz":
            self.ready_checks += 1
            return httpx.Response(200 if self.status == 200 else 503)
        self.posts += 1
        return httpx.Response(self.status, content=b'{"data":{"who":"%s"}}' % self.name.encode())

    def replica(self) -> Replica:
        return Replica(f"http://{self.name}:4001/graphql", httpx.MockTransport(self.handle))


async def post(upstream: Upstream, *, retry: bool = True) -> bytes:
    return await upstream.post(b"{}", {"content-type": "application/json"}, TIMEOUTS, retry=retry)


async def test_round_robin_over_healthy_replicas() -> None:
    a, b = FakeReplica("a"), FakeReplica("b")
    upstream = Upstream("workorders", [a.replica(), b.replica()])
    for _ in range(6):
        await post(upstream)
    assert (a.posts, b.posts) == (3, 3)


async def test_a_read_goes_to_the_next_replica_when_one_is_gone() -> None:
    a, b = FakeReplica("a", up=False), FakeReplica("b")
    upstream = Upstream("workorders", [a.replica(), b.replica()])
    answers = {await post(upstream) for _ in range(4)}
    assert answers == {b'{"data":{"who":"b"}}'}
    # Marked down at the first failure: later requests go straight to b.
    assert not upstream.replicas[0].healthy
    assert b.posts == 4


async def test_a_503_counts_as_unavailable_for_reads() -> None:
    a, b = FakeReplica("a", status=503), FakeReplica("b")
    upstream = Upstream("identity", [a.replica(), b.replica()])
    assert await post(upstream) == b'{"data":{"who":"b"}}'


async def test_a_mutation_is_never_sent_twice() -> None:
    """The attack on safety: a replica that fails mid-mutation may have acted; the mutation
    fails instead of running again elsewhere. The honest path: the next mutation goes to a
    healthy replica."""
    a, b = FakeReplica("a", status=503), FakeReplica("b")
    upstream = Upstream("workorders", [a.replica(), b.replica()])
    with pytest.raises(UpstreamUnavailable):
        await post(upstream, retry=False)
    assert (a.posts, b.posts) == (1, 0)
    assert await post(upstream, retry=False) == b'{"data":{"who":"b"}}'
    assert (a.posts, b.posts) == (1, 1)


async def test_every_replica_down_is_unavailable() -> None:
    a, b = FakeReplica("a", up=False), FakeReplica("b", up=False)
    upstream = Upstream("audit", [a.replica(), b.replica()])
    with pytest.raises(UpstreamUnavailable):
        await post(upstream)


async def test_health_checks_mark_replicas_down_and_back() -> None:
    a, b = FakeReplica("a"), FakeReplica("b")
    upstream = Upstream("audit", [a.replica(), b.replica()])
    checker = HealthChecker({"audit": upstream})

    async def check() -> None:
        mounts = {
            "http://a:4001": httpx.MockTransport(a.handle),
            "http://b:4001": httpx.MockTransport(b.handle),
        }
        async with httpx.AsyncClient(mounts=mounts) as client:
            await checker.check_once(client)

    a.up = False
    await check()
    assert [r.healthy for r in upstream.replicas] == [False, True]
    await post(upstream)
    await post(upstream)
    assert (a.posts, b.posts) == (0, 2)
    a.up = True
    await check()
    assert all(r.healthy for r in upstream.replicas)


def test_replica_urls_come_from_the_stack_addresses_or_the_gateway_setting() -> None:
    stack = StackSettings(
        identity_http_url="http://10.0.0.1:4001,http://10.0.0.2:4001",
        workorders_http_url="http://workorders.example:4002",
    )
    settings = GatewaySettings(stack=stack)
    replicas = settings.subgraph_replicas()
    assert replicas["identity"] == [
        "http://10.0.0.1:4001/graphql",
        "http://10.0.0.2:4001/graphql",
    ]
    assert replicas["workorders"] == ["http://workorders.example:4002/graphql"]
    assert settings.subgraph_urls()["identity"] == "http://10.0.0.1:4001/graphql"
    own = GatewaySettings(stack=stack, subgraphs={"audit": "http://x/graphql, http://y/graphql"})
    assert own.subgraph_replicas() == {"audit": ["http://x/graphql", "http://y/graphql"]}


def test_stack_addresses() -> None:
    plain = StackSettings(host="127.0.0.1")
    assert plain.grpc_target("identity") == "127.0.0.1:5001"
    assert plain.http_url("secrets") == "http://127.0.0.1:4004"
    many = StackSettings(identity_grpc_address="127.0.0.1:5001,127.0.0.1:5011")
    assert many.grpc_target("identity") == "ipv4:127.0.0.1:5001,127.0.0.1:5011"
    named = StackSettings(audit_grpc_address="audit.doorward.svc:5003")
    assert named.grpc_target("audit") == "audit.doorward.svc:5003"
    assert named.address_hosts("audit") == ["audit.doorward.svc", "127.0.0.1"]
    with pytest.raises(ValueError, match="IP addresses"):
        StackSettings(audit_grpc_address="a.example:5003,b.example:5003")
    with pytest.raises(ValueError, match="no URL"):
        StackSettings(audit_http_url="audit:4003")


def test_a_supergraph_composed_from_the_stack_gets_every_replica() -> None:
    """The gateway composes from the first replica's URL; the others come from the stack."""
    from types import SimpleNamespace

    from gateway.server import _replica_urls

    stack = StackSettings(workorders_http_url="http://10.0.0.1:4002,http://10.0.0.2:4002")
    settings = GatewaySettings(stack=stack)
    composed = SimpleNamespace(
        urls={"workorders": "http://10.0.0.1:4002/graphql", "other": "http://x/graphql"}
    )
    found = _replica_urls(settings, composed)  # type: ignore[arg-type]
    assert found["workorders"] == [
        "http://10.0.0.1:4002/graphql",
        "http://10.0.0.2:4002/graphql",
    ]
    assert found["other"] == ["http://x/graphql"]
    # A supergraph (file, test) naming another URL keeps its own.
    elsewhere = SimpleNamespace(urls={"workorders": "http://y:9/graphql"})
    assert _replica_urls(settings, elsewhere) == {"workorders": ["http://y:9/graphql"]}  # type: ignore[arg-type]
