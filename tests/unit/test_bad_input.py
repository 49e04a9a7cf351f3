"""Bad input at the stream tier's door, on the pure processor (the Faust worker: tests/stream/test_bad_input_worker.py).

Every kind of bad input becomes one dead letter with its stage and reason code and touches no
state; duplicates are dropped and counted (not dead-lettered); out-of-order events fold in
event-time order within the bounded history. No Faust import: this runs in both environments.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable

import fastavro
import pytest
from folding import MappingStore, load_history, on_batch, on_event, on_profile, on_tick
from hypothesis import given, settings
from hypothesis import strategies as st

from adcast.core.events import MAX_CLOCK_SKEW_MS, MAX_ID_CHARS, MAX_TEXT_CHARS, MIN_EVENT_TIME_MS, validate_event
from adcast.core.history import HistoryLimits
from adcast.core.text import MAX_TEXT_WORDS
from adcast.core.triggers import TriggerPolicy
from adcast.wire import serde
from stream.processor import EVENT, TICK, Input, StreamProcessor

NOW = 1_767_225_600_000
POLICY = TriggerPolicy(quiet_ms=500, max_delay_ms=2000, min_interval_ms=0)
REQUIRED = ("event_id", "user_id", "event_time", "event_type")


def record(n: int = 1, user: str = "u1", kind: str = "click", t: int | None = None, **extra: object) -> dict:
    return {
        "event_id": f"e{n}",
        "user_id": user,
        "event_time": NOW + n if t is None else t,
        "event_type": kind,
        "advertiser_id": "a1",
        "item_id": None,
        "category": "shoes",
        "brand": None,
        "text": None,
        **extra,
    }


def encoded(**change: object) -> bytes:
    return serde.encode(serde.EVENT, {**record(), **change})


def without_field(field: str) -> bytes:
    """An EngagementEvent body written by a producer whose schema lacks `field`, under id 1's header."""
    full = json.loads((serde.schema_dir() / "engagement_event.avsc").read_text())
    reduced = fastavro.parse_schema({**full, "fields": [f for f in full["fields"] if f["name"] != field]})
    body = io.BytesIO()
    fastavro.schemaless_writer(body, reduced, {k: v for k, v in record().items() if k != field})
    return serde.header(serde.EVENT) + body.getvalue()


def with_header(magic: int, schema_id: int) -> bytes:
    return struct.pack(">bI", magic, schema_id) + encoded()[5:]


def cut_inside_a_string() -> bytes:
    raw = encoded(category="running-shoes")
    return raw[: raw.index(b"running") + 3]


def invalid_utf8() -> bytes:
    raw = encoded(user_id="ab")
    return raw.replace(b"\x04ab", b"\x04\xff\xfe")


