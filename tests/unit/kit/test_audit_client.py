from datetime import UTC, datetime, timedelta, timezone

import pytest
from doorward.audit.v1 import audit_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import DeclarativeBase

from doorward_kit.audit_client import (
    ALLOWED_DETAIL_KEYS,
    AuditDetailsError,
    AuditOutboxMixin,
    AuditRecord,
    Outcome,
    backoff_delay,
    clean_details,
    clean_ip,
    looks_personal,
)
from doorward_kit.db import new_metadata
from doorward_kit.net import canonical_ip
from tests.fixtures.addresses import ADDRESS_LIKE

pytestmark = pytest.mark.unit


def _record(**overrides):
    values = {
        "org_id": "org-1",
        "actor_id": "5b0c3f7e-3a59-4b1e-9d0c-1f1e2d3c4b5a",
        "action": "secret.reveal",
        "outcome": Outcome.ALLOWED,
    }
    values.update(overrides)
    return AuditRecord(**values)


def test_defaults_fill_id_time_and_trace():
    record = _record()
    assert len(record.id) == 36
    assert record.occurred_at.tzinfo is not None
    assert datetime.now(UTC) - record.occurred_at < timedelta(seconds=5)
    assert record.trace_id == ""  # outside a span


def test_proto_round_trip_keeps_every_field():
    record = _record(
        target_type="SecretRef",
        target_id="s-1",
        work_order_id="w-1",
        secret_ref_id="s-1",
        source_ip="10.0.0.7",
        details={"reason": "outside_window", "count": 3, "mfa": True},
        trace_id="ab" * 16,
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2))),
    )
    message = record.to_proto("secrets")
    assert message.service == "secrets"
    assert message.outcome == audit_pb2.ALLOWED
    back = AuditRecord.from_proto(audit_pb2.AuditEvent.FromString(message.SerializeToString()))
    assert back == record
    assert back.details == {"reason": "outside_window", "count": "3", "mfa": "true"}
    assert back.occurred_at == datetime(2026, 1, 2, 1, 4, 5, 678000, tzinfo=UTC)


@pytest.mark.parametrize("key", ["email", "name", "phone", "address", "value", "note", "token"])
def test_details_refuse_keys_outside_the_allow_list(key):
    with pytest.raises(AuditDetailsError, match="not allowed"):
        _record(details={key: "x"})


@pytest.mark.parametrize(
    "value",
    [
        "jane.doe@example.com",
        "+33 6 12 34 56 78",
        "(555) 123-4567",
        "0612345678",
        "call 555.123.4567",
        "5b0c3f7e-3a59-4b1e-9d0c-1f1e2d3c4b5a,+44 20 7946 0958",
    ],
)
def test_details_refuse_values_that_look_like_contact_data(value):
    with pytest.raises(AuditDetailsError) as caught:
        _record(details={"reason": value})
    # The refusal never echoes the value it refused.
    assert value not in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [
        "outside_window",
        "5b0c3f7e-3a59-4b1e-9d0c-1f1e2d3c4b5a",
        "2026-11-23T10:00:00+00:00",
        "42",
        "DOOR_CODE",
        "5b0c3f7e-3a59-4b1e-9d0c-1f1e2d3c4b5a,123e4567-e89b-12d3-a456-426614174000",
        "ab12345678cd" * 2,
        "v20261123",
    ],
)
def test_details_accept_ids_enums_numbers_and_times(value):
    assert not looks_personal(value)
    assert clean_details({"reason": value}) == {"reason": value}


def test_details_refuse_non_scalar_values_and_too_many_keys():
    with pytest.raises(AuditDetailsError):
        clean_details({"reason": ["a"]})
    too_many = dict.fromkeys(sorted(ALLOWED_DETAIL_KEYS)[:33], "x")
    with pytest.raises(AuditDetailsError):
        clean_details(too_many)


