"""The stream tier: a Faust application over the events, profiles and tick topics.

One agent consumes the three co-partitioned topics, so every change to a user's history happens
in one place, in order. It takes messages in batches (`take_events`) and hands each to
stream/commit.py's BatchCommit, which runs the batch's steps (fold, deliver, write) before Faust
commits its offsets; stream/table.py routes the table writes to the right partition. A timer
sends a tick to each partition this worker owns; the tick, handled by the same agent, emits the
requests whose trigger is due. Processing is at-least-once; effects are made idempotent by the
event-id dedupe inside the changelogged table and by versioned Redis writes. This module only
hooks Faust's agent, timer and signals to BatchCommit, and serves stream/history_page.py's
page from Faust's web server (`stream.web_port`).
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
from adcast.kafka.dead_letters import DeadLetterSink
from adcast.wire import serde
from adcast.wire.history_encoder import encode_request
from adcast.wire.schema_registry import activate as activate_schemas
from stream import transport
from stream.commit import BatchCommit
from stream.history_page import add_history_page
from stream.processor import EVENT, PROFILE, TICK, Outcome, StreamProcessor
from stream.table import FaustTableStore

log = logging.getLogger(__name__)


def exit_to_reread(what: str, exc: BaseException) -> NoReturn:
    """Exit at once, before Faust commits any more offsets: the restarted worker re-reads what
    this one could not write."""
    log.critical("%s; exiting so the batch is re-read after restart", what, exc_info=exc)
    logging.shutdown()
    os._exit(70)


class StreamApp(faust.App):
    """Faust's App, carrying the settings adcast's transport reads (stream/transport.py)."""

    fetch_max_wait_ms = transport.FAUST_FETCH_MAX_WAIT_MS


def web_settings(settings: Settings, pages: bool) -> dict[str, Any]:
    """Faust's web server settings: on with `pages` and a `stream.web_port`."""
    s = settings.stream
    if not (pages and s.web_port):
        return {"web_enabled": False}
    return {
        "web_enabled": True,
        "web_port": s.web_port,
        "web_bind": s.web_bind,
        # This worker's address to the others (its canonical URL): table_route forwards there.
        **({"web_host": s.web_host} if s.web_host else {}),
        # None of Faust's own pages: its table and router views would show any key of any table.
        **{f"web_{name}_enabled": False for name in ("router", "tables", "graph", "stats", "metrics")},
    }


def faust_app(settings: Settings, pages: bool = False) -> faust.App:
    """The Faust app with adcast's broker, transport and timing settings (no agents yet); with
    `pages`, its web server (`web_settings`)."""
    s, k = settings.stream, settings.kafka
    app = StreamApp(
        s.app_id,
        broker=[f"adcast://{b.strip()}" for b in settings.kafka.bootstrap_servers.split(",")],
        # SASL/TLS from the same settings as the other clients; applies to Faust's consumer and producer.
        broker_credentials=transport.broker_credentials(settings),
        store="rocksdb://",
        datadir=s.data_dir,
        processing_guarantee="at_least_once",
        topic_partitions=settings.topics.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        broker_session_timeout=k.session_timeout_ms / 1000,
        broker_heartbeat_interval=k.heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=k.rebalance_timeout_ms / 1000,
        stream_recovery_delay=0.0,
        broker_commit_interval=s.commit_interval_ms / 1000,
        stream_wait_empty=False,
        # Changelog and request writes leave in few large produce requests instead of many small
        # ones: measured +35% events/s on the 2-core machine, for at most this much added latency.
        producer_linger=s.producer_linger_ms / 1000,
        producer_max_batch_size=s.producer_batch_bytes,
        producer_max_request_size=k.max_request_bytes,
        **web_settings(settings, pages),
    )
    app.fetch_max_wait_ms = s.fetch_max_wait_ms
    return app


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


