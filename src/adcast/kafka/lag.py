"""adcast_consumer_lag, one reporter for both tiers: per partition a worker holds, the high
watermark minus how far the worker got; partitions it no longer holds are dropped (a stale value
would lie). Lag is telemetry: a partition revoked while it is read is skipped, never an error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from adcast import metrics


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
