"""`adcast rollout`: re-score every user the stream tier knows into a slot, and measure coverage.

The rollout reads the stream tier's state (the history changelog, adcast.lifecycle.state), builds
the PredictionRequest the stream tier would build for each user (same fold, same limits, the
user's current version), and produces it to the rollout topic with the slot in a header. The
inference workers of that slot (one consumer group, as many workers as partitions) score it and
write the slot; workers of other slots skip it, and every worker serves its live requests first.
Kafka spreads the work: there is nothing else to operate.

One request per user: each changelog partition is read twice, first for each user's newest record
in the range (keys and offsets only), then to emit a request for those records. Until the broker
compacts the changelog a user may have many records there; only the newest counts.

Position: the changelog offsets done are committed in the consumer group
`<stream.app_id>-rollout-<slot>` about every second, after the requests before them are
delivered, so a restarted rollout resumes where the last one stopped (`restart=True` starts
over). The store's version guard makes a request sent twice harmless.

Coverage: of the users the state knows (an event that changed the prompt folded in), how many the slot holds a
record for (`held`), and how many at their current version or newer (`current`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from adcast.config import Settings
from adcast.core.clock import now_ms
from adcast.core.requests import PredictionRequest
from adcast.core.slots import ROLLOUT_REASON, SLOT_HEADER, check_slot
from adcast.kafka import create_topics
from adcast.lifecycle.state import changelog_topic, partition_ends, read_messages, read_range, state_consumer
from adcast.replay.common import Pacer, event_producer, produce
from adcast.store import AffinityClient, SlotAdmin
from adcast.wire.history_encoder import encode_request

log = logging.getLogger(__name__)
T = TypeVar("T")

SAVE_EVERY_S = 1.0  # how often the position is saved (after the requests before it are delivered)
_CHECK_BATCH = 1000  # users per Redis read of a coverage check


@dataclass
class RolloutSummary:
    slot: str
    records: int = 0  # changelog records read
    requested: int = 0  # requests produced
    resumed: bool = False  # started from a committed position
    seconds: float = 0.0


@dataclass(frozen=True)
class Coverage:
    slot: str
    known: int  # users with a prompt in the stream state (an event that changed it)
    held: int  # of them, users the slot holds a record for
    current: int  # of them, records at the state's version or newer

    @property
    def ratio(self) -> float:
        return self.held / self.known if self.known else 1.0

    def __str__(self) -> str:
        return (
            f"slot {self.slot}: {self.held:,} of {self.known:,} known users ({self.ratio:.3%}), "
            f"{self.current:,} at their current version"
        )


def rollout_group(settings: Settings, slot: str) -> str:
    """The consumer group whose committed offsets on the changelog are the slot's saved position."""
    return f"{settings.stream.app_id}-rollout-{check_slot(slot)}"


def rollout(
    settings: Settings, slot: str, rate: float | None = None, restart: bool = False, progress: bool = True
) -> RolloutSummary:
    from tqdm import tqdm

    check_slot(slot)
    create_topics(settings, only=["rollout"])
    topic, to_topic = changelog_topic(settings), settings.topics.name("rollout")
    consumer = state_consumer(settings, rollout_group(settings, slot))
    producer = event_producer(settings)
    summary = RolloutSummary(slot)
    started = time.monotonic()
    with SlotAdmin(settings.redis) as admin:
        if admin.pointer().live != slot:
            admin.set_candidate(slot)
    try:
        ends = partition_ends(consumer, topic)
        done = {} if restart else _committed(consumer, topic, list(ends))
        summary.resumed = bool(done)
        ranges = {p: (max(low, done.get(p, low)), high) for p, (low, high) in ends.items()}
        pacer, limits, headers = Pacer(rate, None), settings.stream.history_limits(), [(SLOT_HEADER, slot.encode())]
        total = sum(end - start for start, end in ranges.values())
        bar = tqdm(total=2 * total, unit="rec", desc=f"rollout {slot}", disable=not progress, mininterval=0.5)
        with bar:
            for p, (start, end) in ranges.items():
                if start >= end:
                    continue
                # First pass: each user's newest record in the range (a set of offsets, not histories).
                newest = {m.key(): m.offset() for m in _counted(read_messages(consumer, topic, {p: (start, end)}), bar)}
                wanted = set(newest.values())
                saved_at = time.monotonic()
                for rec in _counted(read_range(consumer, topic, {p: (start, end)}), bar):
                    summary.records += 1
                    h = rec.history
                    if rec.offset in wanted and h is not None and h.version >= 0:
                        pacer.wait(summary.requested, 0)
                        request = PredictionRequest.from_history(h, ROLLOUT_REASON, now_ms(), limits)
                        produce(producer, to_topic, h.user_id, encode_request(request), headers=headers)
                        summary.requested += 1
                        bar.set_postfix(requests=summary.requested, refresh=False)
                    if time.monotonic() - saved_at >= SAVE_EVERY_S or rec.offset + 1 >= end:
                        _save(producer, consumer, topic, p, rec.offset + 1)
                        saved_at = time.monotonic()
    finally:
        producer.flush()
        consumer.close()
    summary.seconds = time.monotonic() - started
    log.info("rollout slot=%s records=%s requests=%s", slot, summary.records, summary.requested)
    return summary


def _counted(items: Iterator[T], bar: Any) -> Iterator[T]:
    for item in items:
        bar.update(1)
        yield item


def _save(producer: Any, consumer: Any, topic: str, partition: int, offset: int) -> None:
    from confluent_kafka import TopicPartition

    producer.flush()  # the requests before the position are delivered first
    consumer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)


def _committed(consumer: Any, topic: str, partitions: list[int]) -> dict[int, int]:
    from confluent_kafka import TopicPartition

    asked = [TopicPartition(topic, p) for p in partitions]
    return {tp.partition: tp.offset for tp in consumer.committed(asked, timeout=10) if tp.offset >= 0}


def coverage(settings: Settings, slot: str) -> Coverage:
    """The slot's coverage of the users the stream state knows now, one partition at a time."""
    check_slot(slot)
    topic = changelog_topic(settings)
    consumer = state_consumer(settings, f"{settings.stream.app_id}-coverage")  # never commits
    known = held = current = 0
    try:
        with AffinityClient(settings.redis, slot) as client:
            for p, (low, high) in partition_ends(consumer, topic).items():
                versions: dict[str, int] = {}
                for rec in read_range(consumer, topic, {p: (low, high)}):
                    if rec.history is not None and rec.history.version >= 0:
                        versions[rec.history.user_id] = rec.history.version
                users = list(versions)
                known += len(users)
                for i in range(0, len(users), _CHECK_BATCH):
                    for user, stored in client.get_many(users[i : i + _CHECK_BATCH]).items():
                        if stored is not None:
                            held += 1
                            current += stored.version >= versions[user]
    finally:
        consumer.close()
    return Coverage(slot, known, held, current)


def wait_for_coverage(settings: Settings, slot: str, wait_s: float, every_s: float = 5.0) -> Coverage:
    """Coverage once every user is current, or as it stands after `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        c = coverage(settings, slot)
        if c.current >= c.known or time.monotonic() >= deadline:
            return c
        log.info("waiting for the slot's workers: %s", c)
        time.sleep(min(every_s, max(0.0, deadline - time.monotonic())))
