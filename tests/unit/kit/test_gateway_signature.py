"""The gateway's signature: what it covers, its freshness window, its one-time nonce."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.requests import Request

from doorward_kit.gateway_signature import (
    CLIENT_ADDRESS_HEADER,
    SIGNATURE_HEADER,
    GatewaySigner,
    GatewayVerifier,
    SignatureRefused,
)
from doorward_kit.graphql import GatewayGate
from doorward_kit.settings import StackSettings

pytestmark = pytest.mark.unit

BODY = b'{"query":"{ me { id } }"}'


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def pair(clock: Clock) -> tuple[GatewaySigner, GatewayVerifier]:
    key = Ed25519PrivateKey.generate()
    return GatewaySigner(key, clock), GatewayVerifier(key.public_key(), clock=clock)


def test_a_fresh_signature_gives_the_signed_address_once() -> None:
    clock = Clock()
    signer, verifier = pair(clock)
    headers = signer.headers("POST", "/graphql", BODY, "203.0.113.9")
    assert verifier.verify("POST", "/graphql", BODY, headers) == "203.0.113.9"
    with pytest.raises(SignatureRefused, match="replayed"):
        verifier.verify("POST", "/graphql", BODY, headers)


@pytest.mark.parametrize(
    ("method", "target", "body", "address"),
    [
        ("GET", "/graphql", BODY, "203.0.113.9"),
        ("POST", "/other", BODY, "203.0.113.9"),
        ("POST", "/graphql", BODY + b" ", "203.0.113.9"),
        ("POST", "/graphql", BODY, "203.0.113.10"),
    ],
)
def test_every_covered_part_matters(method: str, target: str, body: bytes, address: str) -> None:
    clock = Clock()
    signer, verifier = pair(clock)
    headers = signer.headers("POST", "/graphql", BODY, "203.0.113.9")
    headers[CLIENT_ADDRESS_HEADER] = address
    with pytest.raises(SignatureRefused, match="invalid"):
        verifier.verify(method, target, body, headers)


def test_the_window_is_thirty_seconds_either_way() -> None:
    clock = Clock()
    signer, verifier = pair(clock)
    old = signer.headers("POST", "/graphql", BODY, "")
    clock.now += 31
    with pytest.raises(SignatureRefused, match="stale"):
        verifier.verify("POST", "/graphql", BODY, old)
    clock.now -= 62
    with pytest.raises(SignatureRefused, match="stale"):
        verifier.verify("POST", "/graphql", BODY, old)
    clock.now += 60
    assert verifier.verify("POST", "/graphql", BODY, old) == ""


@pytest.mark.parametrize(
    "value", ["", "t=1", "t=x;n=abcdefgh;s=AAAA", "garbage", "t=1;n=short;s=AAAA"]
)
def test_malformed_or_missing(value: str) -> None:
    _, verifier = pair(Clock())
    headers = {SIGNATURE_HEADER: value} if value else {}
    with pytest.raises(SignatureRefused):
        verifier.verify("POST", "/graphql", BODY, headers)


def test_forgotten_nonces_are_only_stale_ones() -> None:
    clock = Clock()
    signer, verifier = pair(clock)
    for _ in range(100):
        verifier.verify("POST", "/", b"", signer.headers("POST", "/", b"", ""))
        clock.now += 1
    assert len(verifier._seen) <= 61  # the window each way, no more


def test_a_subgraph_without_key_refuses_to_start_unless_explicitly_unsigned() -> None:
    with pytest.raises(RuntimeError, match="DOORWARD_GATEWAY_PUBLIC_KEY_FILE"):
        GatewayGate.from_stack(StackSettings())
    assert GatewayGate.from_stack(StackSettings(allow_unsigned_graphql=True)).allow_unsigned
    with pytest.raises(ValueError, match="development only"):
        StackSettings(env="production", allow_unsigned_graphql=True)


def test_verification_is_cheap() -> None:
    """A guard against something pathological per request (key parsing, a KDF), not a
    benchmark: best of several batches, with a bound a loaded CI machine still meets."""
    signer, verifier = pair(Clock())
    best = float("inf")
    for _ in range(5):
        signed = [signer.headers("POST", "/graphql", BODY, "203.0.113.9") for _ in range(40)]
        started = time.perf_counter()
        for headers in signed:
            verifier.verify("POST", "/graphql", BODY, headers)
        best = min(best, (time.perf_counter() - started) / len(signed))
    assert best < 0.01  # ~0.1-0.2 ms on an idle core
    print(f"verify: {best * 1e6:.0f} µs per request")


def _request(headers: dict[str, str], body: bytes) -> tuple[Request, list[int]]:
    """A POST /graphql whose body, when read, is counted in `reads`."""
    reads: list[int] = []

    async def receive() -> dict[str, object]:
        reads.append(1)
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 4002),
        "scheme": "http",
    }
    return Request(scope, receive), reads


@pytest.mark.parametrize("case", ["junk", "stale", "future", "seen here"])
async def test_a_junk_stale_or_replayed_header_is_refused_before_the_body_is_read(
    case: str,
) -> None:
    clock = Clock()
    signer, verifier = pair(clock)
    gate = GatewayGate(verifier)
    headers = signer.headers("POST", "/graphql", BODY, "203.0.113.9")
    if case == "junk":
        headers[SIGNATURE_HEADER] = "x" * 200
    elif case == "stale":
        clock.now += 31
    elif case == "future":
        clock.now -= 31
    else:
        verifier.verify("POST", "/graphql", BODY, headers)
    request, reads = _request(headers, BODY)
    with pytest.raises(SignatureRefused):
        await gate.check(request)
    assert reads == []


async def test_an_honest_request_passes_the_precheck_and_is_then_verified_once() -> None:
    clock = Clock()
    signer, verifier = pair(clock)
    gate = GatewayGate(verifier)
    headers = signer.headers("POST", "/graphql", BODY, "203.0.113.9")
    request, reads = _request(headers, BODY)
    assert await gate.check(request) == "203.0.113.9"
    assert reads == [1]
    again, reads_again = _request(headers, BODY)
    with pytest.raises(SignatureRefused, match="replayed"):
        await gate.check(again)
    assert reads_again == []
