"""The stream tier's state as the lifecycle commands read it: the history table's changelog.

Faust keeps every user's history in a changelogged table; its changelog topic
(`<stream.app_id>-history-changelog`, keyed by user id, one partition per table partition) holds
every history the stream tier wrote, the newest of a user last. Reading it is reading the state
without asking the stream workers for anything, and without re-reading the events.

A changelog is compacted in the end, but until the broker compacts it, a user may have many
records: readers keep the newest per user of a window of records (rollout) or of a partition
(coverage), so memory stays bounded by a partition's users, not by the topic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from adcast.config import Settings
from adcast.core.history import UserHistory
from adcast.errors import SerdeError, ServiceError
from adcast.kafka import confluent_config
from adcast.wire import serde

log = logging.getLogger(__name__)


def changelog_topic(settings: Settings) -> str:
    return f"{settings.stream.app_id}-history-changelog"


@dataclass(frozen=True, slots=True)
class StateRecord:
    partition: int
    offset: int
    history: UserHistory | None  # None: a tombstone or an unreadable value, skipped


def state_consumer(settings: Settings, group_id: str) -> Any:
    """A consumer of the changelog. Partitions are assigned by the caller; `group_id` is where a
    resumable reader commits its position."""
    from confluent_kafka import Consumer

    return Consumer(
        {
            **confluent_config(settings),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "log_level": 2,
        }
    )


def partition_ends(consumer: Any, topic: str) -> dict[int, tuple[int, int]]:
    """partition -> (low, high) watermarks; ServiceError when the topic does not exist."""
    from confluent_kafka import TopicPartition

    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    except Exception as exc:
        raise ServiceError(f"cannot reach Kafka to read {topic}: {exc}") from exc
    if meta is None or meta.error is not None or not meta.partitions:
        raise ServiceError(
            f"the stream tier's changelog {topic} does not exist: run the stream tier (adcast stream) with the "
            "same ADCAST_STREAM__APP_ID first"
        )
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in sorted(meta.partitions)}


def read_messages(consumer: Any, topic: str, ranges: dict[int, tuple[int, int]]) -> Iterator[Any]:
    """Every message in [start, end) of each partition, in offset order per partition."""
    from confluent_kafka import KafkaError, TopicPartition

    todo = {p: (start, end) for p, (start, end) in ranges.items() if start < end}
    if not todo:
        return
    consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in todo.items()])
    try:
        while todo:
            for m in consumer.consume(num_messages=1000, timeout=1.0):
                p = m.partition()
                if p not in todo:
                    continue
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise ServiceError(f"reading {topic}: {m.error()}")
                    continue
                end = todo[p][1]
                if m.offset() < end:
                    yield m
                if m.offset() + 1 >= end:
                    todo.pop(p, None)
    finally:
        consumer.unassign()


def read_range(consumer: Any, topic: str, ranges: dict[int, tuple[int, int]]) -> Iterator[StateRecord]:
    """Every changelog record in [start, end) of each partition, in offset order per partition."""
    return map(_record, read_messages(consumer, topic, ranges))


def _record(m: Any) -> StateRecord:
    history = None
    if m.value() is not None:
        try:
            history = UserHistory.from_record(serde.decode(serde.HISTORY, m.value()))
        except SerdeError as exc:
            log.warning("skipping an unreadable history partition=%s offset=%s: %s", m.partition(), m.offset(), exc)
    return StateRecord(m.partition(), m.offset(), history)
