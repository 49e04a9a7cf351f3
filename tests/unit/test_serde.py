import contextlib
import io
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adcast.core.events import EVENT_TYPES
from adcast.errors import SerdeError
from adcast.wire import serde

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


def test_every_schema_has_a_distinct_id_and_adcast_writes_each_records_newest():
    reg = serde.registry()
    assert len({s.id for s in reg.by_name.values()}) == len(reg.by_name) == 7
    assert sorted(reg.by_id) == list(range(1, 14))
    for name, newest in reg.by_name.items():
        assert newest.id == max(i for i, s in reg.by_id.items() if s.name == name)
        assert serde.header(name) == struct.pack(">bI", 0, newest.id)


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
        "shown": [
            {"advertiser_id": "a2", "category": "shoes", "after": False},
            {"advertiser_id": "a1", "category": None, "after": True},
        ],
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


class _Message:
    def __init__(self, value: bytes | None, key: bytes | None) -> None:
        self.value, self.key = value, key
        self.topic, self.partition, self.offset = "adcast.events", 3, 42


def test_a_dead_letter_carries_the_input_whole_when_it_fits():
    key, value = serde.dead_letter(_Message(b"\x00abc", b"u1"), "decode", "bad_magic", "magic 7", 1, 1 << 20)
    d = serde.decode(serde.DEAD_LETTER, value)
    assert key == b"u1"
    assert (d["raw"], d["key"], d["truncated"], d["raw_size"], d["key_size"]) == (b"\x00abc", b"u1", False, 4, 2)
    assert (d["source_topic"], d["partition"], d["offset"], d["reason"]) == (
        "adcast.events",
        3,
        42,
        "bad_magic: magic 7",
    )


def test_a_dead_letter_of_an_input_near_the_request_limit_is_cut_to_fit_and_says_so():
    limit = 1 << 20
    raw, long_key = bytes(range(256)) * (limit // 256), b"k" * 5000  # a value as large as a whole request
    key, value = serde.dead_letter(_Message(raw, long_key), "validate", "oversized", "x" * 10_000, 1, limit)
    assert len(value) + len(key) < limit
    d = serde.decode(serde.DEAD_LETTER, value)
    assert d["truncated"] and (d["raw_size"], d["key_size"]) == (len(raw), len(long_key))
    assert raw.startswith(d["raw"]) and long_key.startswith(d["key"]) and d["key"] == key
    assert d["reason"].startswith("oversized: x") and len(d["reason"]) < 3000


def test_a_dead_letter_of_the_first_version_reads_into_the_newest_with_defaults():
    import fastavro

    v1 = serde.registry().by_id[6]
    assert v1.name == serde.DEAD_LETTER and serde.registry().by_name[serde.DEAD_LETTER].id == 8
    old = {"raw": b"r", "key": None, "source_topic": "t", "partition": 0, "offset": 1, "stage": "decode",
           "reason": "bad_magic", "failed_at": 5}  # fmt: skip
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, 6))
    fastavro.schemaless_writer(buf, v1.parsed, old)
    assert serde.decode(serde.DEAD_LETTER, buf.getvalue()) == {
        **old,
        "truncated": False,
        "raw_size": -1,
        "key_size": -1,
    }
