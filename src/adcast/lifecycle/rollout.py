"""`adcast rollout`: re-score every user the stream tier knows into a slot, and measure coverage.

The rollout reads the stream tier's state (the history changelog, adcast.lifecycle.state), builds
the PredictionRequest the stream tier would build for each user (same fold, same limits, the
user's current version), and produces it to the rollout topic with the slot in a header. The
inference workers of that slot (one consumer group, as many workers as partitions) score it and
write the slot; workers of other slots skip it, and every worker serves its live requests first.
Kafka spreads the work: there is nothing else to operate.

Position: the changelog offsets done are committed in the consumer group
`<stream.app_id>-rollout-<slot>` after the requests before them are delivered, so a restarted
rollout resumes where the last one stopped (`restart=True` starts over). A user's requests keep
their order (one key, one partition), and the store's version guard makes a repeat harmless.

Coverage: of the users the state knows (a salient event folded in), how many the slot holds a
record for (`held`), and how many at their current version or newer (`current`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from adcast.config import Settings
from adcast.core.history import UserHistory
from adcast.core.requests import PredictionRequest
from adcast.core.slots import ROLLOUT_REASON, SLOT_HEADER, check_slot
from adcast.kafka import create_topics
from adcast.lifecycle.state import changelog_topic, partition_ends, read_range, state_consumer
from adcast.replay.common import Pacer, event_producer, produce
from adcast.store import AffinityClient, SlotAdmin
from adcast.wire.history_encoder import encode_request

log = logging.getLogger(__name__)

WINDOW = 5000  # changelog records whose users are deduplicated before their requests go out
# Paced, a window is about a second of requests, so that the position is saved about every second.
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
    known: int  # users with a salient event in the stream state
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


def rollout(
    settings: Settings, slot: str, rate: float | None = None, restart: bool = False, progress: bool = True
) -> RolloutSummary:
    from confluent_kafka import TopicPartition
    from tqdm import tqdm

    check_slot(slot)
    create_topics(settings, only=["rollout"])
    topic, to_topic = changelog_topic(settings), settings.topics.name("rollout")
    consumer = state_consumer(settings, f"{settings.stream.app_id}-rollout-{slot}")
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
        window: dict[str, UserHistory] = {}
        positions: dict[int, int] = {}
        window_records = WINDOW if rate is None else max(1, min(WINDOW, int(rate)))

        def flush() -> None:
            now = int(time.time() * 1000)
            for history in window.values():
                pacer.wait(summary.requested, 0)
                request = PredictionRequest.from_history(history, ROLLOUT_REASON, now, limits)
                produce(producer, to_topic, history.user_id, encode_request(request), headers=headers)
                summary.requested += 1
            producer.flush()  # delivered before the position passes them
            if positions:
                consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in positions.items()], asynchronous=False)
            window.clear()

        total = sum(end - start for start, end in ranges.values())
        with tqdm(total=total, unit="rec", desc=f"rollout {slot}", disable=not progress, mininterval=0.5) as bar:
            for rec in read_range(consumer, topic, ranges):
                summary.records += 1
                positions[rec.partition] = rec.offset + 1
                if rec.history is not None and rec.history.version >= 0:
                    window.pop(rec.history.user_id, None)
                    window[rec.history.user_id] = rec.history
                if summary.records % window_records == 0:
                    flush()
                bar.update(1)
                bar.set_postfix(requests=summary.requested, refresh=False)
            flush()
    finally:
        producer.flush()
        consumer.close()
    summary.seconds = time.monotonic() - started
    log.info("rollout slot=%s records=%s requests=%s", slot, summary.records, summary.requested)
    return summary


def saved_position(settings: Settings, slot: str) -> dict[int, int]:
    """partition -> the changelog offset a resumed rollout of the slot starts at (none saved: {})."""
    topic = changelog_topic(settings)
    consumer = state_consumer(settings, f"{settings.stream.app_id}-rollout-{check_slot(slot)}")
    try:
        return _committed(consumer, topic, list(partition_ends(consumer, topic)))
    finally:
        consumer.close()


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
