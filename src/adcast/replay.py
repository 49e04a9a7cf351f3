"""Replay events into a topic, from a data directory or from another topic.

Data directory: profiles and advertisers first, then events in event-time order (stable, so ties
keep file order), keyed by user id, Avro in the Confluent wire format. Events that break the
contract (adcast.core.events.validate_event) or do not encode are skipped and counted.

Topic: one partition range per source partition, either offsets (`start_offset` inclusive,
`end_offset` exclusive) or record timestamps (`start_time` inclusive, `end_time` exclusive, epoch
ms). Without an end, a partition is read up to its end when the replay reaches it. `offsets_for_times`
positions the start; each record's timestamp is then checked as well, so the range is exact even on
a broker whose time index is coarse (the local Tansu answers offset 0 for every timestamp), with
Kafka's meaning: from the first record at or after `start_time` to the first record at or after
`end_time`. Values are copied byte for byte (`live` re-stamps `event_time` through adcast.serde);
records that do not decode or validate go to the dead-letter topic with the stream tier's stage and
reason codes. Partitions are merged by event time (a partition's own order is never changed), so
the output order is deterministic.

Both: keys are user ids (a topic's keys are copied; a record without one gets its user id),
partitioned with murmur2 (the Java client's default), and one idempotent producer keeps each
user's events in order. Pacing is `rate` (events per second) or `speedup`
(X times faster than the original event times; an event older than the one before it goes at once).
`live` re-stamps each event with the wall-clock time at which it is produced: that is how the demo
and benchmarks measure freshness from a historical world.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adcast import serde
from adcast.config import Settings
from adcast.core.events import validate_event
from adcast.data.files import read_records
from adcast.errors import ConfigError, InvalidEvent, SerdeError, ServiceError
from adcast.kafka import confluent_config, require_topics

log = logging.getLogger(__name__)

# Records buffered per source partition while the merge waits for the others to catch up.
_MAX_BUFFERED = 20_000
# A source that delivers nothing for this long while the merge still waits on it is an error.
_STALL_S = 60.0
_EPOCH_MS_MIN = 10**11  # smaller digit strings are most likely epoch seconds


@dataclass(frozen=True, slots=True)
class Delivered:
    user_id: str
    event_type: str
    partition: int
    offset: int


@dataclass
class ReplaySummary:
    profiles: int = 0
    advertisers: int = 0
    events: int = 0
    seconds: float = 0.0  # the whole replay, reading the files and the profiles included
    event_seconds: float = 0.0  # producing the events: what the pacing controls
    delivered: list[Delivered] = field(default_factory=list)
    topics: Counter[str] = field(default_factory=Counter)  # messages produced per topic
    invalid: Counter[str] = field(default_factory=Counter)  # "stage:reason" -> records not replayed
    dead_lettered: int = 0  # of the invalid ones, sent to the dead-letter topic (topic source)

    @property
    def events_per_second(self) -> float:
        return self.events / self.event_seconds if self.event_seconds else 0.0


@dataclass(frozen=True, slots=True)
class TopicRange:
    """Which records of the source topic to replay, the same bounds for every partition."""

    start_offset: int | None = None
    end_offset: int | None = None
    start_time: int | None = None
    end_time: int | None = None

    def check(self) -> None:
        by_offset = self.start_offset is not None or self.end_offset is not None
        by_time = self.start_time is not None or self.end_time is not None
        if by_offset and by_time:
            raise ConfigError("give either an offset range or a time range, not both")
        if self.start_offset is not None and self.start_offset < 0:
            raise ConfigError(f"start offset {self.start_offset} is negative")
        if self.start_offset is not None and self.end_offset is not None and self.end_offset <= self.start_offset:
            raise ConfigError(f"end offset {self.end_offset} must be greater than start offset {self.start_offset}")
        if self.start_time is not None and self.end_time is not None and self.end_time <= self.start_time:
            raise ConfigError(f"end time {self.end_time} must be later than start time {self.start_time}")


def parse_time(text: str) -> int:
    """Epoch milliseconds from epoch ms digits or an ISO-8601 time (no zone means UTC)."""
    s = text.strip()
    if s.isdigit():
        ms = int(s)
        if ms < _EPOCH_MS_MIN:
            raise ValueError(f"{text!r} looks like epoch seconds; give epoch milliseconds or an ISO-8601 time")
        return ms
    try:
        dt = datetime.fromisoformat(s)
    except ValueError as exc:
        raise ValueError(f"{text!r} is neither epoch milliseconds nor an ISO-8601 time") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def event_producer(settings: Settings) -> Any:
    from confluent_kafka import Producer

    conf = confluent_config(settings)
    # murmur2 is the Java client's default partitioner: keys land where other producers put them.
    conf.update(
        {
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 5,
            "queue.buffering.max.messages": 200_000,
            "message.max.bytes": settings.kafka.max_request_bytes,
        }
    )
    return Producer(conf)


def _produce(
    producer: Any,
    topic: str,
    key: str | bytes | None,
    value: bytes,
    on_delivery: Callable[..., None] | None = None,
) -> None:
    raw_key = key.encode() if isinstance(key, str) else key
    while True:
        try:
            producer.produce(topic, key=raw_key, value=value, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)  # local queue full: let deliveries drain


def _require_named(settings: Settings, client: Any, names: Iterable[str]) -> None:
    """Fail fast when a topic named outright (not through settings) is missing."""
    try:
        existing = set(client.list_topics(timeout=10).topics)
    except Exception as exc:
        raise ServiceError(
            f"cannot reach Kafka at {settings.kafka.bootstrap_servers} ({exc}); start the local broker with "
            "`adcast up` or set ADCAST_KAFKA__BOOTSTRAP_SERVERS"
        ) from exc
    missing = sorted(set(names) - existing)
    if missing:
        raise ServiceError(f"missing topics {missing} at {settings.kafka.bootstrap_servers}")


class Pacer:
    """Sleeps until an event is due: n/rate seconds, or (event time - first) / speedup after the start."""

    def __init__(
        self,
        rate: float | None,
        speedup: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and speedup is not None:
            raise ConfigError("give either a rate or a speedup, not both")
        if rate is not None and rate <= 0:
            raise ConfigError(f"rate must be positive, got {rate}")
        if speedup is not None and speedup <= 0:
            raise ConfigError(f"speedup must be positive, got {speedup}")
        self.rate = rate
        self.speedup = speedup
        self.clock, self.sleep = clock, sleep
        self.t0 = 0.0
        self.first_time: int | None = None

    def wait(self, n: int, event_time: int) -> None:
        if n == 0:
            self.t0 = self.clock()
            self.first_time = event_time
        if self.rate:
            due = self.t0 + n / self.rate
        elif self.speedup and self.first_time is not None:
            due = self.t0 + (event_time - self.first_time) / 1000 / self.speedup
        else:
            return
        ahead = due - self.clock()
        if ahead > 0:
            self.sleep(ahead)


@dataclass(slots=True)
class _Out:
    """One record on its way out: an event to produce, or an invalid record to dead-letter."""

    key: bytes | None
    record: dict[str, Any] | None  # the decoded event; None when invalid
    raw: bytes | None  # the value as read (topic) or as encoded (files)
    failure: tuple[str, str, str] | None = None  # (stage, reason, detail)
    source: tuple[str, int, int] | None = None  # (topic, partition, offset) of a consumed record


class _Sink:
    """Produces events with pacing and live re-stamping, dead-letters invalid records, counts both."""

    def __init__(
        self,
        settings: Settings,
        producer: Any,
        topic: str,
        summary: ReplaySummary,
        pacer: Pacer,
        live: bool,
        collect: bool,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.topic = topic
        self.summary = summary
        self.pacer = pacer
        self.live = live
        self.collect = collect
        self.errors: list[str] = []

    def _done(self, event_type: str | None) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(str(err))
            elif self.collect and event_type is not None:
                user = msg.key().decode(errors="replace")
                self.summary.delivered.append(Delivered(user, event_type, msg.partition(), msg.offset()))

        return done

    def event(self, out: _Out) -> None:
        assert out.record is not None
        self.pacer.wait(self.summary.events, out.record["event_time"])
        value = out.raw
        if self.live or value is None:
            record = {**out.record, "event_time": int(time.time() * 1000)} if self.live else out.record
            value = serde.encode(serde.EVENT, record)
        _produce(self.producer, self.topic, out.key, value, self._done(out.record["event_type"]))
        self.producer.poll(0)
        self.summary.events += 1
        self.summary.topics[self.topic] += 1

    def dead_letter(self, out: _Out) -> None:
        assert out.failure is not None and out.source is not None
        stage, reason, detail = out.failure
        topic, partition, offset = out.source
        key, letter = serde.dead_letter(
            _Consumed(out.raw, out.key, topic, partition, offset),
            stage,
            reason,
            detail,
            int(time.time() * 1000),
            self.settings.kafka.max_request_bytes,
        )
        dlq = self.settings.topics.name("dead_letters")
        _produce(self.producer, dlq, key, letter, self._done(None))
        self.summary.invalid[f"{stage}:{reason}"] += 1
        self.summary.dead_lettered += 1
        self.summary.topics[dlq] += 1

    def finish(self) -> None:
        remaining = self.producer.flush(60)
        if remaining or self.errors:
            raise ServiceError(
                f"replay: {remaining} messages undelivered, {len(self.errors)} errors (first: {self.errors[:1]})"
            )


@dataclass(frozen=True, slots=True)
class _Consumed:
    """The fields serde.dead_letter reads from a consumed message."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int


