"""The stream tier's unlingered send (stream.transport.Producer.send_now) on the real broker."""

from __future__ import annotations

import asyncio

import pytest
from kafka_reading import read_to_end

from adcast.config import override
from adcast.kafka import confluent_config, create_topics

pytestmark = pytest.mark.integration


def partitions_of_a_java_compatible_producer(settings, topic: str, keys: set[bytes]) -> dict[bytes, int]:
    """Where librdkafka's `murmur2` partitioner (the Java client's default, which Faust's keyed
    sends share) puts each key: produced for real, read back."""
    from confluent_kafka import Producer

    producer = Producer({**confluent_config(settings), "partitioner": "murmur2"})
    for key in keys:
        producer.produce(topic, key=key, value=b"")
    assert producer.flush(10) == 0
    return {m.key(): m.partition() for m in read_to_end(settings.kafka.bootstrap_servers, topic)}


def test_send_now_places_records_as_a_keyed_send_would_in_order_in_batches_of_the_producers_size(settings, broker):
    from stream.app import faust_app

    # 200 records of ~300 B need several batches per partition.
    settings = override(settings, topics={"partitions": 4}, stream={"producer_batch_bytes": 4096})
    create_topics(settings)
    topic, keyed_elsewhere = settings.topics.name("requests"), settings.topics.name("events")
    records: list[tuple[int | None, bytes, bytes]] = [
        (None, f"user-{i % 37}".encode(), i.to_bytes(2, "big") * 150) for i in range(200)
    ]
    records.insert(100, (3, b"tick", b""))  # an explicit partition wins over the key

    async def send() -> list:
        app = faust_app(settings)
        producer = app.producer
        await producer.start()
        try:
            batches = await producer.send_now(topic, records)
            await asyncio.gather(*(b.delivered for b in batches))  # every batch delivered, no error
            return batches
        finally:
            await producer.stop()

    batches = asyncio.run(send())
    got = read_to_end(broker, topic)

    expected = partitions_of_a_java_compatible_producer(
        settings, keyed_elsewhere, {k for p, k, _ in records if p is None}
    )
    assert len(got) == len(records)
    assert len(batches) > settings.topics.partitions  # full batches were sent and new ones started
    # Each batch's delivery names its partition and first offset: its records are the next ones there.
    for partition in range(settings.topics.partitions):
        sizes = [b.records for b in batches if b.partition == partition]
        firsts = [b.delivered.result().offset for b in batches if b.partition == partition]
        assert firsts == [sum(sizes[:i]) for i in range(len(sizes))]
    for partition in range(settings.topics.partitions):
        want = [(k, v) for p, k, v in records if (p if p is not None else expected[k]) == partition]
        assert [
            (m.key(), m.value()) for m in sorted(got, key=lambda m: m.offset()) if m.partition() == partition
        ] == want