def test_ids_must_be_pseudonymous():
    with pytest.raises(AuditDetailsError):
        _record(actor_id="jane.doe@example.com")
    with pytest.raises(AuditDetailsError):
        _record(target_id="+33 6 12 34 56 78")


@pytest.mark.parametrize("action", ["", "reveal", "Secret.Reveal", "secret reveal", "secret."])
def test_action_must_be_dotted_lower_case(action):
    # Twice: the check is remembered per value (audit_client._is_action), a refusal too.
    for _ in range(2):
        with pytest.raises(AuditDetailsError):
            _record(action=action)
    assert _record(action="customer.contact.read").action == "customer.contact.read"


@settings(max_examples=200)
@given(ADDRESS_LIKE)
def test_an_events_address_is_cleaned_by_the_one_address_check(value):
    # doorward_kit.net.canonical_ip is tested in tests/unit/kit/test_canonical_ip.py.
    assert clean_ip(value) == canonical_ip(value)


def test_org_is_required_and_time_needs_a_zone():
    with pytest.raises(AuditDetailsError):
        _record(org_id="")
    with pytest.raises(AuditDetailsError):
        _record(occurred_at=datetime(2026, 1, 1))


def test_source_ip_keeps_only_addresses():
    assert _record(source_ip=" 192.168.1.2 ").source_ip == "192.168.1.2"
    assert _record(source_ip="::1").source_ip == "::1"
    assert _record(source_ip="evil; DROP TABLE").source_ip == ""


def test_from_proto_refuses_a_missing_outcome():
    message = _record().to_proto()
    message.outcome = audit_pb2.OUTCOME_UNSPECIFIED
    with pytest.raises(AuditDetailsError):
        AuditRecord.from_proto(message)


def test_backoff_grows_is_capped_and_jittered():
    assert backoff_delay(1, rand=lambda: 1.0) == 0.5
    assert backoff_delay(2, rand=lambda: 1.0) == 1.0
    assert backoff_delay(4, rand=lambda: 1.0) == 4.0
    assert backoff_delay(100, rand=lambda: 1.0) == 10.0
    assert backoff_delay(100, rand=lambda: 0.0) == 5.0
    assert 0.25 <= backoff_delay(1) <= 0.5


def test_outbox_mixin_columns_and_pending_index():
    class Base(DeclarativeBase):
        metadata = new_metadata()

    class AuditOutbox(AuditOutboxMixin, Base):
        __tablename__ = "audit_outbox"

    table = AuditOutbox.__table__
    assert {c.name for c in table.columns} == {
        "id",
        "payload",
        "created_at",
        "attempts",
        "next_attempt_at",
    }
    assert [c.name for c in table.primary_key] == ["id"]
    assert any([c.name for c in ix.columns] == ["next_attempt_at"] for ix in table.indexes)


def _looks_personal_in_full(value: str) -> bool:
    """looks_personal without its shortcut (no @ and too few digits): every check, in order."""
    from doorward_kit.audit_client import _is_uuid
    from doorward_kit.audit_client import _looks_personal_in_full as checks

    return not _is_uuid(value) and checks(value)


_PERSONALISH = st.text(alphabet="0123456789 +-().@abcxyzA_/,:T²٣", max_size=40)


@given(st.one_of(_PERSONALISH, st.text(max_size=40)))
@settings(max_examples=2000, deadline=None)
def test_the_shortcut_of_looks_personal_never_changes_its_answer(value):
    """The shortcut skips the checks only where none of them could find anything: the same
    answer as the full checks for any text (digits of every script, emails, phones, ids)."""
    assert looks_personal(value) == _looks_personal_in_full(value)


@pytest.mark.parametrize(
    "value",
    ["a@b.co", "+44 20 7946 0991", "0791 123 4567", "call 5551234", "x@y.z,5b0c3f7e"],
)
def test_personal_values_are_still_refused(value):
    assert looks_personal(value)
    with pytest.raises(AuditDetailsError):
        clean_details({"reason": value})
