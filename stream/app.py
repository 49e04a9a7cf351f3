"""The stream tier: a Faust application over the events, profiles and tick topics.

One agent consumes the three co-partitioned topics, so every change to a user's history happens
in one place, in order. It takes messages in batches (`take_events`) and hands each batch to the
Faust-free processor, which writes each changed history once per batch (stream/table.py routes
those writes to the right partition). A timer sends a tick to each partition this worker owns;
the tick, handled by the same agent, emits the requests whose trigger is due. Processing is
at-least-once; effects are made idempotent by the event-id dedupe inside the changelogged table
and by versioned Redis writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable
from typing import Any, NoReturn, cast

import faust

from adcast import metrics
from adcast.config import ROCKSDB_WRITE_BUFFERS, Settings
from adcast.core.clock import now_ms
from adcast.core.triggers import TriggerPolicy
from adcast.kafka import ensure_dead_letter_topic
from adcast.wire import serde
from adcast.wire.history_encoder import encode_request
from adcast.wire.schema_registry import activate as activate_schemas
from stream import transport
from stream.processor import EVENT, PROFILE, TICK, Input, Outcome, StreamProcessor
from stream.table import FaustTableStore

log = logging.getLogger(__name__)


class _HeldWrites:
    """The table, with a batch's writes held until its requests are delivered. Written first, a
    history marked "emitted" would outlive a crash that lost the request, and that request would
    never be sent again; held, a crash loses both, and the re-read batch emits it."""

    def __init__(self, store: FaustTableStore) -> None:
        self.store = store
        self.held: list[tuple[bytes, bytes, Any]] = []

    def get(self, key: bytes, ref: Any) -> bytes | None:
        return self.store.get(key, ref)

    def put(self, key: bytes, value: bytes, ref: Any) -> None:
        self.held.append((key, value, ref))

    def _take(self) -> list[tuple[bytes, bytes, Any]]:
        # Whichever release runs first takes the writes: the other finds none left.
        held, self.held = self.held, []
        metrics.HISTORIES_WRITTEN.inc(len(held))
        return held

    async def release(self) -> None:
        await self.store.put_all(self._take())

    def release_now(self) -> None:
        """Without waiting (Faust's own write per key): for a batch being cancelled."""
        for key, value, ref in self._take():
            self.store.put(key, value, ref)


def exit_to_reread(what: str, exc: BaseException) -> NoReturn:
    """Exit at once, before Faust commits any more offsets: the restarted worker re-reads what
    this one could not write."""
    log.critical("%s; exiting so the batch is re-read after restart", what, exc_info=exc)
    logging.shutdown()
    os._exit(70)


def faust_app(settings: Settings) -> faust.App:
    """The Faust app with adcast's broker, transport and timing settings (no agents yet)."""
    s = settings.stream
    transport.FETCH_MAX_WAIT_MS = s.fetch_max_wait_ms
    return faust.App(
        s.app_id,
        broker=[f"adcast://{b.strip()}" for b in settings.kafka.bootstrap_servers.split(",")],
        # SASL/TLS from the same settings as the other clients; applies to Faust's consumer and producer.
        broker_credentials=transport.broker_credentials(settings),
        store="rocksdb://",
        datadir=s.data_dir,
        processing_guarantee="at_least_once",
        topic_partitions=settings.topics.partitions,
        topic_allow_declare=True,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        # The local broker holds a join until the old member's session ends: keep these short.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=10.0,
        stream_recovery_delay=0.0,
        broker_commit_interval=s.commit_interval_ms / 1000,
        stream_wait_empty=False,
        # Changelog and request writes leave in few large produce requests instead of many small
        # ones: measured +35% events/s on the 2-core machine, for at most this much added latency.
        producer_linger=s.producer_linger_ms / 1000,
        producer_max_batch_size=s.producer_batch_bytes,
        producer_max_request_size=settings.kafka.max_request_bytes,
    )


def create_count_app(settings: Settings) -> faust.App:
    """An app whose agent only counts the events topic's messages, in the stream tier's batches:
    Faust's own ceiling on this machine, which `adcast bench ingest` compares the tier against."""
    app = faust_app(settings)
    s = settings.stream
    events = app.topic(settings.topics.name("events"), key_type=bytes, value_type=bytes)

    @app.agent(events)
    async def count(stream: faust.StreamT) -> None:
        async for batch in cast(faust.Stream, stream).take_events(s.batch_max_events, within=s.batch_wait_ms / 1000):
            metrics.EVENTS_IN.inc(len(batch))
            metrics.INGEST_BATCH_SIZE.observe(len(batch))

    return app


def create_app(settings: Settings) -> faust.App:
    s = settings.stream
    t = settings.topics
    # Writes: requests, dead letters, and the history on the table's changelog.
    activate_schemas(settings, writes=(serde.REQUEST, serde.DEAD_LETTER, serde.HISTORY))
    app = faust_app(settings)
    processor = StreamProcessor(
        s.history_limits(),
        TriggerPolicy(quiet_ms=s.quiet_ms, max_delay_ms=s.max_delay_ms, min_interval_ms=s.min_interval_ms),
        cache_users=s.cache_users,
        partitions=t.partitions,
    )
    events_topic, profiles_topic = t.name("events"), t.name("profiles")
    ticks_topic = t.name("ticks")
    inputs = app.topic(events_topic, profiles_topic, ticks_topic, key_type=bytes, value_type=bytes)
    ticks = app.topic(ticks_topic, partitions=t.partitions, internal=True, key_type=bytes, value_type=bytes)
    requests = app.topic(t.name("requests"), key_type=bytes, value_type=bytes)
    dead_letters = app.topic(t.name("dead_letters"), key_type=bytes, value_type=bytes)
    table = app.Table(
        "history",
        partitions=t.partitions,
        key_type=bytes,
        value_type=bytes,
        # Per table partition: Faust's defaults (a 2 GiB block cache, three 64 MiB memtables)
        # would let a worker holding a dozen partitions outgrow any sensible pod.
        options={
            "block_cache_size": s.rocksdb_block_cache_mb << 20,
            "write_buffer_size": s.rocksdb_write_buffer_mb << 20,
            "max_write_buffer_number": ROCKSDB_WRITE_BUFFERS,
        },
    )

    # A changelog write that never arrived would let Faust commit offsets past state that only
    # this worker's disk holds: exit before that commit (it flushes the producer first).
    store = FaustTableStore(table, on_lost_write=lambda exc: exit_to_reread("a changelog write failed", exc))
    kinds = {events_topic: EVENT, profiles_topic: PROFILE, ticks_topic: TICK}
    max_request = settings.kafka.max_request_bytes

    def producer() -> transport.Producer:
        return cast(transport.Producer, app.producer)  # the transport's; made when first asked for

    async def send(outcome: Outcome) -> None:
        sent: list[Awaitable[Any]] = []
        if outcome.requests:
            await requests.maybe_declare()  # once; as a Faust send would
            records = [(None, r.user_id.encode(), encode_request(r)) for r in outcome.requests]
            sent += [b.delivered for b in await producer().send_now(requests.get_topic_name(), records)]
            for request in outcome.requests:
                metrics.REQUESTS_EMITTED.labels(request.reason).inc()
        if outcome.dead_letters:
            await asyncio.to_thread(ensure_dead_letter_topic, settings)
        for item, d in outcome.dead_letters:
            message = item.ref.message
            key, letter = serde.dead_letter(message, d.stage, d.reason, d.detail, now_ms(), max_request)
            sent.append(await dead_letters.send(key=key, value=letter))
            metrics.DEAD_LETTERS.labels(d.stage, d.reason).inc()
            log.warning(
                "dead-letter stage=%s reason=%s topic=%s partition=%s offset=%s detail=%s",
                d.stage,
                d.reason,
                message.topic,
                message.partition,
                message.offset,
                d.detail,
            )
        await asyncio.gather(*sent)  # delivered
        metrics.EVENTS_IN.inc(outcome.events)
        metrics.DUPLICATES.inc(outcome.duplicates)

    # Held from a batch's first read of the table to its last write. Faust does not wait for the
    # agent when partitions are revoked (stream_wait_empty=False); a batch still in flight then
    # would write its histories to a changelog the partition's new owner has already recovered
    # from and written to, and this worker, given the partition back, would resume its recovery
    # after its own stale write. The revoke waits for this instead.
    in_flight = asyncio.Lock()

    @app.agent(inputs)
    async def process(stream: faust.StreamT) -> None:
        # Faust acks a batch's offsets once the loop body returns, so effects precede commits.
        async for batch in cast(faust.Stream, stream).take_events(s.batch_max_events, within=s.batch_wait_ms / 1000):
            items = [
                Input(kinds[m.topic], m.value, m.partition, m.offset, e, m.key) for e in batch for m in (e.message,)
            ]
            held = _HeldWrites(store)
            async with in_flight:
                try:
                    outcome = processor.on_batch(held, items, now_ms())
                    metrics.INGEST_BATCH_SIZE.observe(len(items))
                    # Shielded: a shutdown arriving mid-send must not leave the acked batch's requests unsent.
                    await asyncio.shield(send(outcome))
                    await asyncio.shield(held.release())
                except asyncio.CancelledError:
                    held.release_now()  # Faust acks the batch on the way out: its state must be written
                    raise
                except BaseException as exc:
                    # Not one bad input (those are dead-lettered inside on_batch) but the state store or
                    # the producer failing. Faust would restart the agent and ack this batch on the way
                    # out, losing it; exiting now, before any ack, makes the restart re-read it instead.
                    exit_to_reread("batch failed", exc)

    @app.timer(interval=s.tick_ms / 1000)
    async def tick() -> None:
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == events_topic}
        if owned:
            await ticks.maybe_declare()  # once; as a Faust send would
            # Unlingered too: the tick is what emits due requests, so its delay is the features'.
            await producer().send_now(ticks_topic, [(p, b"tick", b"") for p in sorted(owned)])
        metrics.PENDING_USERS.set(sum(len(u) for u in processor.pending.values()))

    @table.on_recover
    async def reindex() -> None:
        pending = processor.reindex(list(table.items()))
        log.info("recovered table pending_users=%s", pending)

    async def revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        # Awaited inside the rebalance: no new owner reads a changelog before this returns.
        async with in_flight:  # the batch in flight, if any, has handed its histories over
            processor.forget_cached()
            await producer().flush()  # and they have reached the changelog

    async def assigned(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        processor.forget_cached()  # partitions moved: read state from the table again

    app.on_partitions_revoked.connect(cast(Any, revoked))  # Faust's signal typing rejects async handlers
    app.on_partitions_assigned.connect(cast(Any, assigned))

    return app
