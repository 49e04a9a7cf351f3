"""What both replays share: their summary, the producer, pacing, and the sink that produces events
and dead-letters what the stream tier would refuse."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adcast.config import Settings
from adcast.core.clock import now_ms
from adcast.core.events import validate_event
from adcast.errors import ConfigError, Rejected, ServiceError
from adcast.kafka import confluent_config
from adcast.kafka.dead_letters import DeadLetters
from adcast.wire import serde

log = logging.getLogger(__name__)

# Records buffered per source partition while the merge waits for the others to catch up.
MAX_BUFFERED = 20_000
# A source that delivers nothing for this long while the merge still waits on it is an error.
STALL_S = 60.0
EPOCH_MS_MIN = 10**11  # smaller digit strings are most likely epoch seconds


@dataclass(frozen=True, slots=True)
class Delivered:
    user_id: str
    event_type: str
    partition: int
    offset: int
    changes_prompt: bool = True  # False for an impression without an advertiser: nothing to show


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
        if ms < EPOCH_MS_MIN:
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


def produce(
    producer: Any,
    topic: str,
    key: str | bytes | None,
    value: bytes,
    on_delivery: Callable[..., None] | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    raw_key = key.encode() if isinstance(key, str) else key
    while True:
        try:
            producer.produce(topic, key=raw_key, value=value, on_delivery=on_delivery, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)  # local queue full: let deliveries drain


def require_named(settings: Settings, client: Any, names: Iterable[str]) -> None:
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
class Outgoing:
    """One record on its way out: an event to produce, or an invalid record to dead-letter."""

    key: bytes | None
    record: dict[str, Any] | None  # the decoded event; None when invalid
    raw: bytes | None  # the value as read (topic) or as encoded (files)
    failure: Rejected | None = None
    source: tuple[str, int, int] | None = None  # (topic, partition, offset) of a consumed record


class Sink:
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
        self.letters = DeadLetters(settings, log_each=False)  # the summary names the reasons

    def _done(self, record: dict[str, Any] | None) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(str(err))
            elif self.collect and record is not None:
                user = msg.key().decode(errors="replace")
                kind = record["event_type"]
                changes = kind != "impression" or bool(record.get("advertiser_id"))
                self.summary.delivered.append(Delivered(user, kind, msg.partition(), msg.offset(), changes))

        return done

    def event(self, out: Outgoing) -> None:
        assert out.record is not None
        self.pacer.wait(self.summary.events, out.record["event_time"])
        value = out.raw
        if self.live or value is None:
            record = {**out.record, "event_time": now_ms()} if self.live else out.record
            value = serde.encode(serde.EVENT, record)
        produce(self.producer, self.topic, out.key, value, self._done(out.record))
        self.producer.poll(0)
        self.summary.events += 1
        self.summary.topics[self.topic] += 1

    def dead_letter(self, out: Outgoing) -> None:
        assert out.failure is not None and out.source is not None
        topic, partition, offset = out.source
        key, letter = self.letters.letter(Consumed(out.raw, out.key, topic, partition, offset), out.failure)
        dlq = self.letters.topic  # its presence was checked before the replay started
        produce(self.producer, dlq, key, letter, self._done(None))
        self.summary.invalid[f"{out.failure.stage}:{out.failure.reason}"] += 1
        self.summary.dead_lettered += 1
        self.summary.topics[dlq] += 1

    def finish(self) -> None:
        remaining = self.producer.flush(60)
        if remaining or self.errors:
            raise ServiceError(
                f"replay: {remaining} messages undelivered, {len(self.errors)} errors (first: {self.errors[:1]})"
            )


@dataclass(frozen=True, slots=True)
class Consumed:
    """The fields serde.dead_letter reads from a consumed message."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int


def checked_event(record: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The record when the stream tier would take it, else InvalidEvent (stage `validate`)."""
    validate_event(record, now_ms)
    return record


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
    """Per user, the version a complete run must end at: the offset of the newest event that changed
    the prompt (an impression with an advertiser included)."""
    out: dict[str, int] = {}
    for d in delivered:
        if d.changes_prompt:
            out[d.user_id] = max(out.get(d.user_id, -1), d.offset)
    return out
