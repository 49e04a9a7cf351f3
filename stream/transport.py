"""Faust's aiokafka transport with a configurable fetch wait and an unlingered send (scheme `adcast://`).

Faust creates its consumer with `fetch_max_wait_ms=1500` hard-coded. Apache Kafka answers a
fetch as soon as data arrives, so that is harmless there; brokers that hold a fetch for the whole
wait when it starts empty (the local Tansu broker does) add up to 1.5 s per hop, and the stream
tier has two hops (event, then the tick that emits). Registered through Faust's own plugin point,
the `faust.transports` entry point (see pyproject.toml).

The producer adds `send_now`: a batch's records (prediction requests, ticks, the state's changelog
writes) as one closed batch per partition, sent without lingering.

Also here, the rest of the stream tier's Kafka plumbing: the broker credentials Faust gets from
the same KafkaSettings as every other client, and the consumer-lag metric.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, NamedTuple, cast

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from adcast.config import Settings
from adcast.kafka import check_security, ssl_context
from adcast.kafka.lag import LagReporter

# The private names this module builds on, checked at import so that another faust-streaming or
# aiokafka fails here, with what to install, not mid-stream. Written for faust-streaming 0.15 and
# aiokafka 0.11-0.14 (the stream extra pins those ranges).
_NEEDED = [
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_highwaters"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_client_consumer"),
    (faust_aiokafka.Producer, "_ensure_producer"),
]
_missing = [f"{owner.__qualname__}.{name}" for owner, name in _NEEDED if not hasattr(owner, name)]
if _missing or "_fetch_max_wait_ms" not in inspect.getsource(aiokafka.AIOKafkaConsumer.__init__):
    raise ImportError(
        f"this faust-streaming {faust.__version__} / aiokafka {aiokafka.__version__} lacks what adcast's "
        f"transport uses ({', '.join(_missing) or 'AIOKafkaConsumer._fetch_max_wait_ms'}); install the versions "
        "pinned by adcast's 'stream' extra: pip install 'adcast[stream]'"
    )

FAUST_FETCH_MAX_WAIT_MS = 1500  # what Faust gives its consumer; stream.app.StreamApp carries adcast's


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when it builds its fetcher in start(), after this.
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", FAUST_FETCH_MAX_WAIT_MS)
        return consumer

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """Rewind every partition to its committed offset, and those without one to the start.

        Faust calls this after each rebalance to re-read what its fetcher had taken from the client
        but not yet processed (it discards such records while a rebalance runs). aiokafka leaves a
        partition without a committed offset where it is, past the discarded records: a worker
        killed before its first commit handed over partitions whose events its successor skipped,
        all of them. Rewinding those to the start is what `auto_offset_reset=earliest` promises;
        the re-read events are dropped as duplicates by the state's event ids and versions."""
        committed = dict(await super().seek_to_committed())
        changelogs = self.app.tables.changelog_topics  # never committed: recovery seeks them itself
        # None, or 0: aiokafka seeks neither
        uncommitted = [tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs]
        if uncommitted:
            await self.seek_to_beginning(*uncommitted)
        return committed

    async def _highwaters(self, partitions: list[Any]) -> Mapping[Any, int]:
        """End offsets for table recovery, as a fetch reports them. The local Tansu answers
        ListOffsets with the base offset of a partition's last record batch plus one: recovery
        would stop short of that batch's other records, and Faust's consistency check would take a
        worker's own state (which holds them) for corrupt and crash it on every restart or
        rebalance (ConsistencyError). On Kafka both answers agree; this costs one fetch."""
        ends = dict(await super()._highwaters(partitions))
        return await _fetched_ends(lambda: self._create_client_consumer(cast(Any, self.transport)), ends)


async def _fetched_ends(new_consumer: Callable[[], Any], ends: dict[Any, int]) -> dict[Any, int]:
    from aiokafka import TopicPartition

    tps = {tp: TopicPartition(tp.topic, tp.partition) for tp, end in ends.items() if end}
    if not tps:
        return ends
    consumer = new_consumer()
    await consumer.start()
    try:
        consumer.assign(list(tps.values()))
        for tp, ktp in tps.items():
            consumer.seek(ktp, ends[tp] - 1)  # the last record ListOffsets knows, in the last batch
        deadline = time.monotonic() + 10
        while any(consumer.highwater(k) is None for k in tps.values()) and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=100)
        return {tp: max(end, consumer.highwater(tps[tp]) or 0) if tp in tps else end for tp, end in ends.items()}
    finally:
        await consumer.stop()


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class SentBatch(NamedTuple):
    partition: int
    records: int
    delivered: asyncio.Future[Any]  # aiokafka's RecordMetadata of the batch's first record


