"""The calling service of a mutual-TLS HTTP request is the one Doorward service its verified
certificate names; anything else names nobody."""

from __future__ import annotations

import pytest

from doorward_kit.https_peer import PEER_SERVICE_KEY, peer_service_of, service_of_certificate

pytestmark = pytest.mark.unit


def cert(*uris: str, dns: tuple[str, ...] = ()) -> dict:
    return {"subjectAltName": (*(("URI", u) for u in uris), *(("DNS", d) for d in dns))}


def test_one_doorward_uri_names_the_service() -> None:
    assert service_of_certificate(cert("spiffe://doorward/secrets")) == "secrets"
    assert service_of_certificate(cert("spiffe://doorward/audit", dns=("x.example",))) == "audit"


@pytest.mark.parametrize(
    "given",
    [
        None,
        {},
        cert(dns=("secrets.doorward.internal",)),  # a DNS name proves no service identity
        cert("spiffe://other/secrets"),
        cert("spiffe://doorward/nobody"),
        cert("spiffe://doorward/secrets/extra"),
        cert("spiffe://doorward/secrets", "spiffe://doorward/audit"),  # two: neither
    ],
)
def test_anything_else_names_nobody(given: dict | None) -> None:
    assert service_of_certificate(given) is None


def test_the_scope_value_is_read_only_as_a_string() -> None:
    assert peer_service_of({PEER_SERVICE_KEY: "audit"}) == "audit"
    assert peer_service_of({}) is None
    assert peer_service_of({PEER_SERVICE_KEY: ["audit"]}) is None
