"""Replaying a range of another topic, partitions merged by event time."""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from adcast.config import Settings
from adcast.core.clock import now_ms
from adcast.errors import ConfigError, Rejected, ServiceError
from adcast.kafka import confluent_config
from adcast.replay.common import (
    MAX_BUFFERED,
    STALL_S,
    Outgoing,
    Pacer,
    ReplaySummary,
    Sink,
    TopicRange,
    checked_event,
    event_producer,
    require_named,
)
from adcast.wire import serde

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Partition:
    """The merge's view of one source partition."""

    index: int
    start: int  # first offset to read
    end: int | None  # exclusive end offset, None: the partition's end when reached
    high: int  # end offset as last known (for the progress total)
    buffer: deque[tuple[tuple[int, int, int], Outgoing]] = field(default_factory=deque)
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


def _decode_event(value: bytes | None, now_ms: int) -> tuple[dict[str, Any] | None, Rejected | None]:
    try:
        return checked_event(serde.decode(serde.EVENT, value), now_ms), None
    except Rejected as exc:
        return None, exc


def _merged(consumer: Any, topic: str, parts: list[_Partition], rng: TopicRange, bar: Any) -> Iterator[Outgoing]:
    """The range's records, every partition in offset order, partitions merged by event time."""
    yield from _Merge(consumer, topic, parts, rng, bar).records()


class _Merge:
    """The merge's state: each partition's buffer, the heap of the buffers' heads, and the
    partitions the merge waits on (not done, nothing buffered)."""

    def __init__(self, consumer: Any, topic: str, parts: list[_Partition], rng: TopicRange, bar: Any) -> None:
        self.consumer, self.topic, self.parts, self.rng, self.bar = consumer, topic, parts, rng, bar
        self.by_index = {p.index: p for p in parts}
        self.heads: list[tuple[tuple[int, int, int], int]] = []  # (sort key, partition) of each non-empty buffer
        self.starved = {p.index for p in parts}  # not done, nothing buffered: the merge must wait for them

    def _tp(self, index: int, offset: int | None = None) -> Any:
        from confluent_kafka import TopicPartition

        return TopicPartition(self.topic, index) if offset is None else TopicPartition(self.topic, index, offset)

    def records(self) -> Iterator[Outgoing]:
        last_data = time.monotonic()
        last_total = 0.0
        self.consumer.assign([self._tp(p.index, p.start) for p in self.parts])
        while True:
            yield from self._ready()
            if not self.starved:
                return  # every partition done and drained
            polled = self._poll()
            if polled is not None:
                last_data = polled
            if time.monotonic() - last_total > 0.5:
                self._refresh_total()
                last_total = time.monotonic()
            if time.monotonic() - last_data > STALL_S:
                raise ServiceError(
                    f"replay: no data from {self.topic} partitions {sorted(self.starved)} for {STALL_S:.0f}s"
                )

    def _ready(self) -> Iterator[Outgoing]:
        """Records in merge order while no partition is starved (each may hold the next one)."""
        while self.heads and not self.starved:
            _, index = heapq.heappop(self.heads)
            p = self.by_index[index]
            _, out = p.buffer.popleft()
            if p.buffer:
                heapq.heappush(self.heads, (p.buffer[0][0], index))
            elif not p.done:
                self.starved.add(index)
            if p.paused and not p.done and len(p.buffer) <= MAX_BUFFERED // 2:
                self.consumer.resume([self._tp(index)])
                p.paused = False
            yield out

    def _poll(self) -> float | None:
        """One consume call's messages taken in; returns when the last record or end of a partition
        came (None: nothing but transient errors, or nothing at all)."""
        from confluent_kafka import KafkaError

        last_data = None
        for m in self.consumer.consume(num_messages=1000, timeout=0.2):
            err = m.error()
            if err is None:
                self._take(m)
            elif err.code() == KafkaError._PARTITION_EOF:
                p = self.by_index[m.partition()]
                if not p.done:
                    self._finish(p)  # caught up with the partition's end
            elif err.fatal():
                raise ServiceError(f"replay: reading {self.topic} failed: {err}")
            else:
                log.warning("replay: reading %s: %s", self.topic, err)
                continue
            last_data = time.monotonic()
        return last_data

    def _finish(self, p: _Partition) -> None:
        p.done = True
        self.starved.discard(p.index)
        self.consumer.pause([self._tp(p.index)])

    def _refresh_total(self) -> None:
        for p in self.parts:
            _, high = self.consumer.get_watermark_offsets(self._tp(p.index), cached=True)
            p.high = max(p.high, high)  # the cached one comes from fetches, exact on every broker
        total = _estimated_total(self.parts)
        if total > (self.bar.total or 0):
            self.bar.total = total
            self.bar.refresh()

    def _take(self, m: Any) -> None:
        """Buffer a record of the range (a record before it is skipped, one at its end finishes the partition)."""
        p = self.by_index[m.partition()]
        offset = m.offset()
        if p.done or offset < p.start:
            return
        if p.end is not None and offset >= p.end:
            self._finish(p)
            return
        stamp = m.timestamp()[1]
        if not p.in_range:
            if stamp < (self.rng.start_time or 0):
                return
            p.in_range = True
        if self.rng.end_time is not None and stamp >= self.rng.end_time:
            self._finish(p)
            return
        record, failure = _decode_event(m.value(), now_ms())
        if record is not None:
            p.last_time = record["event_time"]
        key = m.key() if m.key() is not None or record is None else record["user_id"].encode()
        out = Outgoing(key, record, m.value(), failure, (self.topic, p.index, offset))
        sort_key = (p.last_time, p.index, offset)
        if not p.buffer:
            heapq.heappush(self.heads, (sort_key, p.index))
            self.starved.discard(p.index)
        p.buffer.append((sort_key, out))
        if len(p.buffer) >= MAX_BUFFERED and not p.paused:
            self.consumer.pause([self._tp(p.index)])  # the merge waits on another partition
            p.paused = True
        if p.end is not None and offset >= p.end - 1:
            self._finish(p)


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
        require_named(settings, consumer, [source, topic, settings.topics.name("dead_letters")])
        parts = _plan(consumer, source, rng)
        sink = Sink(settings, producer, topic, summary, pacer, live, collect)
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
