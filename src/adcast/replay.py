"""Replay a data directory into the topics: profiles and advertisers first, then events in
event-time order, keyed by user id, Avro in the Confluent wire format.

`live=True` re-stamps each event with the wall-clock time at which it is produced (order kept):
that is how the demo and benchmarks measure freshness from a historical world.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adcast import serde
from adcast.config import Settings
from adcast.data.files import read_records
from adcast.errors import ServiceError
from adcast.kafka import confluent_config, require_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivered:
    user_id: str
    event_type: str
    partition: int
    offset: int


@dataclass
class ReplaySummary:
    profiles: int = 0
    advertisers: int = 0
    events: int = 0
    seconds: float = 0.0
    delivered: list[Delivered] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def event_producer(settings: Settings) -> Any:
    from confluent_kafka import Producer

    conf = confluent_config(settings)
    # murmur2 is the Java client's default partitioner: keys land where other producers put them.
    conf.update(
        {
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 5,
            "queue.buffering.max.messages": 200_000,
        }
    )
    return Producer(conf)


def _produce(producer: Any, topic: str, key: str, value: bytes, on_delivery: Callable[..., None] | None = None) -> None:
    while True:
        try:
            producer.produce(topic, key=key.encode(), value=value, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)  # local queue full: let deliveries drain


def replay(
    settings: Settings,
    data_dir: str | Path,
    rate: float | None = None,
    live: bool = False,
    limit: int | None = None,
    collect: bool = False,
    progress: bool = True,
) -> ReplaySummary:
    from tqdm import tqdm

    t = settings.topics
    require_topics(settings, ["events", "profiles", "advertisers"])
    producer = event_producer(settings)
    summary = ReplaySummary()
    started = time.monotonic()
    errors: list[str] = []

    for profile in read_records(data_dir, "profiles"):
        _produce(producer, t.name("profiles"), profile["user_id"], serde.encode(serde.PROFILE, profile))
        summary.profiles += 1
    for adv in read_records(data_dir, "advertisers"):
        _produce(producer, t.name("advertisers"), adv["advertiser_id"], serde.encode(serde.ADVERTISER, adv))
        summary.advertisers += 1
    producer.flush(30)

    events = sorted(read_records(data_dir, "events"), key=lambda e: e["event_time"])[:limit]

    def on_delivery(kind: str) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            elif collect:
                summary.delivered.append(Delivered(msg.key().decode(), kind, msg.partition(), msg.offset()))

        return done

    bar = tqdm(total=len(events), unit="ev", desc="replay", disable=not progress, mininterval=0.5)
    t0 = time.monotonic()
    for n, e in enumerate(events):
        if rate:
            ahead = t0 + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        if live:
            e = {**e, "event_time": int(time.time() * 1000)}
        _produce(producer, t.name("events"), e["user_id"], serde.encode(serde.EVENT, e), on_delivery(e["event_type"]))
        producer.poll(0)
        summary.events += 1
        bar.update(1)
    bar.close()
    remaining = producer.flush(60)
    summary.seconds = time.monotonic() - started
    if remaining or errors:
        raise ServiceError(f"replay: {remaining} messages undelivered, {len(errors)} errors (first: {errors[:1]})")
    return summary


def expected_versions(delivered: list[Delivered]) -> dict[str, int]:
    """Per user, the version a complete run must end at: the offset of the newest salient event."""
    out: dict[str, int] = {}
    for d in delivered:
        if d.event_type != "impression":
            out[d.user_id] = max(out.get(d.user_id, -1), d.offset)
    return out
