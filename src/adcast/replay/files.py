"""Replaying a data directory: profiles and advertisers first, then events in event-time order."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from adcast.config import Settings
from adcast.core.clock import now_ms
from adcast.data.files import read_records
from adcast.errors import Rejected, SerdeError
from adcast.kafka import require_topics
from adcast.replay.common import (
    Outgoing,
    Pacer,
    ReplaySummary,
    Sink,
    checked_event,
    event_producer,
    produce,
    require_named,
)
from adcast.wire import serde
from adcast.wire.schema_registry import activate as activate_schemas

log = logging.getLogger(__name__)


def replay(
    settings: Settings,
    data_dir: str | Path,
    rate: float | None = None,
    live: bool = False,
    limit: int | None = None,
    collect: bool = False,
    progress: bool = True,
    *,
    speedup: float | None = None,
    to_topic: str | None = None,
) -> ReplaySummary:
    """Replay a data directory: profiles, advertisers, then events to `to_topic` (default: events)."""
    from tqdm import tqdm

    pacer = Pacer(rate, speedup)
    t = settings.topics
    topic = to_topic or t.name("events")
    require_topics(settings, ["profiles", "advertisers"])
    activate_schemas(settings, writes=(serde.PROFILE, serde.ADVERTISER, serde.EVENT))
    producer = event_producer(settings)
    require_named(settings, producer, [topic])
    summary = ReplaySummary()
    started = time.monotonic()

    for profile in read_records(data_dir, "profiles"):
        produce(producer, t.name("profiles"), profile["user_id"], serde.encode(serde.PROFILE, profile))
        summary.profiles += 1
    for adv in read_records(data_dir, "advertisers"):
        produce(producer, t.name("advertisers"), adv["advertiser_id"], serde.encode(serde.ADVERTISER, adv))
        summary.advertisers += 1
    summary.topics[t.name("profiles")] += summary.profiles
    summary.topics[t.name("advertisers")] += summary.advertisers
    producer.flush(30)

    now = now_ms()
    valid: list[tuple[int, Outgoing]] = []
    for record in read_records(data_dir, "events"):
        try:
            value = serde.encode(serde.EVENT, checked_event(record, now))
        except Rejected as exc:
            stage = "encode" if isinstance(exc, SerdeError) else exc.stage
            summary.invalid[f"{stage}:{exc.reason}"] += 1
            log.debug("skipped invalid event stage=%s reason=%s detail=%s", stage, exc.reason, exc.detail)
            continue
        valid.append((record["event_time"], Outgoing(record["user_id"].encode(), record, value)))
    if summary.invalid:
        log.warning("skipping %d invalid events: %s", summary.invalid.total(), dict(summary.invalid))
    # Stable: events with the same time keep their file order.
    events = [out for _, out in sorted(valid, key=lambda v: v[0])][:limit]

    sink = Sink(settings, producer, topic, summary, pacer, live, collect)
    events_started = time.monotonic()
    with tqdm(total=len(events), unit="ev", desc="replay", disable=not progress, mininterval=0.5) as bar:
        for out in events:
            sink.event(out)
            bar.update(1)
    sink.finish()
    summary.event_seconds = time.monotonic() - events_started
    summary.seconds = time.monotonic() - started
    return summary
