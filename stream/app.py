"""The stream tier: a Faust application over the events, profiles and tick topics.

One agent consumes the three co-partitioned topics, so every change to a user's history happens
in one place, in order, inside Faust's stream iteration (which is where Faust tables accept
writes). A timer sends a tick to each partition this worker owns; the tick, handled by the same
agent, emits the requests whose trigger is due. Processing is at-least-once; effects are made
idempotent by the event-id dedupe inside the changelogged table and by versioned Redis writes.
"""

from __future__ import annotations

import logging
import time

import faust

from adcast import metrics, serde
from adcast.config import Settings
from adcast.core.history import HistoryLimits
from adcast.core.triggers import TriggerPolicy
from stream import transport
from stream.processor import DeadLetter, Outcome, StreamProcessor

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


def create_app(settings: Settings) -> faust.App:
    s = settings.stream
    t = settings.topics
    transport.FETCH_MAX_WAIT_MS = s.fetch_max_wait_ms
    app = faust.App(
        s.app_id,
        broker=[f"adcast://{b.strip()}" for b in settings.kafka.bootstrap_servers.split(",")],
        store="rocksdb://",
        datadir=s.data_dir,
        processing_guarantee="at_least_once",
        topic_partitions=t.partitions,
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
        stream_wait_empty=False,
    )
    processor = StreamProcessor(
        HistoryLimits(min_events=s.history_events, dedupe_window=s.dedupe_window),
        TriggerPolicy(quiet_ms=s.quiet_ms, max_delay_ms=s.max_delay_ms, min_interval_ms=s.min_interval_ms),
    )
    events_topic, profiles_topic = t.name("events"), t.name("profiles")
    ticks_topic = t.name("ticks")
    inputs = app.topic(events_topic, profiles_topic, ticks_topic, key_type=bytes, value_type=bytes)
    ticks = app.topic(ticks_topic, partitions=t.partitions, internal=True, key_type=bytes, value_type=bytes)
    requests = app.topic(t.name("requests"), key_type=bytes, value_type=bytes)
    dead_letters = app.topic(t.name("dead_letters"), key_type=bytes, value_type=bytes)
    table = app.Table("history", partitions=t.partitions, key_type=bytes, value_type=bytes)

    async def send(outcome: Outcome, message: faust.types.Message) -> None:
        for request in outcome.requests:
            await requests.send(key=request.user_id.encode(), value=serde.encode(serde.REQUEST, request.to_record()))
            metrics.REQUESTS_EMITTED.labels(request.reason).inc()
        if outcome.dead_letter is not None:
            d = outcome.dead_letter
            await dead_letters.send(
                key=message.key, value=serde.encode_dead_letter(message, d.stage, d.reason, d.detail, _now_ms())
            )
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
        if outcome.duplicate:
            metrics.DUPLICATES.inc()

    @app.agent(inputs)
    async def process(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                if message.topic == events_topic:
                    metrics.EVENTS_IN.inc()
                    outcome = processor.on_event(table, message.value, message.partition, message.offset, _now_ms())
                elif message.topic == profiles_topic:
                    outcome = processor.on_profile(table, message.value, message.partition)
                else:
                    outcome = processor.on_tick(table, message.partition, _now_ms())
            except Exception as exc:
                # A bug must neither stop the worker (Faust would restart the agent on the same
                # message, forever) nor lose the input: it goes to the DLQ, raw, with the reason.
                log.exception(
                    "unexpected error topic=%s partition=%s offset=%s", message.topic, message.partition, message.offset
                )
                if message.topic == ticks_topic:
                    continue
                outcome = Outcome(dead_letter=DeadLetter("process", "unexpected_error", f"{type(exc).__name__}: {exc}"))
            await send(outcome, message)

    @app.timer(interval=s.tick_ms / 1000)
    async def tick() -> None:
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == events_topic}
        for partition in sorted(owned):
            await ticks.send(key=b"tick", value=b"", partition=partition)
        metrics.PENDING_USERS.set(sum(len(u) for u in processor.pending.values()))

    @table.on_recover
    async def reindex() -> None:
        pending = processor.reindex(list(table.items()))
        log.info("recovered table pending_users=%s", pending)

    return app
