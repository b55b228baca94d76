"""doorward_kit.net.canonical_ip: the one check of a client address (the gateway's signed
address header, an audit event's source address). Remembered, so it must answer as the plain
parse would, and must not keep what nobody verified."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings

from doorward_kit.net import _canonical_ip, canonical_ip
from tests.fixtures.addresses import ADDRESS_LIKE

pytestmark = pytest.mark.unit


def _reference(value: str) -> str:
    value = (value or "").strip()
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return ""
    if "%" in value:
        return ""  # an IPv6 zone id is free text
    return str(address)


@settings(max_examples=300)
@given(ADDRESS_LIKE)
def test_every_answer_is_the_plain_parse_first_time_and_from_memory(value: str) -> None:
    assert canonical_ip(value) == _reference(value)
    assert canonical_ip(value) == _reference(value)


@pytest.mark.parametrize(
    "value", ['fe80::1%<b>x y"', "::ffff:1.2.3.4%DROP TABLE;--", "fe80::1%eth0"]
)
def test_an_ipv6_zone_id_is_refused(value: str) -> None:
    assert canonical_ip(value) == ""


def test_a_long_value_is_refused_and_never_remembered() -> None:
    """The header arrives before the signature is checked: a megabyte of it must not stay in
    memory, whatever it says."""
    before = _canonical_ip.cache_info().currsize
    for n in range(50):
        assert canonical_ip(" " * 70 + f"10.0.0.{n}") == "10.0.0." + str(n)  # spaces stripped
        assert canonical_ip(f"{n}" * 100_000) == ""
    # Only the 50 short addresses can have been remembered, never the long values.
    assert _canonical_ip.cache_info().currsize <= before + 50
