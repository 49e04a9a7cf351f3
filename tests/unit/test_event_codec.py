"""The hand-written event decoder answers exactly as fastavro (serde.decode) does: the same
record for every valid message, and the same SerdeError reason for every mangled one."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adcast import serde
from adcast.errors import SerdeError
from adcast.event_codec import decode_event

text = st.text(max_size=30)
optional = st.none() | text
records = st.fixed_dictionaries(
    {
        "event_id": text,
        "user_id": text,
        "event_time": st.integers(-(2**63), 2**63 - 1),
        "event_type": text,
        "advertiser_id": optional,
        "item_id": optional,
        "category": optional,
        "brand": optional,
        "text": optional,
    }
)


def _outcome(decode, data):
    try:
        return ("ok", decode(data))
    except SerdeError as exc:
        return ("error", exc.reason)


@settings(max_examples=400, deadline=None)
@given(records)
def test_valid_messages_decode_to_the_same_record(record):
    data = serde.encode(serde.EVENT, record)
    assert decode_event(data) == serde.decode(serde.EVENT, data) == record


@settings(max_examples=600, deadline=None)
@given(records, st.data())
def test_mangled_messages_get_the_same_answer_as_fastavro(record, data):
    raw = bytearray(serde.encode(serde.EVENT, record))
    how = data.draw(st.sampled_from(["flip", "cut", "extend", "insert"]))
    at = data.draw(st.integers(0, len(raw) - 1))
    if how == "flip":
        raw[at] = data.draw(st.integers(0, 255))
    elif how == "cut":
        del raw[at:]
    elif how == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=8))
    else:
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    mangled = bytes(raw)
    assert _outcome(decode_event, mangled) == _outcome(lambda d: serde.decode(serde.EVENT, d), mangled)


@pytest.mark.parametrize("data", [None, b"", b"\x00\x00", serde.header(serde.PROFILE) + b"\x02a"])
def test_messages_that_are_not_events_keep_their_reasons(data):
    assert _outcome(decode_event, data) == _outcome(lambda d: serde.decode(serde.EVENT, d), data)
    assert _outcome(decode_event, data)[0] == "error"
