"""The inference tier: prediction requests in, affinities out (Redis and the affinities topic).

Loop: consume requests into a micro-batch (max size, max wait), keep the newest per user, render
prompts, score with the engine, write Redis through the version-guarded script, publish
AffinityUpdate, and only then commit the consumed offsets. A crash anywhere before the commit
replays the batch; the version guard makes the replay harmless.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from adcast import metrics, serde
from adcast.config import Settings
from adcast.core.affinities import Affinities
from adcast.core.batching import MicroBatcher
from adcast.core.prompt import render
from adcast.core.requests import PredictionRequest
from adcast.engines.base import ScoringEngine
from adcast.errors import SerdeError, StoreUnavailable
from adcast.kafka import aiokafka_config
from adcast.store import AsyncAffinityStore

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Stats:
    batches: int = 0
    scored: int = 0
    written: int = 0
    stale: int = 0
    dead_letters: int = 0


class InferenceWorker:
    def __init__(self, settings: Settings, engine: ScoringEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.batcher: MicroBatcher[PredictionRequest] = MicroBatcher(
            settings.infer.max_batch, settings.infer.max_wait_ms
        )
        self.stop = asyncio.Event()
        self.stats = Stats()
        self._offsets: dict[TopicPartition, int] = {}

    async def run(self) -> Stats:
        s = self.settings
        kafka = aiokafka_config(s)
        consumer = AIOKafkaConsumer(
            s.topics.name("requests"),
            group_id=s.infer.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=300_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=s.infer.fetch_max_wait_ms,
            **kafka,
        )
        # Not idempotent: aiokafka's InitProducerId fails on the local broker, and duplicates of
        # the affinities topic are harmless (audit log, versioned records).
        producer = AIOKafkaProducer(acks="all", linger_ms=5, **kafka)
        store = AsyncAffinityStore(s.redis)
        try:
            await producer.start()
            await consumer.start()
        except BaseException:
            await producer.stop()
            await consumer.stop()
            await store.close()
            raise
        log.info(
            "inference worker started group=%s topic=%s model=%s",
            s.infer.group_id,
            s.topics.name("requests"),
            self.engine.model_version,
        )
        try:
            while not self.stop.is_set():
                timeout = self.batcher.wait_ms(_now_ms()) if len(self.batcher) else s.infer.max_wait_ms
                records = await consumer.getmany(timeout_ms=max(1, timeout), max_records=s.infer.max_batch)
                for tp, messages in records.items():
                    for m in messages:
                        await self._add(m, producer)
                        self._offsets[tp] = m.offset + 1
                if self.batcher.ready(_now_ms()) or (self._offsets and not len(self.batcher)):
                    await self._flush(consumer, producer, store)
            if len(self.batcher) or self._offsets:
                await self._flush(consumer, producer, store)  # finish the batch in flight
        finally:
            await consumer.stop()  # leaves the group
            await producer.stop()
            await store.close()
            log.info(
                "inference worker stopped batches=%s scored=%s written=%s stale=%s",
                self.stats.batches,
                self.stats.scored,
                self.stats.written,
                self.stats.stale,
            )
        return self.stats

    async def _add(self, message: Any, producer: AIOKafkaProducer) -> None:
        try:
            request = PredictionRequest.from_record(serde.decode(serde.REQUEST, message.value))
        except SerdeError as exc:
            letter = serde.encode_dead_letter(message, "decode", exc.reason, exc.detail, _now_ms())
            await producer.send_and_wait(self.settings.topics.name("dead_letters"), letter, key=message.key)
            metrics.DEAD_LETTERS.labels("decode", exc.reason).inc()
            self.stats.dead_letters += 1
            log.warning(
                "dead-letter stage=decode reason=%s partition=%s offset=%s",
                exc.reason,
                message.partition,
                message.offset,
            )
            return
        self.batcher.add(request, _now_ms())

    async def _write(self, store: AsyncAffinityStore, items: list[Affinities]) -> list[bool]:
        """Write until Redis takes it: nothing is committed before its write succeeds."""
        delay = 0.1
        while True:
            try:
                return await store.write_many(items)
            except StoreUnavailable as exc:
                metrics.RETRIES.labels("store_write").inc()
                log.warning("redis unavailable, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _flush(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, store: AsyncAffinityStore) -> None:
        superseded = self.batcher.superseded
        batch = self.batcher.take()
        offsets, self._offsets = self._offsets, {}
        if batch:
            metrics.SUPERSEDED.inc(superseded)
            metrics.BATCH_SIZE.observe(len(batch))
            prompts = [render(r) for r in batch]
            started = time.monotonic()
            # The engine blocks: run it off the event loop so heartbeats keep flowing.
            scored = await asyncio.get_running_loop().run_in_executor(
                None, self.engine.score, prompts, self.settings.infer.top_k
            )
            metrics.INFERENCE_SECONDS.observe(time.monotonic() - started)
            computed_at = _now_ms()
            items = [
                Affinities(
                    r.user_id, r.version, self.engine.model_version, computed_at, r.newest_event_time, tuple(top)
                )
                for r, top in zip(batch, scored, strict=True)
            ]
            written = await self._write(store, items)
            written_at = _now_ms()
            topic = self.settings.topics.name("affinities")
            sends = [
                await producer.send(topic, serde.encode(serde.AFFINITY, a.to_record()), key=a.user_id.encode())
                for a in items
            ]
            await asyncio.gather(*sends)
            for a, ok in zip(items, written, strict=True):
                metrics.WRITES.labels("written" if ok else "stale").inc()
                if ok:
                    metrics.FRESHNESS_SECONDS.observe(max(0, written_at - a.newest_event_time) / 1000)
            self.stats.batches += 1
            self.stats.scored += len(items)
            self.stats.written += sum(written)
            self.stats.stale += len(written) - sum(written)
        if offsets:
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # The partitions moved to another worker, which will redo these requests; the
                # version guard makes that harmless.
                log.warning("commit failed (rebalance?): %s", exc)


def run(settings: Settings) -> None:
    from adcast.engines import create_engine

    engine = create_engine(
        settings.infer.engine, settings.infer.model_dir, settings.infer.device, settings.infer.cpu_threads
    )
    metrics.serve(settings.metrics_port)
    worker = InferenceWorker(settings, engine)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop.set)
        await worker.run()

    try:
        asyncio.run(main())
    finally:
        engine.close()