class Producer(faust_aiokafka.Producer):
    async def partitions_known(self, topic: str) -> None:
        """Fetch `topic`'s partitions unless known: `key_partition` (Faust's table routing too)
        reads them without fetching."""
        await self._ensure_producer().partitions_for(topic)

    async def send_now(self, topic: str, records: Iterable[tuple[int | None, bytes, bytes]]) -> list[SentBatch]:
        """Queue `records` (partition, key, value; partition None: by key, as a keyed send would
        place it) for `topic`, one closed batch per partition, in order; returns the batches.

        A closed batch leaves at once: the producer's linger, which gathers the changelog's many
        small writes into few produce requests, would hold each of these for its whole length, and
        the stream tier waits for its requests' delivery before writing the batch's state. A batch
        also costs one future per partition instead of Faust's per-message bookkeeping (FutureMessage,
        buffer, callbacks)."""
        producer = self._ensure_producer()  # the aiokafka producer, started and stopped with Faust's
        await producer.partitions_for(topic)  # the partitioner needs the topic's metadata
        open_batches: dict[int, tuple[Any, int]] = {}  # partition -> (batch, records in it)
        sent = []

        async def send(partition: int, batch: Any, count: int) -> None:
            batch.close()
            sent.append(SentBatch(partition, count, await producer.send_batch(batch, topic, partition=partition)))

        for partition, key, value in records:
            if partition is None:
                partition = self.key_partition(topic, key).partition
            batch, count = open_batches.get(partition) or (producer.create_batch(), 0)
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                await send(partition, batch, count)
                batch, count = producer.create_batch(), 0
                batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any one record
            open_batches[partition] = (batch, count + 1)
        for partition, (batch, count) in open_batches.items():
            await send(partition, batch, count)
        return sent


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
    Producer = Producer


def broker_credentials(settings: Settings) -> faust.auth.Credentials | None:
    """Faust's `broker_credentials` for the Kafka settings (None for PLAINTEXT): SASL (PLAIN or
    SCRAM, over TLS for SASL_SSL) or TLS alone, with the same CA and client certificate as the
    other clients."""
    k = settings.kafka
    check_security(k)
    protocol = k.security_protocol.upper()
    context = ssl_context(k)
    if protocol.startswith("SASL"):
        assert k.sasl_password is not None and k.sasl_mechanism  # check_security made sure
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value(),
            ssl_context=context,  # sets SASL_SSL when not None
            mechanism=k.sasl_mechanism.upper(),
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class FaustLag:
    """adcast_consumer_lag of the app's consumer (of `topics`, or all): the high watermark minus
    the offset this worker last committed. Faust's consumer fetches ahead of processing into its
    buffers, so its position would hide that backlog; before this worker's first commit on a
    partition, its position (then the group's committed offset) stands in."""

    def __init__(self, app: faust.App, topics: Collection[str] | None = None) -> None:
        self.app = app
        self.topics = topics
        self.reporter = LagReporter("stream")

    async def report(self) -> None:
        consumer = self.app.consumer
        committed = self.app.monitor.tp_committed_offsets  # updated by Faust on every commit
        try:
            assigned = consumer.assignment()
        except Exception:  # not started yet or stopping
            return

        async def done(tp: Any) -> int | None:
            reached = committed.get(tp)
            return await consumer.position(tp) if reached is None else reached

        held = [tp for tp in assigned if self.topics is None or tp.topic in self.topics]
        await self.reporter.report(held, consumer.highwater, done)


def add_lag_timer(app: faust.App, interval_s: float = 1.0, topics: Collection[str] | None = None) -> FaustLag:
    """Update adcast_consumer_lag every `interval_s` while the app runs."""
    reporter = FaustLag(app, topics=topics)

    @app.timer(interval=interval_s, name="adcast-consumer-lag")
    async def consumer_lag() -> None:
        await reporter.report()

    return reporter
