"""The readers: AffinityClient (sync) and AsyncAffinityClient, one round trip per Redis node.

A batch read on a single Redis is one buffer of HMGETs (pack_hmgets) whose replies are read
straight off one pooled connection; on Redis Cluster it is one pipeline, which redis-py splits by
node. A user without a stored prediction, or with one that cannot be read, is None.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from adcast import metrics
from adcast.config import RedisSettings
from adcast.core.affinities import FIELDS, Affinities
from adcast.store.connection import async_redis_client, key_error, mapped_errors, redis_client

log = logging.getLogger(__name__)


class StoredAffinities(Affinities, frozen=True, gc=False):
    """A user's affinities as read back from Redis: `top` is ((advertiser_id, probability), ...),
    most likely first; `computed_at` and `newest_event_time` are epoch ms."""

    def age_seconds(self, now_ms: float | None = None) -> float:
        """Seconds since the engine computed this prediction (0 when the writer's clock is ahead)."""
        now = time.time() * 1000 if now_ms is None else now_ms
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


class AffinityClient:
    """Synchronous reader for ranking servers and tools. Thread-safe (redis-py's connection pool)."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.redis = redis_client(settings)

    def key(self, user_id: str) -> str:
        return self.settings.key_prefix + user_id

    def get(self, user_id: str) -> StoredAffinities | None:
        return self.get_many([user_id])[user_id]

    def get_many(self, user_ids: Iterable[str]) -> dict[str, StoredAffinities | None]:
        """Every requested user (duplicates once), in one round trip per Redis node."""
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        keys = [self.key(u) for u in users]
        with mapped_errors(self.settings):
            if self.settings.cluster:
                with self.redis.pipeline(transaction=False) as pipe:
                    for k in keys:
                        pipe.hmget(k, FIELDS)
                    rows = pipe.execute(raise_on_error=False)
            else:
                rows = self._hmget_many(keys)
            return {u: _decode(u, values, self.settings) for u, values in zip(users, rows, strict=True)}

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
    """The asyncio reader (the HTTP lookup service uses it). Create and use it on one event loop."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.redis = async_redis_client(settings)

    def key(self, user_id: str) -> str:
        return self.settings.key_prefix + user_id

    async def get(self, user_id: str) -> StoredAffinities | None:
        return (await self.get_many([user_id]))[user_id]

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, StoredAffinities | None]:
        """Every requested user (duplicates once), in one round trip per Redis node."""
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        keys = [self.key(u) for u in users]
        with mapped_errors(self.settings):
            if self.settings.cluster:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for k in keys:
                        pipe.hmget(k, FIELDS)
                    rows = await pipe.execute(raise_on_error=False)
            else:
                rows = await self._hmget_many(keys)
            return {u: _decode(u, values, self.settings) for u, values in zip(users, rows, strict=True)}

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
