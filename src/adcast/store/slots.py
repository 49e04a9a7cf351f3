"""The slot pointer's operations (adcast.core.slots): name a candidate, promote, retire, count.

A promote is one Lua script on the pointer's one key (atomic, and fine on Redis Cluster). A retire
deletes a slot's keys with SCAN + UNLINK in paced batches: UNLINK frees memory off Redis's main
thread, and SCAN never blocks it the way KEYS would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from adcast.config import RedisSettings
from adcast.core.clock import now_ms
from adcast.core.slots import WRITER, SlotPointer, check_slot, pointer_key, slot_match
from adcast.errors import ConfigError
from adcast.store.connection import mapped_errors, redis_client

log = logging.getLogger(__name__)

# KEYS[1] = pointer; ARGV = slot, now_ms. Returns the slot that was live ('' when none).
_PROMOTE = """
local live = redis.call('HGET', KEYS[1], 'live')
if live == ARGV[1] then return live end
redis.call('HSET', KEYS[1], 'live', ARGV[1], 'updated_at', ARGV[2])
if live then redis.call('HSET', KEYS[1], 'previous', live) else redis.call('HDEL', KEYS[1], 'previous') end
if redis.call('HGET', KEYS[1], 'candidate') == ARGV[1] then redis.call('HDEL', KEYS[1], 'candidate') end
return live or ''
"""

WRITER_GONE_S = 30  # a slot whose workers said nothing for this long has none running (they say it every 10 s)


class SlotAdmin:
    """The operator's side of the slots (sync), for `adcast slots|rollout|promote|retire`."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.redis = redis_client(settings)
        self.key = pointer_key(settings.key_prefix)

    def pointer(self) -> SlotPointer:
        with mapped_errors(self.settings):
            return SlotPointer.from_hash(self.redis.hgetall(self.key))

    def set_candidate(self, slot: str) -> None:
        with mapped_errors(self.settings):
            self.redis.hset(self.key, mapping={"candidate": check_slot(slot), "updated_at": now_ms()})

    def promote(self, slot: str) -> str | None:
        """Make `slot` live at once for every reader (within `redis.pointer_refresh_s`); the slot
        that was live becomes `previous`. Returns that slot (None when none was live)."""
        with mapped_errors(self.settings):
            was = self.redis.eval(_PROMOTE, 1, self.key, check_slot(slot), now_ms())
        return was or None

    def keys(self, slot: str, batch: int = 1000) -> Iterator[str]:
        """Every user key of the slot (SCAN: on a cluster, every primary's)."""
        with mapped_errors(self.settings):
            yield from self.redis.scan_iter(match=slot_match(self.settings.key_prefix, check_slot(slot)), count=batch)

    def count(self, slot: str) -> int:
        return sum(1 for _ in self.keys(slot))

    def retire(
        self,
        slot: str,
        rate: float,
        batch: int = 500,
        force: bool = False,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Delete every key of a slot that is neither live nor the candidate, `rate` keys per
        second at most, `batch` per UNLINK; returns the keys deleted. A slot an inference worker
        still writes is refused (its keys would come back) unless `force`."""
        check_slot(slot)
        pointer = self.pointer()
        if slot in (pointer.live, pointer.candidate):
            role = "live" if slot == pointer.live else "the candidate"
            raise ConfigError(f"slot {slot} is {role}; promote another slot first (adcast promote)")
        seen = pointer.writers.get(slot)
        if seen and now_ms() - seen < WRITER_GONE_S * 1000 and not force:
            raise ConfigError(
                f"an inference worker of slot {slot} ran {(now_ms() - seen) / 1000:.0f} s ago; stop that "
                "deployment first (its writes would bring keys back), or pass --force"
            )
        if pointer.previous == slot:
            with mapped_errors(self.settings):
                self.redis.hdel(self.key, "previous")
            # Readers keep the pointer they read for up to pointer_refresh_s and may still fall
            # back on this slot until then.
            time.sleep(2 * self.settings.pointer_refresh_s)
        deleted, pending, started = 0, [], time.monotonic()
        for key in self.keys(slot, batch):
            pending.append(key)
            if len(pending) >= batch:
                deleted += self._unlink(pending, deleted, rate, started, on_batch)
                pending = []
        if pending:
            deleted += self._unlink(pending, deleted, rate, started, on_batch)
        with mapped_errors(self.settings):
            self.redis.hdel(self.key, f"{WRITER}{slot}")
        log.info("retired slot=%s keys=%s", slot, deleted)
        return deleted

    def _unlink(
        self, keys: list[str], done: int, rate: float, started: float, on_batch: Callable[[int], None] | None
    ) -> int:
        due = started + (done + len(keys)) / rate
        time.sleep(max(0.0, due - time.monotonic()))
        with mapped_errors(self.settings):
            self.redis.unlink(*keys)
        if on_batch is not None:
            on_batch(len(keys))
        return len(keys)

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> SlotAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