def _check(record: dict[str, Any], now_ms: int) -> tuple[str, str, str] | None:
    """The stream tier's verdict on an event record: None when valid, else (stage, reason, detail)."""
    try:
        validate_event(record, now_ms)
    except InvalidEvent as exc:
        return ("validate", exc.reason, exc.detail)
    return None


def replay(
    settings: Settings,
    data_dir: str | Path,
    rate: float | None = None,
    live: bool = False,
    limit: int | None = None,
    collect: bool = False,
    progress: bool = True,
    *,
    speedup: float | None = None,
    to_topic: str | None = None,
) -> ReplaySummary:
    """Replay a data directory: profiles, advertisers, then events to `to_topic` (default: events)."""
    from tqdm import tqdm

    pacer = Pacer(rate, speedup)
    t = settings.topics
    topic = to_topic or t.name("events")
    require_topics(settings, ["profiles", "advertisers"])
    producer = event_producer(settings)
    _require_named(settings, producer, [topic])
    summary = ReplaySummary()
    started = time.monotonic()

    for profile in read_records(data_dir, "profiles"):
        _produce(producer, t.name("profiles"), profile["user_id"], serde.encode(serde.PROFILE, profile))
        summary.profiles += 1
    for adv in read_records(data_dir, "advertisers"):
        _produce(producer, t.name("advertisers"), adv["advertiser_id"], serde.encode(serde.ADVERTISER, adv))
        summary.advertisers += 1
    summary.topics[t.name("profiles")] += summary.profiles
    summary.topics[t.name("advertisers")] += summary.advertisers
    producer.flush(30)

    now_ms = int(time.time() * 1000)
    valid: list[tuple[int, _Out]] = []
    for record in read_records(data_dir, "events"):
        failure = _check(record, now_ms)
        if failure is None:
            try:
                value = serde.encode(serde.EVENT, record)
                valid.append((record["event_time"], _Out(record["user_id"].encode(), record, value)))
                continue
            except SerdeError as exc:
                failure = ("encode", exc.reason, exc.detail)
        summary.invalid[f"{failure[0]}:{failure[1]}"] += 1
        log.debug("skipped invalid event stage=%s reason=%s detail=%s", *failure)
    if summary.invalid:
        log.warning("skipping %d invalid events: %s", summary.invalid.total(), dict(summary.invalid))
    # Stable: events with the same time keep their file order.
    events = [out for _, out in sorted(valid, key=lambda v: v[0])][:limit]

    sink = _Sink(settings, producer, topic, summary, pacer, live, collect)
    events_started = time.monotonic()
    with tqdm(total=len(events), unit="ev", desc="replay", disable=not progress, mininterval=0.5) as bar:
        for out in events:
            sink.event(out)
            bar.update(1)
    sink.finish()
    summary.event_seconds = time.monotonic() - events_started
    summary.seconds = time.monotonic() - started
    return summary


