"""Replay from a data directory and from a topic, on the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime

import pytest

from adcast.config import to_env
from adcast.data.files import write_records
from adcast.kafka import create_topics
from adcast.replay import TopicRange, event_producer, parse_time, replay, replay_topic
from adcast.wire import serde

pytestmark = pytest.mark.integration
T0 = 1_767_225_600_000  # event times: 2026-01-01
GARBAGE = b"\x00\x00\x00\x00\x63junk"  # schema id 99: no such id


def event(n: int, user: str, t: int, kind: str = "click") -> dict:
    return {
        "event_id": f"e{n}",
        "user_id": user,
        "event_time": t,
        "event_type": kind,
        "advertiser_id": f"a{n % 5}",
        "item_id": None,
        "category": "shoes",
        "brand": None,
        "text": None,
    }


def make_topic(settings, name: str) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = settings.topics.prefix + name
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]).values():
        fut.result(timeout=30)
    return topic


def fill_source(settings, topic: str, count: int, ts0: int, invalid_at: frozenset[int] = frozenset()) -> list[dict]:
    """Produce `count` messages (message i stamped ts0 + i s) over six users; returns them as produced,
    with their partition and offset. Message i in `invalid_at` is garbage or breaks the contract."""
    producer = event_producer(settings)
    sent: list[dict] = []
    for i in range(count):
        user = f"u{i % 6}"
        if i in invalid_at:
            value = GARBAGE if i % 2 else serde.encode(serde.EVENT, event(i, user, 1000))  # 1970: event_time_too_old
        else:
            # Not monotonic per user: the merge must still keep each partition's order.
            value = serde.encode(
                serde.EVENT, event(i, user, T0 + i * 100 - (i % 3) * 150, "view" if i % 4 else "click")
            )
        item = {"i": i, "key": user.encode(), "value": value, "ts": ts0 + i * 1000, "valid": i not in invalid_at}

        def done(err, msg, item=item):
            assert err is None, err
            item["partition"], item["offset"] = msg.partition(), msg.offset()

        producer.produce(topic, key=item["key"], value=value, timestamp=item["ts"], on_delivery=done)
        sent.append(item)
    assert producer.flush(30) == 0
    return sent


def read(topic_reader, settings, topic: str, count: int) -> list:
    out = topic_reader(settings.kafka.bootstrap_servers, topic, lambda got: len(got) >= count, 30)
    assert len(out) == count, f"{topic}: {len(out)} messages, expected {count}"
    time.sleep(0.3)
    extra = topic_reader(settings.kafka.bootstrap_servers, topic, lambda got: len(got) > count, 1)
    assert len(extra) == count, f"{topic}: more than the {count} expected messages"
    return out


def per_key(items) -> dict[bytes, list[bytes]]:
    grouped: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value in items:
        grouped[key].append(value)
    return dict(grouped)


def expected_per_key(sent: list[dict]) -> dict[bytes, list[bytes]]:
    # A key lives in one source partition: its order there is its offset order.
    ordered = sorted((s for s in sent if s["valid"]), key=lambda s: (s["partition"], s["offset"]))
    return per_key((s["key"], s["value"]) for s in ordered)


def check_dead_letters(settings, topic_reader, source: str, invalid: list[dict]) -> None:
    letters = read(topic_reader, settings, settings.topics.name("dead_letters"), len(invalid))
    got = sorted(
        (d["partition"], d["offset"], d["raw"], d["stage"], d["source_topic"])
        for d in (serde.decode(serde.DEAD_LETTER, m.value()) for m in letters)
    )
    want = sorted(
        (s["partition"], s["offset"], s["value"], "decode" if s["value"] == GARBAGE else "validate", source)
        for s in invalid
    )
    assert got == want


def test_offset_range_copies_exactly_those_records_in_order_per_key(settings, broker, topic_reader):
    create_topics(settings)
    source = make_topic(settings, "source")
    sent = fill_source(settings, source, 48, int(time.time() * 1000) - 3_600_000, frozenset({5, 9, 30}))
    rng = TopicRange(start_offset=3, end_offset=17)
    in_range = [s for s in sent if 3 <= s["offset"] < 17]
    assert {s["partition"] for s in in_range} == {0, 1}, "the test wants records on both partitions"

    summary = replay_topic(settings, source, rng, progress=False, collect=True)

    valid = [s for s in in_range if s["valid"]]
    invalid = [s for s in in_range if not s["valid"]]
    assert invalid, "the test wants an invalid record inside the range"
    dest = settings.topics.name("events")
    assert summary.events == len(valid) and summary.topics[dest] == len(valid)
    assert summary.dead_lettered == len(invalid) == summary.invalid.total()
    out = read(topic_reader, settings, dest, len(valid))
    # Values byte for byte, every user's events in their source order; keys murmur2-partitioned.
    assert per_key((m.key(), m.value()) for m in sorted(out, key=lambda m: (m.partition(), m.offset()))) == (
        expected_per_key(valid)
    )
    assert len({m.partition() for m in out if m.key() == b"u0"}) == 1
    check_dead_letters(settings, topic_reader, source, invalid)
    assert {d.user_id for d in summary.delivered} == {s["key"].decode() for s in valid}


def test_time_range_uses_record_timestamps(settings, broker, topic_reader):
    create_topics(settings)
    source = make_topic(settings, "source")
    ts0 = int(time.time() * 1000) - 3_600_000
    sent = fill_source(settings, source, 40, ts0, frozenset({21}))
    start, end = ts0 + 12_000, ts0 + 31_000  # messages 12..30
    to_topic = make_topic(settings, "copy")

    summary = replay_topic(
        settings, source, TopicRange(start_time=start, end_time=end), to_topic=to_topic, progress=False
    )

    in_range = [s for s in sent if start <= s["ts"] < end]
    valid = [s for s in in_range if s["valid"]]
    assert [s["i"] for s in in_range] == list(range(12, 31))
    assert summary.events == len(valid) and summary.invalid == {"decode:unknown_schema_id": 1}
    assert settings.topics.name("events") not in summary.topics
    out = read(topic_reader, settings, to_topic, len(valid))
    assert per_key((m.key(), m.value()) for m in sorted(out, key=lambda m: (m.partition(), m.offset()))) == (
        expected_per_key(valid)
    )
    check_dead_letters(settings, topic_reader, source, [s for s in in_range if not s["valid"]])


def test_cli_replays_a_time_range_given_as_iso_and_epoch_ms(settings, broker, topic_reader):
    create_topics(settings)
    source = make_topic(settings, "source")
    ts0 = int(time.time() * 1000) - 3_600_000
    sent = fill_source(settings, source, 20, ts0)
    start_iso = datetime.fromtimestamp((ts0 + 4_000) / 1000, UTC).isoformat()
    args = ["replay", "--from-topic", source, "--start-time", start_iso, "--end-time", str(ts0 + 15_000)]
    out = subprocess.run(
        [sys.executable, "-m", "adcast.cli", *args, "--quiet"],
        env={**os.environ, **to_env(settings)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("replayed 11 events in ")
    assert f"{settings.topics.name('events')}: 11" in out.stdout
    got = read(topic_reader, settings, settings.topics.name("events"), 11)
    assert sorted(m.value() for m in got) == sorted(s["value"] for s in sent[4:15])


@pytest.mark.parametrize("source_kind", ["files", "topic"])
def test_speedup_paces_by_the_original_event_times(settings, broker, topic_reader, tmp_path, source_kind):
    create_topics(settings)
    # 3 s of event time, with a gap and two events at the same time; speedup 2 -> at least 1.5 s.
    offsets_ms = [0, 100, 100, 400, 1700, 2000, 2900, 3000]
    events = [event(n, f"u{n % 3}", T0 + ms) for n, ms in enumerate(offsets_ms)]
    if source_kind == "files":
        data = tmp_path / "data"
        write_records(data, "events", events)
        write_records(data, "profiles", [{"user_id": "u0", "attributes": {"age": "25-34"}, "updated_at": T0}])
        write_records(data, "advertisers", [{"advertiser_id": "a1", "name": "Velora", "category": "shoes"}])
        summary = replay(settings, data, speedup=2.0, progress=False)
        assert summary.profiles == summary.advertisers == 1
    else:
        source = make_topic(settings, "source")
        producer = event_producer(settings)
        for e in events:
            producer.produce(source, key=e["user_id"].encode(), value=serde.encode(serde.EVENT, e))
        assert producer.flush(30) == 0
        summary = replay_topic(settings, source, speedup=2.0, live=True, progress=False)
    assert summary.events == len(events)
    # The rate is that of the paced events alone, not the set-up around them (the schedule itself:
    # tests/unit/test_pacer.py).
    assert 0 < summary.event_seconds <= summary.seconds
    assert summary.events_per_second == pytest.approx(len(events) / summary.event_seconds)

    out = read(topic_reader, settings, settings.topics.name("events"), len(events))
    decoded = sorted(
        ((serde.decode(serde.EVENT, m.value()), m.timestamp()[1]) for m in out), key=lambda d: d[0]["event_id"]
    )
    first = decoded[0][1]
    for (record, stamp), ms in zip(decoded, offsets_ms, strict=True):
        # Produced no sooner than due: the creation timestamp is taken when produce() is called.
        assert stamp - first >= ms / 2 - 5, (record["event_id"], stamp - first, ms / 2)
        if source_kind == "topic":  # --live: the produce time, the rest unchanged
            assert abs(record["event_time"] - stamp) < 1000
            original = events[int(record["event_id"][1:])]
            assert {**record, "event_time": 0} == {**original, "event_time": 0}
    assert decoded[-1][1] - first >= 1500 - 5


def test_data_directory_skips_invalid_events_and_honours_to_topic_and_limit(settings, broker, topic_reader, tmp_path):
    create_topics(settings)
    to_topic = make_topic(settings, "copy")
    data = tmp_path / "data"
    events = [event(n, f"u{n % 2}", T0 + n) for n in range(6)]
    events.insert(2, {**event(90, "u0", T0), "event_type": "teleport"})
    events.insert(4, {**event(91, "", T0)})
    write_records(data, "events", events)
    write_records(data, "profiles", [])
    write_records(data, "advertisers", [])

    summary = replay(settings, data, to_topic=to_topic, limit=5, progress=False)

    assert summary.events == 5 and dict(summary.topics) == {
        to_topic: 5,
        settings.topics.name("profiles"): 0,
        settings.topics.name("advertisers"): 0,
    }
    assert summary.invalid == {"validate:unknown_event_type": 1, "validate:empty_user_id": 1}
    assert summary.dead_lettered == 0
    out = read(topic_reader, settings, to_topic, 5)
    assert sorted(serde.decode(serde.EVENT, m.value())["event_id"] for m in out) == [f"e{n}" for n in range(5)]


def test_parse_time_reads_iso_and_epoch_ms():
    assert parse_time("1767225600000") == T0
    assert parse_time("2026-01-01T00:00:00Z") == T0
    assert parse_time("2026-01-01T01:00:00+01:00") == T0
    assert parse_time("2026-01-01 00:00:00.250") == T0 + 250  # no zone: UTC
    for bad in ["1767225600", "yesterday"]:
        with pytest.raises(ValueError, match="epoch"):
            parse_time(bad)


@pytest.mark.parametrize(
    "args, message",
    [
        (["replay", "d", "--rate", "10", "--speedup", "2"], "not allowed with argument"),
        (["replay", "d", "--start-offset", "3"], "need --from-topic"),
        (["replay"], "either a data directory or --from-topic"),
        (["replay", "--from-topic", "t", "--start-offset", "1", "--end-time", "1767225600000"], "not both"),
        (["replay", "--from-topic", "t", "--start-offset", "5", "--end-offset", "5"], "must be greater"),
        (["replay", "d", "--rate", "fast"], "not a rate"),
    ],
)
def test_cli_rejects_contradictory_options(args, message):
    out = subprocess.run([sys.executable, "-m", "adcast.cli", *args], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr, out.stderr
