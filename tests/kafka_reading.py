"""Reading topics in tests without joining any group: to the end as fetches report it, and a
group's committed offsets (shared by the stream and end-to-end tests)."""

from __future__ import annotations

import time
from typing import Any


def _consumer(bootstrap: str, group: str = "adcast-test-reader") -> Any:
    from confluent_kafka import Consumer

    conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "log_level": 2}
    return Consumer({**conf, "enable.partition.eof": True})


def read_to_end(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every message of `topic` up to each partition's end as fetches report it (the local broker's
    ListOffsets answer is not the end offset; a fetch's end-of-partition is)."""
    from confluent_kafka import KafkaError, TopicPartition

    consumer = _consumer(bootstrap)
    out: list[Any] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        waiting = set(partitions)
        deadline = time.monotonic() + timeout_s
        while waiting:
            assert time.monotonic() < deadline, f"{topic}: partitions {sorted(waiting)} never reached their end"
            for m in consumer.consume(num_messages=1000, timeout=0.2):
                if m.error() is None:
                    out.append(m)
                    waiting.add(m.partition())
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    waiting.discard(m.partition())
    finally:
        consumer.close()
    return out


def end_offsets(messages: list[Any]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for m in messages:
        ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
    return ends


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (0 where nothing was committed)."""
    from confluent_kafka import TopicPartition

    consumer = _consumer(bootstrap, group)  # committed() asks the coordinator; it joins nothing
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in found}
    finally:
        consumer.close()


def read_from_start(bootstrap: str, topic: str, until: Any, timeout_s: float = 60.0) -> list[Any]:
    """Messages of `topic` from the beginning until `until(messages)` holds or time runs out.
    Assigns partitions directly (no group join, which the local broker makes slow)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    out: list = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while not until(out) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out