@dataclass(slots=True)
class _Partition:
    """The merge's view of one source partition."""

    index: int
    start: int  # first offset to read
    end: int | None  # exclusive end offset, None: the partition's end when reached
    high: int  # end offset as last known (for the progress total)
    buffer: deque[tuple[tuple[int, int, int], _Out]] = field(default_factory=deque)
    done: bool = False
    paused: bool = False
    in_range: bool = True  # False until the first record at or after the start time
    last_time: int = 0  # event time of the last valid record (orders invalid ones in place)


def _plan(consumer: Any, topic: str, rng: TopicRange) -> list[_Partition]:
    """Each partition's start and end, from the watermarks and, for a start time, offsets_for_times."""
    from confluent_kafka import TopicPartition

    meta = consumer.list_topics(timeout=10).topics[topic]
    plan: list[_Partition] = []
    starts: dict[int, int] = {}
    if rng.start_time is not None:
        asked = [TopicPartition(topic, p, rng.start_time) for p in meta.partitions]
        for tp in consumer.offsets_for_times(asked, timeout=10):
            starts[tp.partition] = tp.offset
    for p in sorted(meta.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        start = starts.get(p, rng.start_offset or 0)
        if rng.start_time is not None and start < 0:
            continue  # no record at or after the start time
        if start < low:
            if rng.start_offset is not None:
                log.warning("partition=%s offsets before %s are gone (retention); starting there", p, low)
            start = low
        if rng.end_offset is not None and start >= rng.end_offset:
            continue
        part = _Partition(p, start, rng.end_offset, high)
        part.in_range = rng.start_time is None
        plan.append(part)
    return plan


def _estimated_total(parts: list[_Partition]) -> int:
    """Records in the range as far as the end offsets known so far tell (a time range's end is not)."""
    return sum(max(0, (p.high if p.end is None else min(p.end, p.high)) - p.start) for p in parts)


def _decode_event(value: bytes | None, now_ms: int) -> tuple[dict[str, Any] | None, tuple[str, str, str] | None]:
    try:
        record = serde.decode(serde.EVENT, value)
    except SerdeError as exc:
        return None, ("decode", exc.reason, exc.detail)
    failure = _check(record, now_ms)
    return (None, failure) if failure else (record, None)


def _merged(consumer: Any, topic: str, parts: list[_Partition], rng: TopicRange, bar: Any) -> Iterator[_Out]:
    """The range's records, every partition in offset order, partitions merged by event time."""
    from confluent_kafka import KafkaError, TopicPartition

    by_index = {p.index: p for p in parts}
    heads: list[tuple[tuple[int, int, int], int]] = []  # (sort key, partition) of each non-empty buffer
    starved = {p.index for p in parts}  # not done, nothing buffered: the merge must wait for them
    last_data = time.monotonic()
    last_total = 0.0

    def finish(p: _Partition) -> None:
        p.done = True
        starved.discard(p.index)
        consumer.pause([TopicPartition(topic, p.index)])

    def refresh_total() -> None:
        for p in parts:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p.index), cached=True)
            p.high = max(p.high, high)  # the cached one comes from fetches, exact on every broker
        total = _estimated_total(parts)
        if total > (bar.total or 0):
            bar.total = total
            bar.refresh()

    def take(m: Any) -> None:
        p = by_index[m.partition()]
        offset = m.offset()
        if p.done or offset < p.start:
            return
        if p.end is not None and offset >= p.end:
            finish(p)
            return
        stamp = m.timestamp()[1]
        if not p.in_range:
            if stamp < (rng.start_time or 0):
                return
            p.in_range = True
        if rng.end_time is not None and stamp >= rng.end_time:
            finish(p)
            return
        record, failure = _decode_event(m.value(), int(time.time() * 1000))
        if record is not None:
            p.last_time = record["event_time"]
        key = m.key() if m.key() is not None or record is None else record["user_id"].encode()
        out = _Out(key, record, m.value(), failure, (topic, p.index, offset))
        sort_key = (p.last_time, p.index, offset)
        if not p.buffer:
            heapq.heappush(heads, (sort_key, p.index))
            starved.discard(p.index)
        p.buffer.append((sort_key, out))
        if len(p.buffer) >= _MAX_BUFFERED and not p.paused:
            consumer.pause([TopicPartition(topic, p.index)])  # the merge waits on another partition
            p.paused = True
        if p.end is not None and offset >= p.end - 1:
            finish(p)

    consumer.assign([TopicPartition(topic, p.index, p.start) for p in parts])
    while True:
        while heads and not starved:
            _, index = heapq.heappop(heads)
            p = by_index[index]
            _, out = p.buffer.popleft()
            if p.buffer:
                heapq.heappush(heads, (p.buffer[0][0], index))
            elif not p.done:
                starved.add(index)
            if p.paused and not p.done and len(p.buffer) <= _MAX_BUFFERED // 2:
                consumer.resume([TopicPartition(topic, index)])
                p.paused = False
            yield out
        if not starved:
            return  # every partition done and drained
        for m in consumer.consume(num_messages=1000, timeout=0.2):
            err = m.error()
            if err is None:
                take(m)
            elif err.code() == KafkaError._PARTITION_EOF:
                p = by_index[m.partition()]
                if not p.done:
                    finish(p)  # caught up with the partition's end
            elif err.fatal():
                raise ServiceError(f"replay: reading {topic} failed: {err}")
            else:
                log.warning("replay: reading %s: %s", topic, err)
                continue
            last_data = time.monotonic()
        if time.monotonic() - last_total > 0.5:
            refresh_total()
            last_total = time.monotonic()
        if time.monotonic() - last_data > _STALL_S:
            raise ServiceError(f"replay: no data from {topic} partitions {sorted(starved)} for {_STALL_S:.0f}s")


