"""The readers: AffinityClient (sync) and AsyncAffinityClient, one round trip per Redis node.

They read the live slot (adcast.core.slots), as the slot pointer names it, by default; a named
slot for an experiment; or several slots at once (get_many_slots).

A batch read on a single Redis is one buffer of HMGETs (pack_hmgets) whose replies are read
straight off one pooled connection; on Redis Cluster it is one pipeline, which redis-py splits by
node. A user without a stored prediction, or with one that cannot be read, is None.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from adcast import metrics
from adcast.config import RedisSettings
from adcast.core import clock
from adcast.core.affinities import FIELDS, Affinities
from adcast.core.slots import SlotPointer, check_slot, pointer_key, user_key
from adcast.store.connection import async_redis_client, key_error, mapped_errors, redis_client

log = logging.getLogger(__name__)


class StoredAffinities(Affinities, frozen=True, gc=False):
    """A user's affinities as read back from Redis: `top` is ((advertiser_id, probability), ...),
    most likely first; `computed_at` and `newest_event_time` are epoch ms."""

    def age_seconds(self, now_ms: float | None = None) -> float:
        """Seconds since the engine computed this prediction (0 when the writer's clock is ahead)."""
        now = clock.now_ms() if now_ms is None else now_ms
        return max(0.0, (now - self.computed_at) / 1000)


def _decode(user_id: str, values: Any, settings: RedisSettings) -> StoredAffinities | None:
    """A user's HMGET reply as a record; None when there is none, or none readable (an error reply
    for this key, a hash not written by store.lua): one bad key must not fail a whole batch."""
    if isinstance(values, Exception):
        error = key_error(values, settings, "read")
        log.warning("unreadable affinities user=%s, treated as missing: %s", user_id, error)
        return None
    if values[0] is None:
        return None
    try:
        return StoredAffinities.from_values(user_id, values)
    except (TypeError, ValueError) as exc:
        metrics.STORE_KEY_ERRORS.labels("read", "unreadable_record").inc()
        log.warning("unreadable affinities user=%s, treated as missing: %s", user_id, exc)
        return None


# A batch read on a single Redis is HMGET per user, packed into one buffer here and its replies
# read straight off one pooled connection's socket by a hiredis Reader of our own, as bytes:
# redis-py's pipeline spends ~20 us of Python per command and its read_response ~3 us per reply,
# more than Redis and the network together for a 100-user batch.
_HMGET_HEAD = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(FIELDS))
_HMGET_FIELDS = b"".join(b"$%d\r\n%s\r\n" % (len(f), f.encode()) for f in FIELDS)


def pack_hmgets(keys: Sequence[str]) -> bytes:
    """`HMGET <key> v mv ct et top` for every key, in the Redis protocol (RESP), back to back."""
    parts = []
    for key in keys:
        k = key.encode()
        parts.append(b"%s$%d\r\n%s\r\n%s" % (_HMGET_HEAD, len(k), k, _HMGET_FIELDS))
    return b"".join(parts)


_RECV_BYTES = 1 << 18  # a 100-user batch of top-20 records is ~45 KB


def _read_replies(conn: Any, count: int) -> list[Any]:
    """`count` replies off a redis-py Connection's socket (its private `_sock`: the tests of the
    client cover it), values as bytes, error replies as the exceptions redis-py maps them to, in
    their reply's place."""
    import hiredis
    import redis.exceptions as rex
    from redis._parsers import BaseParser

    sock = conn._sock
    reader = hiredis.Reader(protocolError=rex.InvalidResponse, replyError=BaseParser.parse_error)
    replies: list[Any] = []
    while len(replies) < count:
        reply = reader.gets()
        if reply is False:  # needs more bytes
            try:
                data = sock.recv(_RECV_BYTES)
            except TimeoutError as exc:
                raise rex.TimeoutError(f"Timeout reading from Redis: {exc}") from exc
            except OSError as exc:
                raise rex.ConnectionError(f"Error reading from Redis: {exc}") from exc
            if not data:
                raise rex.ConnectionError("Connection closed by server.")
            reader.feed(data)
            continue
        replies.append(reply)
    return replies


