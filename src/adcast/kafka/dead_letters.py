"""The one way a refused input reaches the dead-letter topic, in both tiers and the replay tools.

Each letter is encoded by `serde.dead_letter` (the raw bytes unchanged, cut only to fit a produce
request), counted in adcast_dead_letters_total{stage,reason} and logged; `send` also makes sure the
topic exists first and waits for delivery, because the caller commits the input's offset next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from adcast import metrics
from adcast.config import Settings
from adcast.core.clock import now_ms
from adcast.errors import Rejected
from adcast.kafka.topics import ensure_dead_letter_topic
from adcast.wire import serde

log = logging.getLogger(__name__)

# The tier's producer, bound to the dead-letter topic (DeadLetters.topic): (key, value) -> once
# queued, an awaitable of its delivery.
Send = Callable[[bytes | None, bytes], Awaitable[Awaitable[Any]]]


class DeadLetters:
    """Letters encoded, counted and logged; the replay tools produce them with their own producer.
    `log_each`: a warning per letter (the workers); tools that print a summary turn it off."""

    def __init__(self, settings: Settings, log_each: bool = True) -> None:
        self.settings = settings
        self.topic = settings.topics.name("dead_letters")
        self.log_each = log_each

    def letter(self, message: Any, rejected: Rejected, at_ms: int | None = None) -> tuple[bytes | None, bytes]:
        """(key, value) of the letter for a consumed message (anything with value, key, topic,
        partition and offset), counted and logged; sending it is the caller's."""
        key, value = serde.dead_letter(
            message,
            rejected.stage,
            rejected.reason,
            rejected.detail,
            now_ms() if at_ms is None else at_ms,
            self.settings.kafka.max_request_bytes,
        )
        metrics.DEAD_LETTERS.labels(rejected.stage, rejected.reason).inc()
        if self.log_each:
            log.warning(
                "dead-letter stage=%s reason=%s key=%r topic=%s partition=%s offset=%s detail=%s",
                rejected.stage,
                rejected.reason,
                key[:64] if key is not None else None,
                message.topic,
                message.partition,
                message.offset,
                rejected.detail,
            )
        return key, value


class DeadLetterSink(DeadLetters):
    """The workers' letters, sent through the tier's own producer (`send`)."""

    def __init__(self, settings: Settings, send: Send) -> None:
        super().__init__(settings)
        self._send = send
        self.sent = 0

    async def send(self, rejected: Sequence[tuple[Any, Rejected]]) -> None:
        """Send a letter for each (consumed message, why) and wait until all are delivered."""
        if not rejected:
            return
        # A producer does not notice a deleted topic by itself; letters are rare, so check each time.
        await asyncio.to_thread(ensure_dead_letter_topic, self.settings)
        at = now_ms()
        deliveries = [await self._send(*self.letter(m, r, at)) for m, r in rejected]
        await asyncio.gather(*deliveries)
        self.sent += len(rejected)
