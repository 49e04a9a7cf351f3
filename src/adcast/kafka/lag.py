"""adcast_consumer_lag, one reporter for both tiers: per partition a worker holds, the high
watermark minus how far the worker got; partitions it no longer holds are dropped (a stale value
would lie). Lag is telemetry: a partition revoked while it is read is skipped, never an error.
`group_offsets` reads a group's lag from Kafka itself, for readers outside the group."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from adcast import metrics
from adcast.config import Settings
from adcast.errors import OffsetsUnreadable, ServiceError


class LagReporter:
    def __init__(self, tier: str) -> None:
        self.tier = tier
        self._labels: set[tuple[str, str, str]] = set()  # what the last report set

    async def report(
        self,
        partitions: Iterable[Any],
        highwater: Callable[[Any], int | None],
        done: Callable[[Any], Awaitable[int | None]],
    ) -> None:
        """`partitions`: topic-partitions (with .topic and .partition); `highwater(tp)`: the end
        the consumer knows (None before its first fetch); `done(tp)`: how far the worker got."""
        seen: set[tuple[str, str, str]] = set()
        for tp in partitions:
            try:
                high = highwater(tp)
                if high is None:  # nothing fetched from it yet
                    continue
                reached = await done(tp)
            except Exception:  # revoked meanwhile
                continue
            if reached is None:
                continue
            labels = (self.tier, tp.topic, str(tp.partition))
            metrics.CONSUMER_LAG.labels(*labels).set(max(0, high - reached))
            seen.add(labels)
        metrics.forget_lag(self._labels - seen)
        self._labels = seen

    def forget(self) -> None:
        """A stopped worker holds no partitions."""
        metrics.forget_lag(self._labels)
        self._labels = set()


def group_offsets(settings: Settings, group: str, topic: str, timeout_s: float = 10.0) -> tuple[int, int]:
    """(end, committed) of a consumer group on a topic, each summed over its partitions: the high
    watermarks, and the group's committed offsets (a partition without a commit counts from its
    low watermark). Read by a consumer that never joins the group (committed() only asks the
    coordinator). The lag is end - committed; the local Tansu reports ends low (adcast_consumer_lag)."""
    from confluent_kafka import Consumer, TopicPartition

    from adcast.kafka.clients import confluent_config

    conf = {**confluent_config(settings), "group.id": group, "enable.auto.commit": False, "log_level": 2}
    consumer = Consumer(conf)
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise ServiceError(f"topic {topic} does not exist at {settings.kafka.bootstrap_servers}")
        committed = consumer.committed([TopicPartition(topic, p) for p in sorted(meta.partitions)], timeout=timeout_s)
        end = done = 0
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout_s)
            end += high
            done += tp.offset if tp.offset >= 0 else low
        return end, done
    except ServiceError:
        raise
    except Exception as exc:  # KafkaException: the broker did not answer in time
        raise OffsetsUnreadable(f"cannot read the offsets of group {group} on {topic}: {exc}") from exc
    finally:
        consumer.close()