READ_FIELDS = ("live", "previous")  # of the slot pointer, what a reader of the live slot needs


class PointerCache:
    """The slot pointer as last read, re-read once it is older than `redis.pointer_refresh_s`: a
    promote reaches every reader within that time, and readers pay one pointer read per interval."""

    def __init__(self, refresh_s: float) -> None:
        self.refresh_s = refresh_s
        self.pointer: SlotPointer | None = None
        self.read_at = -math.inf

    def current(self) -> SlotPointer | None:
        return self.pointer if time.monotonic() - self.read_at < self.refresh_s else None

    def update(self, values: list[str | None]) -> SlotPointer:
        """From the reply to HMGET <pointer> READ_FIELDS (readers need no more than HMGET)."""
        fields = {f: v for f, v in zip(READ_FIELDS, values, strict=True) if v is not None}
        self.pointer, self.read_at = SlotPointer.from_hash(fields), time.monotonic()
        return self.pointer


def _slots_to_read(slot: str | None, pointer: SlotPointer) -> list[str]:
    """A named slot alone; else the live one, then the one to fall back on (see SlotPointer)."""
    if slot is not None:
        return [slot]
    live, fallback = pointer.read_slots()
    return [live] if fallback is None else [live, fallback]


def _by_slot(
    users: list[str], slots: Sequence[str], rows: list[Any], settings: RedisSettings
) -> dict[str, dict[str, StoredAffinities | None]]:
    n = len(users)
    return {
        slot: {u: _decode(u, values, settings) for u, values in zip(users, rows[i * n : (i + 1) * n], strict=True)}
        for i, slot in enumerate(slots)
    }


def _first_found(users: list[str], found: dict[str, dict[str, StoredAffinities | None]]) -> dict[str, Any]:
    """Each user's record from the first slot (in read order) that holds one."""
    out: dict[str, StoredAffinities | None] = {}
    for u in users:
        out[u] = next((f[u] for f in found.values() if f[u] is not None), None)
    return out


class AffinityClient:
    """Synchronous reader for ranking servers and tools. Thread-safe (redis-py's connection pool).

    `slot`: read this slot instead of the live one (an experiment's arm, a shadow)."""

    def __init__(self, settings: RedisSettings, slot: str | None = None) -> None:
        self.settings = settings
        self.slot = None if slot is None else check_slot(slot)
        self.redis = redis_client(settings)
        self._pointer = PointerCache(settings.pointer_refresh_s)

    def key(self, user_id: str, slot: str) -> str:
        return user_key(self.settings.key_prefix, slot, user_id)

    def pointer(self) -> SlotPointer:
        """The slot pointer, cached for `redis.pointer_refresh_s`."""
        cached = self._pointer.current()
        if cached is not None:
            return cached
        with mapped_errors(self.settings):
            return self._pointer.update(self.redis.hmget(pointer_key(self.settings.key_prefix), READ_FIELDS))

    def get(self, user_id: str, slot: str | None = None) -> StoredAffinities | None:
        return self.get_many([user_id], slot)[user_id]

    def get_many(self, user_ids: Iterable[str], slot: str | None = None) -> dict[str, StoredAffinities | None]:
        """Every requested user (duplicates once), in one round trip per Redis node, from `slot`
        (default: the client's slot, else the live one)."""
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        slot = slot or self.slot
        slots = _slots_to_read(slot, SlotPointer() if slot else self.pointer())
        return _first_found(users, self._read(users, slots))

    def get_many_slots(
        self, user_ids: Iterable[str], slots: Sequence[str]
    ) -> dict[str, dict[str, StoredAffinities | None]]:
        """slot -> user -> record for every named slot, all in one round trip per Redis node (an
        A/B test reads both arms at once)."""
        users = list(dict.fromkeys(user_ids))
        return self._read(users, [check_slot(s) for s in dict.fromkeys(slots)]) if users else {}

    def _read(self, users: list[str], slots: Sequence[str]) -> dict[str, dict[str, StoredAffinities | None]]:
        keys = [self.key(u, slot) for slot in slots for u in users]
        with mapped_errors(self.settings):
            if self.settings.cluster:
                with self.redis.pipeline(transaction=False) as pipe:
                    for k in keys:
                        pipe.hmget(k, FIELDS)
                    rows = pipe.execute(raise_on_error=False)
            else:
                rows = self._hmget_many(keys)
            return _by_slot(users, slots, rows, self.settings)

    def _hmget_many(self, keys: list[str]) -> list[Any]:
        import redis.exceptions as rex

        packed = pack_hmgets(keys)
        pool = self.redis.connection_pool
        for attempt in range(2):
            conn = pool.get_connection()
            try:
                conn.send_packed_command([packed])
                return _read_replies(conn, len(keys))
            except (rex.ConnectionError, rex.TimeoutError):
                conn.disconnect()
                if attempt:
                    raise
                # A pooled connection that a restarted Redis or an idle timeout closed: once more.
            except BaseException:
                conn.disconnect()  # replies may be left unread on it
                raise
            finally:
                pool.release(conn)
        raise AssertionError("unreachable")

    def ping(self) -> bool:
        with mapped_errors(self.settings):
            return bool(self.redis.ping())

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> AffinityClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _reply_or_error(conn: Any) -> Any:
    """The next reply; an error reply in its place, as the sync reader returns it."""
    import redis.exceptions as rex

    try:
        return await conn.read_response()
    except rex.ResponseError as exc:
        return exc


