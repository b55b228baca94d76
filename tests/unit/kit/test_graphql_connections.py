from datetime import UTC, datetime

import pytest

from doorward_kit.errors import DoorwardError
from doorward_kit.graphql import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    connection_page,
    decode_cursor,
    decode_time_cursor,
    encode_cursor,
    encode_time_cursor,
    page_size,
    split_page,
)

pytestmark = pytest.mark.unit


def test_page_size_defaults_and_caps():
    assert page_size(None) == DEFAULT_PAGE_SIZE == 50
    assert page_size(1000) == MAX_PAGE_SIZE == 200
    with pytest.raises(DoorwardError):
        page_size(-1)


def test_cursor_round_trip_and_rejects_foreign_cursors():
    cursor = encode_cursor("2026-11-23T10:00:00+00:00", "abc")
    assert decode_cursor(cursor, 2) == ["2026-11-23T10:00:00+00:00", "abc"]
    with pytest.raises(DoorwardError):
        decode_cursor(cursor, 3)
    with pytest.raises(DoorwardError):
        decode_cursor("%%%not-base64", 2)


def test_split_page_uses_the_extra_row_only_as_a_flag():
    rows, has_next = split_page([1, 2, 3], 2)
    assert rows == [1, 2]
    assert has_next
    assert split_page([1, 2], 2) == ([1, 2], False)


def test_connection_page_builds_edges_and_page_info():
    edges, info = connection_page([1, 2, 3], 2, lambda r: f"c{r}", lambda r: r * 10)
    assert [(e.cursor, e.node) for e in edges] == [("c1", 10), ("c2", 20)]
    assert info.has_next_page
    assert info.end_cursor == "c2"
    edges, info = connection_page([], 2, str, str)
    assert edges == []
    assert not info.has_next_page
    assert info.end_cursor is None


def test_time_cursor_round_trip_and_rejects_foreign_cursors():
    at = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert decode_time_cursor(encode_time_cursor(at, "abc")) == (at, "abc")
    assert decode_time_cursor(None) is None
    with pytest.raises(DoorwardError):
        decode_time_cursor(encode_cursor("not a time", "abc"))
    with pytest.raises(DoorwardError):
        decode_time_cursor(encode_cursor("42"))
