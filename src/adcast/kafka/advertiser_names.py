"""Advertiser names and categories from the compacted advertisers topic, for people reading ids.

The topic is read from its beginning to its current end by a consumer that is assigned every
partition and never joins a group or commits: any number of readers share no state. The end is
where each partition's fetch reports end-of-partition, not a ListOffsets answer (the local broker's
is not the end offset). Records are applied in offset order as compaction sees them: the last
record of a key wins and a tombstone (no value) removes the key. A record that does not decode is
skipped and counted, never fatal: a name is a convenience, not data anything depends on.

A missing topic raises ServiceError naming it and how to create it, rather than giving an empty
mapping: a long-running reader (`adcast serve`) would otherwise show bare ids forever without
saying why. A caller to whom names are optional (`adcast lookup`) catches it and warns.

After `load()`, `poll_new()` applies what arrived since (`adcast serve` calls it from a thread of
its own: adcast.inspector.sources.NamesFeed). `names` is a snapshot that is never mutated: each
change publishes a new mapping, so readers on another thread never see a half-applied batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from adcast.config import Settings
from adcast.errors import SerdeError, ServiceError
from adcast.kafka.clients import confluent_config
from adcast.wire import serde

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdvertiserName:
    name: str
    category: str | None


class AdvertiserNames:
    """advertiser_id -> AdvertiserName from the advertisers topic; close() when done."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.topic = settings.topics.name("advertisers")
        self.timeout_s = timeout_s
        self.names: Mapping[str, AdvertiserName] = MappingProxyType({})
        self.skipped: Counter[str] = Counter()  # undecodable records by SerdeError reason
        self._consumer: Any = None
        self._lock = threading.Lock()  # one consume at a time; close() waits for a poll in flight

    def load(self) -> Mapping[str, AdvertiserName]:
        """Read the topic from its beginning to its current end; ServiceError when the broker cannot
        be reached, the topic is missing, or the end is not reached within the timeout."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self.timeout_s
        with self._lock:
            try:
                consumer = self._consumer = self._consumer or self._new_consumer()
                names = self._read_to_end(consumer, self._partitions(consumer), deadline)
            except KafkaException as exc:  # a client that cannot start (TLS files) or a fatal error
                raise ServiceError(f"cannot read {self.topic}: {exc}") from exc
        log.debug("advertiser names loaded topic=%s advertisers=%d", self.topic, len(names))
        return self.names

    def _read_to_end(self, consumer: Any, partitions: list[int], deadline: float) -> dict[str, AdvertiserName]:
        from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        names: dict[str, AdvertiserName] = {}
        waiting, before = set(partitions), self.skipped.total()
        while waiting:
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.topic}: partitions {sorted(waiting)} did not reach their end in {self.timeout_s:.0f}s"
                )
            for m in consumer.consume(num_messages=1000, timeout=0.2):
                err = m.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    waiting.discard(m.partition())
                else:
                    self._apply(names, m)
        self._publish(names, before)
        return names

    def poll_new(self, timeout_s: float = 0.0) -> int:
        """Apply the records that arrived since the last read (after load()); returns how many."""
        if self._consumer is None:
            raise ServiceError("AdvertiserNames.poll_new() before load()")
        with self._lock:
            names, before, applied = dict(self.names), self.skipped.total(), 0
            for m in self._consumer.consume(num_messages=1000, timeout=timeout_s):
                applied += self._apply(names, m)
            if applied or self.skipped.total() > before:
                self._publish(names, before)
        return applied

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None

    def __enter__(self) -> AdvertiserNames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _new_consumer(self) -> Any:
        from confluent_kafka import Consumer

        return Consumer(
            {
                **confluent_config(self.settings),
                "group.id": f"{self.topic}-names-reader",  # required by the client; never joined
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "log_level": 2,  # connection failures are reported once, by the error raised below
            }
        )

    def _partitions(self, consumer: Any) -> list[int]:
        try:
            meta = consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(self.topic)
        except Exception as exc:  # KafkaException: the broker did not answer in time
            raise ServiceError(
                f"cannot reach Kafka at {self.settings.kafka.bootstrap_servers} to read {self.topic} ({exc}); "
                "start the local broker with `adcast up` or set ADCAST_KAFKA__BOOTSTRAP_SERVERS"
            ) from exc
        if meta is None or meta.error is not None or not meta.partitions:
            raise ServiceError(
                f"topic {self.topic} does not exist at {self.settings.kafka.bootstrap_servers}: create it with "
                "`adcast up` (local broker) or the deployment's topics job, then `adcast replay` the advertisers"
            )
        return sorted(meta.partitions)

    def _apply(self, names: dict[str, AdvertiserName], m: Any) -> int:
        """Fold one message into `names`: 1 for a record or tombstone applied, 0 for one skipped."""
        from confluent_kafka import KafkaError

        err = m.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise ServiceError(f"reading {self.topic}: {err}")
                log.warning("reading %s: %s", self.topic, err)
            return 0
        value, key = m.value(), m.key()
        if value is None:  # a tombstone
            if key is not None:
                names.pop(key.decode("utf-8", "replace"), None)
            return 1
        try:
            record = serde.decode(serde.ADVERTISER, value)
        except SerdeError as exc:
            self.skipped[exc.reason] += 1
            log.debug("unreadable advertiser partition=%s offset=%s: %s", m.partition(), m.offset(), exc)
            return 0
        # The key is what compaction and tombstones go by; the id in the value stands in without one.
        advertiser = key.decode("utf-8", "replace") if key is not None else record["advertiser_id"]
        names[advertiser] = AdvertiserName(record["name"], record.get("category"))
        return 1

    def _publish(self, names: dict[str, AdvertiserName], skipped_before: int) -> None:
        self.names = MappingProxyType(names)
        if self.skipped.total() > skipped_before:
            log.warning(
                "skipped %d unreadable advertiser records of %s (by reason, so far: %s)",
                self.skipped.total() - skipped_before,
                self.topic,
                dict(self.skipped),
            )


def read_advertiser_names(settings: Settings, timeout_s: float = 10.0) -> Mapping[str, AdvertiserName]:
    """The topic's names as of now, once, read through the configured schema source."""
    from adcast.wire.schema_registry import activate

    activate(settings)
    with AdvertiserNames(settings, timeout_s) as reader:
        return reader.load()
