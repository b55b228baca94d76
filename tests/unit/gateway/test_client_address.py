"""The gateway's view of the client address: the TCP peer; X-Forwarded-For only from trusted
proxies, read from the right."""

from __future__ import annotations

import pytest

from gateway.client_address import client_address, parse_trusted_proxies
from gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

PROXIES = parse_trusted_proxies("10.0.0.0/8, 192.0.2.7, fd00::/8")


def test_without_trusted_proxies_the_header_is_discarded() -> None:
    assert client_address("198.51.100.4", ["203.0.113.9"], ()) == "198.51.100.4"
    assert client_address("198.51.100.4", ["203.0.113.9"], PROXIES) == "198.51.100.4"


def test_behind_trusted_proxies_the_right_most_untrusted_entry_is_the_client() -> None:
    # The client forged the first entry; proxy 192.0.2.7 saw 203.0.113.9; 10.1.1.1 saw the proxy.
    forwarded = ["6.6.6.6, 203.0.113.9", "192.0.2.7"]
    assert client_address("10.1.1.1", forwarded, PROXIES) == "203.0.113.9"


def test_garbage_and_empty_entries() -> None:
    assert client_address("10.1.1.1", ["203.0.113.9, not-an-ip"], PROXIES) == "10.1.1.1"
    assert client_address("10.1.1.1", [], PROXIES) == "10.1.1.1"
    assert client_address("10.1.1.1", [" , "], PROXIES) == "10.1.1.1"
    assert client_address("10.1.1.1", ["10.2.2.2"], PROXIES) == "10.2.2.2"  # all trusted
    assert client_address(None, ["203.0.113.9"], PROXIES) == ""
    assert client_address("unix-socket", ["203.0.113.9"], PROXIES) == ""


def test_ipv6_and_mapped_peers() -> None:
    assert client_address("::ffff:10.1.1.1", ["203.0.113.9"], PROXIES) == "203.0.113.9"
    assert client_address("fd00::1", ["2001:db8::5"], PROXIES) == "2001:db8::5"


def test_settings_refuse_a_bad_cidr() -> None:
    with pytest.raises(ValueError, match="not an address or CIDR"):
        GatewaySettings(trusted_proxies="10.0.0.0/8, example.com")
    assert GatewaySettings().trusted_networks == ()
