"""The inference tier: prediction requests in, affinities out (Redis and the affinities topic).

Slots: a worker writes one store slot (infer.slot; adcast.core.slots), says so in the slot pointer
every HEARTBEAT_S, and reads the live requests topic and the rollout topic, taking rollout requests
for its own slot only. Live requests come first: while the live topic has a backlog, the rollout
partitions are paused. Affinity updates carry the slot in a header.

Loop: consume requests into a micro-batch (max size, max wait), keep the newest per user, render
prompts, score with the engine, write Redis through the version-guarded script, publish
AffinityUpdate, and only then commit the consumed offsets. A crash anywhere before the commit
replays the batch; the version guard makes the replay harmless.

Engine failures: each call runs in a thread with a deadline (infer.engine_timeout_s) and is
retried with exponential backoff (infer.engine_attempts, infer.engine_retry_base_s). A batch whose
error survives the retries is halved until the failing requests are found, so one bad request
cannot take its batch-mates down; what still fails is dead-lettered (stage "infer", reason
engine_error or engine_timeout, raw request bytes) and only then committed. Every consumed offset
is committed after either a Redis write or a dead letter, never without. When no request of
infer.engine_max_failed_batches micro-batches in a row could be scored, the engine is taken as
dead: the worker stops with EngineDead (that batch is neither dead-lettered nor committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from adcast import metrics
from adcast.config import Settings
from adcast.core.affinities import Affinities
from adcast.core.batching import MicroBatcher
from adcast.core.clock import now_ms
from adcast.core.prompt import render
from adcast.core.requests import MAX_VERSION, MIN_VERSION, PredictionRequest
from adcast.core.slots import ROLLOUT_REASON, SLOT_HEADER
from adcast.core.triggers import REASON_HEADER, SETTLE
from adcast.engines.base import ScoringEngine
from adcast.errors import EngineDead, Interrupted, InvalidEvent, Rejected, StoreKeyError, StoreUnavailable
from adcast.inference.scoring import Scorer, backoff
from adcast.kafka import aiokafka_config, create_topics
from adcast.kafka.dead_letters import DeadLetterSink
from adcast.kafka.lag import LagReporter
from adcast.store import AsyncAffinityStore
from adcast.wire import serde
from adcast.wire.schema_registry import activate as activate_schemas

log = logging.getLogger(__name__)

UNTIMED_REASONS = frozenset({ROLLOUT_REASON, SETTLE})  # requests whose age is no freshness

HEARTBEAT_S = 10.0  # how often a worker tells the slot pointer that its slot has a writer


@dataclass
class Stats:
    batches: int = 0
    scored: int = 0
    written: int = 0
    stale: int = 0
    dead_letters: int = 0
    engine_retries: int = 0


@dataclass(frozen=True, slots=True)
class _Pending:
    """A request with the record it came in, which its dead letter carries unchanged."""

    request: PredictionRequest
    message: Any

    @property
    def user_id(self) -> str:
        return self.request.user_id

    @property
    def version(self) -> int:
        return self.request.version


class InferenceWorker:
    def __init__(self, settings: Settings, engine: ScoringEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.batcher: MicroBatcher[_Pending] = MicroBatcher(settings.infer.max_batch, settings.infer.max_wait_ms)
        self.stop = asyncio.Event()
        self.stats = Stats()
        self._offsets: dict[TopicPartition, int] = {}
        self._failed_batches = 0  # micro-batches in a row of which nothing could be scored
        self.scorer = Scorer(settings.infer, engine, self.stop)
        self.lag = LagReporter("infer")
        self.slot = settings.infer.slot
        self._slot_header = self.slot.encode()
        self._rollout_topic = settings.topics.name("rollout")
        self._rollout_paused = False
        self._producer: AIOKafkaProducer | None = None
        self.dead_letters = DeadLetterSink(settings, self._send)

    async def _send(self, key: bytes | None, value: bytes) -> Any:
        assert self._producer is not None, "dead letters are sent while the worker runs"
        return await self._producer.send(self.dead_letters.topic, value, key=key)

    async def run(self) -> Stats:
        s = self.settings
        await asyncio.to_thread(create_topics, s, 30.0, ["requests", "rollout"])
        async with contextlib.AsyncExitStack() as stack:
            # Unwound in reverse: the consumer leaves the group first, the store closes last.
            store = AsyncAffinityStore(s.redis, self.slot)
            stack.push_async_callback(store.close)
            producer = self._producer = self._new_producer()
            stack.push_async_callback(producer.stop)
            await producer.start()
            consumer = self._new_consumer()
            stack.push_async_callback(consumer.stop)
            await consumer.start()
            stack.callback(self._stopped)
            stack.callback(self.lag.forget)
            log.info(
                "inference worker started group=%s topic=%s slot=%s model=%s",
                s.infer.group_id,
                s.topics.name("requests"),
                self.slot,
                self.engine.model_version,
            )
            try:
                await self._loop(consumer, producer, store)
            except Interrupted:
                log.info("stopped while retrying; the batch stays uncommitted for the next worker")
            except EngineDead as exc:
                log.critical("stopping the inference worker: %s", exc)
                raise
        return self.stats

    def _new_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            s.topics.name("requests"),
            self._rollout_topic,
            group_id=s.infer.group_id,
            enable_auto_commit=False,
            auto_offset_reset=s.infer.start_at,
            session_timeout_ms=s.kafka.session_timeout_ms,
            heartbeat_interval_ms=s.kafka.heartbeat_interval_ms,
            rebalance_timeout_ms=s.kafka.rebalance_timeout_ms,
            max_poll_interval_ms=300_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=s.infer.fetch_max_wait_ms,
            **aiokafka_config(s),
        )

    def _new_producer(self) -> AIOKafkaProducer:
        # Not idempotent: aiokafka's InitProducerId fails on the local broker, and duplicates of
        # the affinities topic are harmless (audit log, versioned records).
        s = self.settings
        return AIOKafkaProducer(
            acks="all", linger_ms=5, max_request_size=s.kafka.max_request_bytes, **aiokafka_config(s)
        )

    async def _loop(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, store: AsyncAffinityStore) -> None:
        infer = self.settings.infer
        announced = 0.0
        while not self.stop.is_set():
            if time.monotonic() - announced >= HEARTBEAT_S:
                announced = time.monotonic()
                await self._announce(store)
            timeout = self.batcher.wait_ms(now_ms()) if len(self.batcher) else infer.max_wait_ms
            # Fetch no more than the batch has room for, so a micro-batch never exceeds max_batch.
            room = max(1, infer.max_batch - len(self.batcher))
            records = await consumer.getmany(timeout_ms=max(1, timeout), max_records=room)
            for tp, messages in records.items():
                for m in messages:
                    await self._add(m)
                    self._offsets[tp] = m.offset + 1
            await self.lag.report(consumer.assignment(), consumer.highwater, consumer.position)
            await self._prioritise_live(consumer)
            if self.batcher.ready(now_ms()) or (self._offsets and not len(self.batcher)):
                await self._flush(consumer, producer, store)
        if len(self.batcher) or self._offsets:
            await self._flush(consumer, producer, store)  # finish the batch in flight

    def _stopped(self) -> None:
        self.stats.engine_retries = self.scorer.retries
        log.info(
            "inference worker stopped batches=%s scored=%s written=%s stale=%s dead_letters=%s engine_retries=%s",
            self.stats.batches,
            self.stats.scored,
            self.stats.written,
            self.stats.stale,
            self.stats.dead_letters,
            self.stats.engine_retries,
        )

    async def _announce(self, store: AsyncAffinityStore) -> None:
        try:
            if await store.announce(now_ms()):
                log.info("slot %s is live: it is the first slot of this store", self.slot)
        except StoreUnavailable as exc:
            log.warning("could not tell the slot pointer that slot %s runs: %s", self.slot, exc)

    async def _prioritise_live(self, consumer: AIOKafkaConsumer) -> None:
        """Pause the rollout partitions while a live partition is a micro-batch or more behind,
        and resume them once live traffic is caught up: a rollout never delays live requests."""
        assigned = consumer.assignment()
        rollout = [tp for tp in assigned if tp.topic == self._rollout_topic]
        if not rollout:
            return
        behind = 0
        for tp in assigned:
            if tp.topic != self._rollout_topic:
                high = consumer.highwater(tp)
                if high is not None:
                    with contextlib.suppress(Exception):  # revoked meanwhile
                        behind += max(0, high - await consumer.position(tp))
        pause = behind >= self.settings.infer.max_batch
        if pause != self._rollout_paused:
            (consumer.pause if pause else consumer.resume)(*rollout)
            self._rollout_paused = pause
            log.debug("rollout partitions %s, live backlog %s", "paused" if pause else "resumed", behind)

    async def _add(self, message: Any) -> None:
        if message.topic == self._rollout_topic and not self._for_this_slot(message):
            metrics.ROLLOUT_SKIPPED.inc()
            return
        try:
            self.batcher.add(_Pending(_request(message), message), now_ms())
        except Rejected as exc:
            await self._dead_letter([(message, exc)])

    def _for_this_slot(self, message: Any) -> bool:
        return any(k == SLOT_HEADER and v == self._slot_header for k, v in message.headers or ())

    async def _dead_letter(self, letters: Sequence[tuple[Any, Rejected]]) -> None:
        """Each (consumed record, why) to the dead-letter topic, delivered before any commit."""
        await self.dead_letters.send(letters)
        self.stats.dead_letters = self.dead_letters.sent

    async def _write(self, store: AsyncAffinityStore, items: list[Affinities]) -> list[bool | StoreKeyError]:
        """Write until Redis takes it: nothing is committed before its write succeeds. A stop
        request during an outage leaves the batch uncommitted (Interrupted)."""
        infer = self.settings.infer
        delay = infer.store_retry_base_s
        while True:
            try:
                return await store.write_many(items)
            except StoreUnavailable as exc:
                metrics.RETRIES.labels("store_write").inc()
                log.warning("redis unavailable, retrying in %.1fs: %s", delay, exc)
                await backoff(self.stop, delay)
                delay = min(delay * 2, infer.store_retry_max_s)

    async def _flush(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, store: AsyncAffinityStore) -> None:
        """A micro-batch's steps, in order; a crash anywhere before the last replays the batch."""
        superseded = self.batcher.superseded
        batch = self.batcher.take()
        offsets, self._offsets = self._offsets, {}
        if batch:
            metrics.SUPERSEDED.inc(superseded)
            metrics.BATCH_SIZE.observe(len(batch))
            scored = await self._score(batch)  # 1. score (failures dead-lettered)
            items, results = await self._write_scored(store, scored)  # 2. write Redis (refusals dead-lettered)
            written_at = now_ms()
            await self._publish(producer, scored, items, results)  # 3. publish AffinityUpdates
            self._record(scored, items, results, written_at)  # 4. record metrics and stats
        await self._commit(consumer, offsets)  # 5. commit the consumed offsets

    async def _score(self, batch: list[_Pending]) -> list[tuple[_Pending, list[tuple[str, float]]]]:
        # The engine blocks: it runs in a thread so heartbeats keep flowing.
        scored, failed = await self.scorer.score(batch, _prompt, self.settings.infer.engine_attempts)
        self._failed_batches = 0 if scored else self._failed_batches + 1
        limit = self.settings.infer.engine_max_failed_batches
        if self._failed_batches >= limit:
            # Raised before dead-lettering or committing this batch: a restarted worker (or a
            # healthy one, after the rebalance) scores it again.
            raise EngineDead(
                f"the engine failed every request of {limit} micro-batches in a row (last: {failed[0][1]}); "
                "stopping the inference worker instead of dead-lettering everything. Check the model "
                "and the device, then restart (see ADCAST_INFER__ENGINE_MAX_FAILED_BATCHES)"
            )
        await self._dead_letter([(p.message, why) for p, why in failed])
        return scored

    async def _write_scored(
        self, store: AsyncAffinityStore, scored: list[tuple[_Pending, list[tuple[str, float]]]]
    ) -> tuple[list[Affinities], list[bool | StoreKeyError]]:
        computed_at = now_ms()
        model = self.engine.model_version
        items = [
            Affinities(p.user_id, p.version, model, computed_at, p.request.newest_event_time, tuple(top))
            for p, top in scored
        ]
        results = await self._write(store, items) if items else []
        # A user whose key refused the write: its request goes to the dead-letter topic, the rest
        # of the batch is written and published all the same.
        await self._dead_letter(
            [(p.message, r) for (p, _), r in zip(scored, results, strict=True) if isinstance(r, Rejected)]
        )
        return items, results

    async def _publish(
        self,
        producer: AIOKafkaProducer,
        scored: list[tuple[_Pending, list[tuple[str, float]]]],
        items: list[Affinities],
        results: list[bool | StoreKeyError],
    ) -> None:
        topic = self.settings.topics.name("affinities")
        sends = [
            await producer.send(
                topic,
                serde.encode(serde.AFFINITY, a.to_record()),
                key=a.user_id.encode(),
                headers=[(SLOT_HEADER, self._slot_header), (REASON_HEADER, p.request.reason.encode())],
            )
            for (p, _), a, r in zip(scored, items, results, strict=True)
            if not isinstance(r, StoreKeyError)
        ]
        await asyncio.gather(*sends)

    def _record(
        self,
        scored: list[tuple[_Pending, list[tuple[str, float]]]],
        items: list[Affinities],
        results: list[bool | StoreKeyError],
        written_at: int,
    ) -> None:
        for (p, _), a, r in zip(scored, items, results, strict=True):
            metrics.WRITES.labels(
                self.slot, "failed" if isinstance(r, StoreKeyError) else "written" if r else "stale"
            ).inc()
            # A rollout request carries a history that may be days old, a settle call is late on
            # purpose: neither age is freshness.
            if r is True and p.request.reason not in UNTIMED_REASONS:
                metrics.FRESHNESS_SECONDS.labels(self.slot).observe(max(0, written_at - a.newest_event_time) / 1000)
        self.stats.batches += 1
        self.stats.scored += len(items)
        self.stats.written += results.count(True)
        self.stats.stale += results.count(False)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The partitions moved to another worker, which will redo these requests; the version
            # guard makes that harmless.
            log.warning("commit failed (rebalance?): %s", exc)


def _request(message: Any) -> PredictionRequest:
    """The request a consumed record holds, or Rejected."""
    request = PredictionRequest.from_record(serde.decode(serde.REQUEST, message.value))
    if not MIN_VERSION <= request.version <= MAX_VERSION:
        # Redis compares versions as doubles: beyond 2^53 they compare wrongly, and one huge
        # version would block every later write of the user.
        raise InvalidEvent(
            "version_out_of_range",
            f"version {request.version} of user {request.user_id!r} is outside [{MIN_VERSION}, {MAX_VERSION}]",
        )
    return request


def _prompt(p: _Pending) -> str:
    return render(p.request)


def run(settings: Settings) -> None:
    from adcast.engines import engine_from_settings

    activate_schemas(settings, writes=(serde.AFFINITY, serde.DEAD_LETTER))
    engine = engine_from_settings(settings.infer)
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
