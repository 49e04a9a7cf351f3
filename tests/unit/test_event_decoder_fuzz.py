"""Fuzzing the stream tier's hand-written event decoder: random bytes, random bodies behind a valid
header, and valid messages mangled several times over. Whatever arrives, the decoder answers as
fastavro does (serde.decode): the same record, or a SerdeError with the same reason, and never
another exception.

CI runs a short budget; a long run takes FUZZ_EXAMPLES from the environment, e.g.
`FUZZ_EXAMPLES=200000 pytest tests/unit/test_event_decoder_fuzz.py`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adcast import serde
from adcast.errors import SerdeError
from adcast.event_codec import decode_event

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

text = st.text(max_size=40)
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


def _answer(decode, data: bytes) -> tuple[str, object]:
    """("ok", record) or ("error", reason); any other exception fails the test where it is raised."""
    try:
        return ("ok", decode(data))
    except SerdeError as exc:
        return ("error", exc.reason)


def _same_as_fastavro(data: bytes) -> None:
    assert _answer(decode_event, data) == _answer(lambda d: serde.decode(serde.EVENT, d), data)


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
