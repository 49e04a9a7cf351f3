"""The hand-written event decoder answers exactly as fastavro (serde.decode) does: the same
record for every valid message, and the same SerdeError reason for every mangled one, never
another exception. The fuzz tests below feed it random bytes, random bodies behind a valid header
and valid messages mangled several times over; CI runs a short budget, and a long run takes
FUZZ_EXAMPLES from the environment (`FUZZ_EXAMPLES=100000 pytest tests/unit/test_event_codec.py`).
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adcast.errors import SerdeError
from adcast.wire import serde
from adcast.wire.event_decoder import decode_event

text = st.text(max_size=30)
optional = st.none() | text
records = st.fixed_dictionaries(
    {
        "event_id": text,
        "user_id": text,
        "event_time": st.integers(-(2**63), 2**63 - 1),
        "event_type": st.sampled_from(["click", "impression", "search"]) | text,
        "advertiser_id": optional,
        "item_id": optional,
        "category": optional,
        "brand": optional,
        "text": optional,
    }
)


EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


def _outcome(decode, data):
    """("ok", record) or ("error", reason); any other exception fails the test where it is raised."""
    try:
        return ("ok", decode(data))
    except SerdeError as exc:
        return ("error", exc.reason)


def _same_as_fastavro(data: bytes) -> None:
    assert _outcome(decode_event, data) == _outcome(lambda d: serde.decode(serde.EVENT, d), data)


@settings(max_examples=400, deadline=None)
@given(records)
def test_valid_messages_decode_to_the_same_record(record):
    data = serde.encode(serde.EVENT, record)
    assert decode_event(data) == serde.decode(serde.EVENT, data) == record


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data):
    _same_as_fastavro(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bodies_behind_an_event_header(body):
    _same_as_fastavro(serde.header(serde.EVENT) + body)


def _mutate(raw: bytearray, data: st.DataObject) -> None:
    how = data.draw(st.sampled_from(["flip", "cut", "extend", "insert", "delete", "repeat", "varint"]))
    at = data.draw(st.integers(0, max(0, len(raw) - 1)))
    if how == "flip":
        if raw:
            raw[at] = data.draw(st.integers(0, 255))
    elif how == "cut":
        del raw[at:]
    elif how == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=16))
    elif how == "insert":
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    elif how == "delete":
        del raw[at : at + data.draw(st.integers(1, 8))]
    elif how == "repeat":
        raw[at:at] = raw[at : at + data.draw(st.integers(1, 16))]
    else:  # a length or union index that runs far past the end, or is negative
        raw[at:at] = data.draw(
            st.sampled_from([b"\xff\xff\xff\xff\x0f", b"\x01", b"\x03", b"\x80\x80\x80\x80\x80\x01"])
        )


@FUZZ
@given(records, st.data())
def test_valid_messages_mangled_several_times(record, data):
    raw = bytearray(serde.encode(serde.EVENT, record))
    for _ in range(data.draw(st.integers(1, 4))):
        _mutate(raw, data)
    _same_as_fastavro(bytes(raw))


@pytest.mark.parametrize("data", [None, b"", b"\x00\x00", serde.header(serde.PROFILE) + b"\x02a"])
def test_messages_that_are_not_events_keep_their_reasons(data):
    _same_as_fastavro(data)
    assert _outcome(decode_event, data)[0] == "error"