def replay_topic(
    settings: Settings,
    source: str,
    rng: TopicRange | None = None,
    *,
    to_topic: str | None = None,
    rate: float | None = None,
    speedup: float | None = None,
    live: bool = False,
    limit: int | None = None,
    collect: bool = False,
    progress: bool = True,
) -> ReplaySummary:
    """Copy a range of the `source` topic's events to `to_topic` (default: the events topic)."""
    from confluent_kafka import Consumer
    from tqdm import tqdm

    rng = rng or TopicRange()
    rng.check()
    pacer = Pacer(rate, speedup)
    topic = to_topic or settings.topics.name("events")
    if topic == source:
        raise ConfigError(f"source and destination are both {topic}; replay into another topic")
    consumer = Consumer(
        {
            **confluent_config(settings),
            "group.id": "adcast-replay",  # required by the client; partitions are assigned, never joined
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "latest",  # a start beyond the end means nothing to replay
        }
    )
    producer = event_producer(settings)
    summary = ReplaySummary()
    started = time.monotonic()
    try:
        _require_named(settings, consumer, [source, topic, settings.topics.name("dead_letters")])
        parts = _plan(consumer, source, rng)
        sink = _Sink(settings, producer, topic, summary, pacer, live, collect)
        total = _estimated_total(parts)
        events_started = time.monotonic()
        with tqdm(total=total, unit="ev", desc="replay", disable=not progress, mininterval=0.5) as bar:
            for out in _merged(consumer, source, parts, rng, bar):
                if out.record is None:
                    sink.dead_letter(out)
                else:
                    sink.event(out)
                bar.update(1)
                if limit is not None and summary.events >= limit:
                    break
            bar.total = bar.n  # the estimate counted records past a time range's end
        sink.finish()
        summary.event_seconds = time.monotonic() - events_started
    finally:
        consumer.close()
    if summary.dead_lettered:
        log.warning("dead-lettered %d invalid records: %s", summary.dead_lettered, dict(summary.invalid))
    summary.seconds = time.monotonic() - started
    return summary


def format_summary(s: ReplaySummary) -> str:
    lines = [
        f"replayed {s.events} events in {s.event_seconds:.1f}s ({s.events_per_second:,.0f} events/s), "
        f"{s.seconds:.1f}s in all"
    ]
    lines += [f"  {topic}: {n}" for topic, n in sorted(s.topics.items())]
    if s.invalid:
        what = "dead-lettered" if s.dead_lettered else "skipped"
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(s.invalid.items()))
        lines.append(f"  invalid records {what}: {s.invalid.total()} ({reasons})")
    return "\n".join(lines)


def expected_versions(delivered: list[Delivered]) -> dict[str, int]:
    """Per user, the version a complete run must end at: the offset of the newest salient event."""
    out: dict[str, int] = {}
    for d in delivered:
        if d.event_type != "impression":
            out[d.user_id] = max(out.get(d.user_id, -1), d.offset)
    return out
