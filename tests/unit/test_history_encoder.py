"""The hand-written UserHistory and PredictionRequest encoders write exactly what fastavro writes
for their schemas."""

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from adcast.core.history import Counter, HistoryEvent, Impression, ShownAd, UserHistory
from adcast.core.requests import PredictionRequest
from adcast.wire import serde
from adcast.wire.history_encoder import encode_history, encode_request

longs = st.integers(-(2**63), 2**63 - 1)
text = st.text(max_size=20)
events = st.builds(
    HistoryEvent,
    longs,
    text,
    st.none() | text,
    st.none() | text,
    st.none() | text,
    st.none() | text,
)
counters = st.builds(Counter, text, st.floats(allow_nan=False), longs)
impressions = st.builds(Impression, longs, text, st.none() | text)
histories = st.builds(
    UserHistory,
    user_id=text,
    version=longs,
    partition=st.integers(-(2**31), 2**31 - 1),
    profile=st.dictionaries(text, text, max_size=5),
    events=st.lists(events, max_size=30),
    counters=st.lists(counters, max_size=20),
    seen_ids=st.binary(max_size=300),
    newest_event_time=longs,
    pending_since=longs,
    last_event_at=longs,
    pending_high_value=st.booleans(),
    last_emit_at=longs,
    emitted_version=longs,
    impressions=st.lists(impressions, max_size=20),
    pending_engaged=st.booleans(),
    engaged_offset=longs,
)


def assert_written_as_fastavro_writes(raw: bytes, schema: str, value: UserHistory | PredictionRequest) -> None:
    """`raw` holds fastavro's bytes for `value` under `schema`, and reads back as `value`."""
    assert raw == serde.encode(schema, value.to_record())
    assert type(value).from_record(serde.decode(schema, raw)) == value


@settings(max_examples=300, deadline=None)
@given(histories)
def test_same_bytes_as_fastavro_and_round_trips(history):
    assert_written_as_fastavro_writes(encode_history(history), serde.HISTORY, history)


def test_an_event_shared_by_two_histories_encodes_the_same_in_both():
    e = HistoryEvent(1_767_225_600_000, "click", "a1", "shoes", None, "red")
    a = UserHistory("u1", events=[e])
    b = UserHistory("u2", events=[HistoryEvent(1, "view"), e])
    for h in (a, b, a):
        assert encode_history(h) == serde.encode(serde.HISTORY, h.to_record())


requests = st.builds(
    PredictionRequest,
    user_id=text,
    version=longs,
    reason=text,
    newest_event_time=longs,
    enqueued_at=longs,
    profile=st.dictionaries(text, text, max_size=5),
    events=st.lists(events, max_size=30).map(tuple),
    own=st.lists(text, max_size=20).map(tuple),
    shown=st.lists(st.builds(ShownAd, text, st.none() | text, st.booleans()), max_size=10).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(requests)
def test_requests_same_bytes_as_fastavro_and_round_trip(request):
    assert_written_as_fastavro_writes(encode_request(request), serde.REQUEST, request)


@settings(max_examples=100, deadline=None)
@given(histories, st.data())
def test_a_request_taken_from_a_history_encodes_right_after_the_history_and_after_it_changes(history, data):
    """The request reuses the events its history just encoded; a changed history must not leak in."""
    encode_history(history)
    request = PredictionRequest(
        history.user_id, history.version, "quiet", 1, 2, dict(history.profile), tuple(history.events)
    )
    assert_written_as_fastavro_writes(encode_request(request), serde.REQUEST, request)
    history.events.append(data.draw(events))
    encode_history(history)
    assert_written_as_fastavro_writes(encode_request(request), serde.REQUEST, request)


def test_requests_and_histories_of_the_previous_schema_version_read_into_the_current_one():
    """Records written before impressions reached the prompt (PredictionRequest id 4, UserHistory
    id 7) still read, with no ads shown: a rolling upgrade reads the old topics and state."""
    import fastavro

    old_history = UserHistory("u1", version=5, counters=[Counter("a1", 1.0, 7)], seen_ids=b"x" * 8)
    old_request = PredictionRequest(
        "u1", 5, "quiet", 7, 8, {"age": "25-34"}, (HistoryEvent(7, "click", "a1"),), ("a1",)
    )
    for schema_id, name, value in ((7, serde.HISTORY, old_history), (4, serde.REQUEST, old_request)):
        old = serde.registry().by_id[schema_id]
        assert old.name == name and serde.registry().by_name[name].id > schema_id
        record = {k: v for k, v in value.to_record().items() if k not in ("impressions", "shown")}
        buf = io.BytesIO()
        buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
        fastavro.schemaless_writer(buf, old.parsed, record)
        assert type(value).from_record(serde.decode(name, buf.getvalue())) == value


def test_records_written_before_the_now_mark_read_with_every_ad_shown_before_the_users_event():
    """PredictionRequest id 9 and UserHistory id 11 (no `after`, no `engaged_offset`) read into
    the current versions: ads shown before the newest event, and no event of the user's known."""
    import fastavro

    history = UserHistory("u1", version=5, impressions=[Impression(5, "a2", "shoes")], pending_engaged=True)
    request = PredictionRequest(
        "u1", 5, "quiet", 7, 8, {}, (HistoryEvent(7, "click", "a1"),), ("a1",), (ShownAd("a2", "shoes"),)
    )
    for schema_id, name, value in ((11, serde.HISTORY, history), (9, serde.REQUEST, request)):
        old = serde.registry().by_id[schema_id]
        assert old.name == name and serde.registry().by_name[name].id > schema_id
        record = value.to_record()
        record.pop("engaged_offset", None)
        for ad in record.get("shown", ()):
            del ad["after"]
        buf = io.BytesIO()
        buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
        fastavro.schemaless_writer(buf, old.parsed, record)
        decoded = type(value).from_record(serde.decode(name, buf.getvalue()))
        assert decoded == value