class Delivery:
    """Step 2 of a batch (stream/commit.py): its requests, sent unlingered, and its dead letters,
    each awaited until delivered."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.requests = app.topic(settings.topics.name("requests"), key_type=bytes, value_type=bytes)
        self._dead_letters = app.topic(settings.topics.name("dead_letters"), key_type=bytes, value_type=bytes)
        self.dead_letters = DeadLetterSink(settings, self._send_letter)

    def producer(self) -> transport.Producer:
        return cast(transport.Producer, self.app.producer)  # the transport's; made when first asked for

    async def _send_letter(self, key: bytes | None, value: bytes) -> Awaitable[Any]:
        return await self._dead_letters.send(key=key, value=value)

    async def __call__(self, outcome: Outcome) -> None:
        sent: list[Awaitable[Any]] = []
        if outcome.requests:
            await self.requests.maybe_declare()  # once; as a Faust send would
            records = [(None, r.user_id.encode(), encode_request(r)) for r in outcome.requests]
            sent += [b.delivered for b in await self.producer().send_now(self.requests.get_topic_name(), records)]
            for request in outcome.requests:
                metrics.REQUESTS_EMITTED.labels(request.reason).inc()
        await self.dead_letters.send([(item.ref.message, why) for item, why in outcome.dead_letters])
        await asyncio.gather(*sent)  # delivered
        metrics.EVENTS_IN.inc(outcome.events)
        metrics.DUPLICATES.inc(outcome.duplicates)


def history_table(app: faust.App, settings: Settings) -> Any:
    s = settings.stream
    return app.Table(
        "history",
        partitions=settings.topics.partitions,
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


def create_app(settings: Settings) -> faust.App:
    s, t = settings.stream, settings.topics
    # Writes: requests, dead letters, and the history on the table's changelog.
    activate_schemas(settings, writes=(serde.REQUEST, serde.DEAD_LETTER, serde.HISTORY))
    app = faust_app(settings, pages=True)
    events_topic, ticks_topic = t.name("events"), t.name("ticks")
    inputs = app.topic(events_topic, t.name("profiles"), ticks_topic, key_type=bytes, value_type=bytes)
    ticks = app.topic(ticks_topic, partitions=t.partitions, internal=True, key_type=bytes, value_type=bytes)
    table = history_table(app, settings)
    delivery = Delivery(app, settings)
    policy = s.trigger()
    commit = BatchCommit(
        StreamProcessor(s.history_limits(), policy, partitions=t.partitions),
        # A changelog write that never arrived would let Faust commit offsets past state that only
        # this worker's disk holds: exit before that commit (it flushes the producer first).
        FaustTableStore(table, on_lost_write=lambda exc: exit_to_reread("a changelog write failed", exc)),
        kinds={events_topic: EVENT, t.name("profiles"): PROFILE, ticks_topic: TICK},
        deliver=delivery,
        flush=lambda: delivery.producer().flush(),
        on_failure=lambda exc: exit_to_reread("batch failed", exc),
        cache_users=s.cache_users,
    )

    if app.conf.web_enabled:
        add_history_page(app, table, commit.processor, s.history_limits())

    @app.agent(inputs)
    async def process(stream: faust.StreamT) -> None:
        # Faust acks a batch's offsets once the loop body returns, so effects precede commits.
        async for batch in cast(faust.Stream, stream).take_events(s.batch_max_events, within=s.batch_wait_ms / 1000):
            await commit.run(commit.inputs(batch))

    @app.timer(interval=s.tick_ms / 1000)
    async def tick() -> None:
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == events_topic}
        if owned:
            await ticks.maybe_declare()  # once; as a Faust send would
            # Unlingered too: the tick is what emits due requests, so its delay is the features'.
            await delivery.producer().send_now(ticks_topic, [(p, b"tick", b"") for p in sorted(owned)])
        metrics.PENDING_USERS.set(sum(len(u) for u in commit.processor.pending.values()))

    @table.on_recover
    async def reindex() -> None:
        log.info("recovered table pending_users=%s", commit.recovered(list(table.items())))

    async def revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        await commit.hand_over()  # awaited inside the rebalance: no new owner reads a changelog before

    async def assigned(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        commit.forget_cached()  # partitions moved: read state from the table again

    app.on_partitions_revoked.connect(cast(Any, revoked))  # Faust's signal typing rejects async handlers
    app.on_partitions_assigned.connect(cast(Any, assigned))
    return app