class AsyncAffinityClient:
    """The asyncio reader (the HTTP lookup service uses it). Create and use it on one event loop.
    The same reads as AffinityClient."""

    def __init__(self, settings: RedisSettings, slot: str | None = None) -> None:
        self.settings = settings
        self.slot = None if slot is None else check_slot(slot)
        self.redis = async_redis_client(settings)
        self._pointer = PointerCache(settings.pointer_refresh_s)

    def key(self, user_id: str, slot: str) -> str:
        return user_key(self.settings.key_prefix, slot, user_id)

    async def pointer(self) -> SlotPointer:
        cached = self._pointer.current()
        if cached is not None:
            return cached
        with mapped_errors(self.settings):
            return self._pointer.update(await self.redis.hmget(pointer_key(self.settings.key_prefix), READ_FIELDS))

    async def get(self, user_id: str, slot: str | None = None) -> StoredAffinities | None:
        return (await self.get_many([user_id], slot))[user_id]

    async def get_many(self, user_ids: Iterable[str], slot: str | None = None) -> dict[str, StoredAffinities | None]:
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        slot = slot or self.slot
        slots = _slots_to_read(slot, SlotPointer() if slot else await self.pointer())
        return _first_found(users, await self._read(users, slots))

    async def get_many_slots(
        self, user_ids: Iterable[str], slots: Sequence[str]
    ) -> dict[str, dict[str, StoredAffinities | None]]:
        users = list(dict.fromkeys(user_ids))
        return await self._read(users, [check_slot(s) for s in dict.fromkeys(slots)]) if users else {}

    async def _read(self, users: list[str], slots: Sequence[str]) -> dict[str, dict[str, StoredAffinities | None]]:
        keys = [self.key(u, slot) for slot in slots for u in users]
        with mapped_errors(self.settings):
            if self.settings.cluster:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for k in keys:
                        pipe.hmget(k, FIELDS)
                    rows = await pipe.execute(raise_on_error=False)
            else:
                rows = await self._hmget_many(keys)
            return _by_slot(users, slots, rows, self.settings)

    async def _hmget_many(self, keys: list[str]) -> list[Any]:
        import redis.exceptions as rex

        packed = pack_hmgets(keys)
        pool = self.redis.connection_pool
        for attempt in range(2):
            conn = await pool.get_connection()
            try:
                await conn.send_packed_command([packed])
                return [await _reply_or_error(conn) for _ in keys]
            except (rex.ConnectionError, rex.TimeoutError):
                await conn.disconnect()
                if attempt:
                    raise
            except BaseException:
                await conn.disconnect()
                raise
            finally:
                await pool.release(conn)
        raise AssertionError("unreachable")

    async def ping(self) -> bool:
        with mapped_errors(self.settings):
            return bool(await self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> AsyncAffinityClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
