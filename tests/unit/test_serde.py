import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adcast import serde
from adcast.core.events import EVENT_TYPES
from adcast.errors import SerdeError

EVENT = {
    "event_id": "e1",
    "user_id": "u1",
    "event_time": 1_767_225_600_000,
    "event_type": "click",
    "advertiser_id": "a1",
    "item_id": None,
    "category": "shoes",
    "brand": None,
    "text": "red shoes",
}


def test_wire_format_header_is_magic_zero_and_fixed_schema_id():
    data = serde.encode(serde.EVENT, EVENT)
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert schema_id == serde.registry().by_name[serde.EVENT].id == 1


def test_every_schema_has_a_distinct_id():
    reg = serde.registry()
    assert len({s.id for s in reg.by_name.values()}) == len(reg.by_name) == 7


optional = st.none() | st.text(max_size=20)


@given(
    st.fixed_dictionaries(
        {
            "event_id": st.text(min_size=1, max_size=40),
            "user_id": st.text(min_size=1, max_size=40),
            "event_time": st.integers(min_value=0, max_value=2**62),
            "event_type": st.sampled_from(EVENT_TYPES),
            "advertiser_id": optional,
            "item_id": optional,
            "category": optional,
            "brand": optional,
            "text": optional,
        }
    )
)
def test_event_round_trip(record):
    assert serde.decode(serde.EVENT, serde.encode(serde.EVENT, record)) == record


def test_request_round_trip_with_nested_history():
    record = {
        "user_id": "u1",
        "version": 42,
        "reason": "quiet",
        "newest_event_time": 5,
        "enqueued_at": 6,
        "profile": {"age": "25-34"},
        "events": [
            {
                "event_time": 5,
                "event_type": "click",
                "advertiser_id": "a1",
                "category": None,
                "brand": None,
                "text": None,
            }
        ],
        "own": ["a1"],
    }
    assert serde.decode(serde.REQUEST, serde.encode(serde.REQUEST, record)) == record


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_value"),
        (None, "empty_value"),
        (b"\x00\x00\x00", "truncated"),
        (b"\x01\x00\x00\x00\x01rest", "bad_magic"),
        (b"\x00\x00\x00\x03\xe7body", "unknown_schema_id"),
    ],
)
def test_garbage_raises_one_typed_error(data, reason):
    with pytest.raises(SerdeError) as err:
        serde.decode(serde.EVENT, data)
    assert err.value.reason == reason


def test_truncated_body_and_trailing_bytes_and_wrong_schema():
    good = serde.encode(serde.EVENT, EVENT)
    with pytest.raises(SerdeError) as err:
        serde.decode(serde.EVENT, good[:-4])
    assert err.value.reason in {"truncated", "corrupt_body"}
    with pytest.raises(SerdeError) as err:
        serde.decode(serde.EVENT, good + b"\x00\x01")
    assert err.value.reason == "trailing_bytes"
    with pytest.raises(SerdeError) as err:
        serde.decode(serde.REQUEST, good)
    assert err.value.reason == "wrong_schema"


@given(st.binary(min_size=5, max_size=200))
def test_random_bytes_never_escape_as_foreign_exceptions(body):
    with contextlib.suppress(SerdeError):
        serde.decode(serde.EVENT, b"\x00\x00\x00\x00\x01" + body)
