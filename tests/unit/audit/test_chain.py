import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.audit.chain import GENESIS_HASH, ChainEvent, format_time, parse_time

pytestmark = pytest.mark.unit


def event(**kw):
    values = dict(
        org_id="org-1",
        seq=1,
        id="00000000-0000-4000-8000-000000000001",
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        actor_id="u-1",
        action="secret.reveal",
        outcome="ALLOWED",
        work_order_id="w-1",
        secret_ref_id="s-1",
        target_type="SecretRef",
        target_id="s-1",
        trace_id="",
        source_ip="",
        service="secrets",
        prev_hash=GENESIS_HASH,
        details={"b": "2", "a": "1"},
    )
    values.update(kw)
    return ChainEvent(**values)


def test_the_encoding_is_canonical_and_stable():
    e = event()
    assert e.canonical() == (
        b'{"action":"secret.reveal","actor_id":"u-1","details":{"a":"1","b":"2"},'
        b'"id":"00000000-0000-4000-8000-000000000001","occurred_at":"2026-01-02T03:04:05.000006Z",'
        b'"org_id":"org-1","outcome":"ALLOWED","prev_hash":"' + GENESIS_HASH.encode() + b'",'
        b'"secret_ref_id":"s-1","seq":1,"service":"secrets","source_ip":"","target_id":"s-1",'
        b'"target_type":"SecretRef","trace_id":"","v":1,"work_order_id":"w-1"}'
    )
    assert e.compute_hash() == hashlib.sha256(e.canonical()).hexdigest()


def test_the_same_instant_in_another_zone_hashes_the_same():
    shifted = datetime(2026, 1, 2, 5, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))
    assert event(occurred_at=shifted).compute_hash() == event().compute_hash()


def test_prev_hash_is_covered():
    assert event(prev_hash="1" * 64).compute_hash() != event().compute_hash()


def test_time_formats():
    assert format_time(parse_time("2026-01-02 04:04:05.000006+01")) == "2026-01-02T03:04:05.000006Z"
    with pytest.raises(ValueError):
        parse_time("2026-01-02 03:04:05")