# (id, value, stage, reason): one dead letter each.
DEAD_LETTER_KINDS: list[tuple[str, Callable[[], bytes | None], str, str]] = [
    ("tombstone", lambda: None, "decode", "empty_value"),
    ("empty_value", lambda: b"", "decode", "empty_value"),
    ("short_header", lambda: b"\x00\x00\x00", "decode", "truncated"),
    ("truncated_avro", cut_inside_a_string, "decode", "truncated"),
    ("wrong_magic_byte", lambda: with_header(1, 1), "decode", "bad_magic"),
    ("not_avro_at_all", lambda: b"\x07not avro at all", "decode", "bad_magic"),
    ("unknown_schema_id", lambda: with_header(0, 99), "decode", "unknown_schema_id"),
    ("another_records_schema_id", lambda: with_header(0, 2), "decode", "wrong_schema"),
    ("trailing_bytes", lambda: encoded() + b"\x00", "decode", "trailing_bytes"),
    ("invalid_utf8", invalid_utf8, "decode", "corrupt_body"),
    # Avro binary carries no field names: a body written without a required field reads as
    # garbage under the full schema, and fails as whatever the misread bytes amount to.
    ("missing_event_id", lambda: without_field("event_id"), "decode", "truncated"),
    ("missing_user_id", lambda: without_field("user_id"), "decode", "truncated"),
    ("missing_event_time", lambda: without_field("event_time"), "decode", "truncated"),
    ("missing_event_type", lambda: without_field("event_type"), "decode", "corrupt_body"),
    ("unknown_event_type", lambda: encoded(event_type="poke"), "validate", "unknown_event_type"),
    ("event_type_wrong_case", lambda: encoded(event_type="Click"), "validate", "unknown_event_type"),
    ("far_future", lambda: encoded(event_time=NOW + 30 * 86_400_000), "validate", "event_time_in_future"),
    ("just_past_skew", lambda: encoded(event_time=NOW + MAX_CLOCK_SKEW_MS + 1), "validate", "event_time_in_future"),
    ("before_2000", lambda: encoded(event_time=MIN_EVENT_TIME_MS - 1), "validate", "event_time_too_old"),
    ("epoch_seconds", lambda: encoded(event_time=NOW // 1000), "validate", "event_time_too_old"),
    ("negative_time", lambda: encoded(event_time=-1), "validate", "event_time_too_old"),
    ("empty_user_id", lambda: encoded(user_id=""), "validate", "empty_user_id"),
    ("blank_user_id", lambda: encoded(user_id=" \t "), "validate", "empty_user_id"),
    ("oversized_user_id", lambda: encoded(user_id="u" * (MAX_ID_CHARS + 1)), "validate", "oversized_user_id"),
    ("empty_event_id", lambda: encoded(event_id=""), "validate", "empty_event_id"),
    ("oversized_event_id", lambda: encoded(event_id="e" * (MAX_ID_CHARS + 1)), "validate", "oversized_event_id"),
    ("oversized_advertiser_id", lambda: encoded(advertiser_id="a" * 129), "validate", "oversized_advertiser_id"),
    ("oversized_category", lambda: encoded(category="c" * 129), "validate", "oversized_category"),
]


@pytest.mark.parametrize(
    ("value", "stage", "reason"),
    [pytest.param(value, stage, reason, id=kind) for kind, value, stage, reason in DEAD_LETTER_KINDS],
)
def test_bad_input_is_one_dead_letter_with_its_reason_and_touches_no_state(value, stage, reason):
    p, table = StreamProcessor(HistoryLimits(), POLICY), MappingStore()
    on_event(p, table, encoded(), 0, 10, NOW)  # u1 already has a history and a pending trigger
    before = (dict(table.data), {k: dict(v) for k, v in p.pending.items()})
    raw = value()

    out = on_batch(p, table, [Input(EVENT, raw, 0, 11)], NOW)

    assert [(item.value, item.offset, d.stage, d.reason) for item, d in out.dead_letters] == [(raw, 11, stage, reason)]
    assert out.dead_letters[0][1].detail  # the DLQ record says why, not only the code
    assert out.events == 1 and out.duplicates == 0 and out.requests == []
    assert (dict(table.data), p.pending) == before
    assert load_history(table, "u1").version == 10


def test_dead_letters_in_a_batch_leave_the_good_events_around_them_folded():
    p, table = StreamProcessor(HistoryLimits(), POLICY), MappingStore()
    bad = [value() for _, value, _, _ in DEAD_LETTER_KINDS]
    inputs, offset = [], 0
    for i, raw in enumerate(bad):
        inputs.append(Input(EVENT, encoded(event_id=f"good{i}", event_time=NOW + i), 0, offset))
        inputs.append(Input(EVENT, raw, 0, offset + 1))
        offset += 2
    out = on_batch(p, table, inputs, NOW)
    assert [d.reason for _, d in out.dead_letters] == [reason for _, _, _, reason in DEAD_LETTER_KINDS]
    assert out.events == 2 * len(bad)
    history = load_history(table, "u1")
    assert history.version == offset - 2  # the newest good event's offset
    assert [e.event_time for e in history.events] == sorted(e.event_time for e in history.events)
    (request,) = on_tick(p, table, 0, NOW + 1000).requests
    assert request.version == offset - 2


def test_a_body_cut_inside_a_number_is_truncated_too():
    raw = encoded()
    cut = raw[: raw.index(b"\x04u1") + 5]  # event_id, user_id, then two bytes of the event_time varint
    out = on_event(StreamProcessor(HistoryLimits(), POLICY), MappingStore(), cut, 0, 1, NOW)
    assert [why.reason for _, why in out.dead_letters] == ["truncated"]


def test_event_time_bounds_are_inclusive():
    p, table = StreamProcessor(HistoryLimits(), POLICY), MappingStore()
    oldest = on_event(p, table, encoded(event_id="old", event_time=MIN_EVENT_TIME_MS), 0, 1, NOW)
    newest = on_event(p, table, encoded(event_id="new", event_time=NOW + MAX_CLOCK_SKEW_MS), 0, 2, NOW)
    assert oldest.dead_letters == [] and newest.dead_letters == []
    assert [e.event_time for e in load_history(table, "u1").events] == [MIN_EVENT_TIME_MS, NOW + MAX_CLOCK_SKEW_MS]


def test_ids_at_the_limit_are_accepted():
    user = "u" * MAX_ID_CHARS
    out = on_event(
        StreamProcessor(HistoryLimits(), POLICY),
        MappingStore(),
        encoded(event_id="e" * MAX_ID_CHARS, user_id=user),
        0,
        1,
        NOW,
    )
    assert out.dead_letters == []


def test_oversized_text_is_truncated_to_the_documented_limit_not_dead_lettered():
    words = [f"w{i}" for i in range(5000)]
    text = " ".join(words)
    assert validate_event(record(text=text), NOW).text == text[:MAX_TEXT_CHARS]
    p, table = StreamProcessor(HistoryLimits(), POLICY), MappingStore()
    out = on_event(p, table, encoded(event_type="search", text=text), 0, 7, NOW)
    assert out.dead_letters == []
    (kept,) = load_history(table, "u1").events
    assert kept.text == " ".join(words[:MAX_TEXT_WORDS])  # the history keeps only what the prompt shows
    one_long_word = "x" * 100_000
    on_event(p, table, encoded(event_id="e2", event_type="search", text=one_long_word), 0, 8, NOW)
    assert load_history(table, "u1").events[-1].text == "x" * MAX_TEXT_CHARS


def test_duplicate_event_ids_are_dropped_and_counted_not_dead_lettered():
    p, table = StreamProcessor(HistoryLimits(), POLICY), MappingStore()
    on_event(p, table, encoded(), 0, 10, NOW)
    first = dict(table.data)
    # A redelivered copy, and a different event reusing the id: both dropped, neither moves the version.
    again = on_event(p, table, encoded(), 0, 11, NOW + 5)
    reused = on_event(p, table, encoded(event_type="checkout", event_time=NOW + 50), 0, 12, NOW + 6)
    assert (again.duplicates, reused.duplicates) == (1, 1)
    assert again.dead_letters == [] and reused.dead_letters == []
    assert table.data == first
    # In one batch with its original: the first copy folds, the second is dropped.
    out = on_batch(
        p, table, [Input(EVENT, encoded(event_id="e2"), 0, 13), Input(EVENT, encoded(event_id="e2"), 0, 14)], NOW
    )
    assert (out.events, out.duplicates, out.dead_letters) == (2, 1, [])
    history = load_history(table, "u1")
    assert (history.version, len(history.events)) == (13, 2)


def test_dedupe_remembers_the_newest_window_of_ids_per_user():
    """The documented bound: a copy is recognised while its id is among the user's last
    `dedupe_window` (32 by default) ids; an older copy folds again."""
    assert HistoryLimits().dedupe_window == 32
    p, table = StreamProcessor(HistoryLimits(dedupe_window=4), POLICY), MappingStore()
    for n in range(5):
        on_event(p, table, encoded(event_id=f"e{n}", event_time=NOW + n), 0, n, NOW)
    assert on_event(p, table, encoded(event_id="e1", event_time=NOW + 1), 0, 5, NOW).duplicates == 1
    assert on_event(p, table, encoded(event_id="e0", event_time=NOW), 0, 6, NOW).duplicates == 0


def test_out_of_order_events_fold_in_event_time_order():
    p, table = StreamProcessor(HistoryLimits(), POLICY), MappingStore()
    arrivals = [(30, "click"), (10, "view"), (40, "impression"), (20, "save"), (5, "search")]
    for offset, (t, kind) in enumerate(arrivals, start=100):
        on_event(p, table, encoded(event_id=f"e{t}", event_type=kind, event_time=NOW + t), 0, offset, NOW)
    history = load_history(table, "u1")
    assert [(e.event_time - NOW, e.event_type) for e in history.events] == [
        (5, "search"),
        (10, "view"),
        (20, "save"),
        (30, "click"),
    ]
    assert history.version == 104  # the offset of the newest event read that changed the prompt
    assert history.newest_event_time == NOW + 40  # the impression changed the prompt too: freshness counts it
    (request,) = on_tick(p, table, 0, NOW + 1000).requests
    assert request.version == 104 and [e.event_time for e in request.events] == [NOW + t for t in (5, 10, 20, 30)]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 50_000), st.sampled_from(["click", "view", "impression", "save", "search"])),
        min_size=1,
        max_size=60,
    ),
    st.lists(st.integers(0, 59), max_size=10),
)
def test_any_arrival_order_keeps_the_history_sorted_bounded_and_versioned(events, redelivered):
    limits = HistoryLimits(min_events=4, dedupe_window=128)  # every id stays remembered (the window: test below)
    p, table = StreamProcessor(limits, POLICY), MappingStore()
    inputs = [
        Input(EVENT, encoded(event_id=f"e{i}", event_type=k, event_time=NOW + t), 0, i)
        for i, (t, k) in enumerate(events)
    ]
    for at in redelivered:  # at-least-once: earlier inputs again, at later offsets
        original = inputs[at % len(events)]
        inputs.append(Input(EVENT, original.value, 0, len(inputs)))
    inputs.insert(len(inputs) // 2, Input(TICK, None, 0, -1))
    out = on_batch(p, table, inputs, NOW)
    assert out.dead_letters == [] and out.duplicates == len(redelivered)
    history = load_history(table, "u1")
    times = [e.event_time for e in history.events]
    assert times == sorted(times)
    salient = [(i, t) for i, (t, k) in enumerate(events) if k != "impression"]
    assert len(history.events) <= min(len(salient), limits.max_events)
    if salient:
        assert len(history.events) >= min(len(salient), limits.min_events)
        assert times[-1] == NOW + max(t for _, t in salient)  # the newest by time is never trimmed away
    else:
        assert history.events == []
    # Every event changes the prompt (impressions enter the shown list): the version is the newest offset.
    assert history.version == len(events) - 1
    assert history.newest_event_time == NOW + max(t for t, _ in events)


def _home(user: str, partitions: int = 4) -> int:
    from adcast.core.partitioning import partition_for

    return partition_for(user.encode(), partitions)


@pytest.mark.parametrize(
    ("key", "partition_of", "reason"),
    [
        pytest.param(b"u2", _home, "key_mismatch", id="another_users_key"),
        pytest.param(None, _home, "key_mismatch", id="no_key"),
        pytest.param(b"u1", lambda user: (_home(user) + 1) % 4, "wrong_partition", id="crc32_producer"),
    ],
)
def test_records_that_break_the_partitioning_contract_are_dead_lettered_and_freeze_nobody(key, partition_of, reason):
    """The freeze this prevents: an event of u1 on another partition, at a higher offset, would
    raise u1's version there past every later event of u1's own partition."""
    p, table = StreamProcessor(HistoryLimits(), POLICY, partitions=4), MappingStore()
    home = _home("u1")
    assert on_event(p, table, encoded(event_id="e1"), home, 10, NOW, key=b"u1").dead_letters == []
    before = (dict(table.data), {k: dict(v) for k, v in p.pending.items()})

    raw = encoded(event_id="stray")
    out = on_batch(p, table, [Input(EVENT, raw, partition_of("u1"), 981, key=key)], NOW)

    assert [(d.stage, d.reason) for _, d in out.dead_letters] == [("validate", reason)]
    assert (dict(table.data), p.pending) == before
    # the user's next event on their own partition still folds
    assert on_event(p, table, encoded(event_id="e2"), home, 11, NOW, key=b"u1").dead_letters == []
    assert load_history(table, "u1").version == 11


def test_profiles_follow_the_same_partitioning_contract():
    p, table = StreamProcessor(HistoryLimits(), POLICY, partitions=4), MappingStore()
    profile = serde.encode(serde.PROFILE, {"user_id": "u1", "attributes": {"age": "30"}, "updated_at": NOW})
    wrong = (_home("u1") + 1) % 4
    assert [d.reason for _, d in on_profile(p, table, profile, wrong, NOW, key=b"u1").dead_letters] == [
        "wrong_partition"
    ]
    assert [d.reason for _, d in on_profile(p, table, profile, _home("u1"), NOW, key=b"x").dead_letters] == [
        "key_mismatch"
    ]
    assert table.data == {}
    assert on_profile(p, table, profile, _home("u1"), NOW, key=b"u1").dead_letters == []
    assert load_history(table, "u1").profile


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=64), partitions=st.integers(1, 64))
def test_partition_for_places_keys_where_the_java_client_and_aiokafka_do(key, partitions):
    from aiokafka.partitioner import DefaultPartitioner

    from adcast.core.partitioning import partition_for

    every = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, every, every)


@pytest.mark.parametrize(
    "user_id,reason",
    [("", "empty_user_id"), ("   ", "empty_user_id"), ("u" * (MAX_ID_CHARS + 1), "oversized_user_id")],
)
def test_a_profile_is_held_to_the_events_rule_for_user_ids(user_id, reason):
    """A blank user id is no id, in a profile as in an event: dead-lettered with the events' reason."""
    p, table = StreamProcessor(HistoryLimits(), POLICY, partitions=None), MappingStore()
    profile = serde.encode(serde.PROFILE, {"user_id": user_id, "attributes": {"age": "30"}, "updated_at": NOW})
    out = on_profile(p, table, profile, 0, NOW, key=user_id.encode())
    assert [(d.stage, d.reason) for _, d in out.dead_letters] == [("validate", reason)]
    assert table.data == {} and p.pending == {}
