"""The Redis online store: versioned writes through one Lua script, pipelined reads.

One hash per user (see adcast.core.affinities for the fields). No operation touches two keys, so
everything here works on a single Redis and on Redis Cluster (`redis.cluster = true`): a batch read
is one round trip of HMGETs (pack_hmgets) on a single Redis and one pipeline on a cluster, which
redis-py splits by node and sends to all nodes at once; the write script names its only key in
KEYS, so it runs on the node that owns the user's slot.

  AffinityClient        sync reader: get(user) / get_many(users) -> StoredAffinities or None
  AsyncAffinityClient   the same on asyncio (redis.asyncio)
  AsyncAffinityStore    the inference tier's writer (write only newer versions, set the TTL)

A user without a stored prediction is None, not an error. Redis errors are mapped here:
unreachable, failing over, loading or out of memory -> StoreUnavailable (retry); wrong mode or
credentials -> ConfigError. An error of one key (a value of another type at a user's key, a
record the script cannot read) fails that key only: a read returns the user as missing, a
write returns StoreKeyError in that item's place, and both are counted in
adcast_store_key_errors_total.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from typing import Any

from adcast import metrics
from adcast.config import RedisSettings, redact_url, redis_connection_kwargs
from adcast.core.affinities import FIELDS, Affinities
from adcast.errors import ConfigError, StoreKeyError, StoreUnavailable

log = logging.getLogger(__name__)


class StoredAffinities(Affinities, frozen=True, gc=False):
    """A user's affinities as read back from Redis: `top` is ((advertiser_id, probability), ...),
    most likely first; `computed_at` and `newest_event_time` are epoch ms."""

    def age_seconds(self, now_ms: float | None = None) -> float:
        """Seconds since the engine computed this prediction (0 when the writer's clock is ahead)."""
        now = time.time() * 1000 if now_ms is None else now_ms
        return max(0.0, (now - self.computed_at) / 1000)


def write_script() -> str:
    return resources.files("adcast").joinpath("store.lua").read_text()


def _connection_kwargs(settings: RedisSettings) -> dict[str, Any]:
    return {"decode_responses": True, **redis_connection_kwargs(settings)}


@contextlib.contextmanager
def _mapped_errors(settings: RedisSettings) -> Iterator[None]:
    """Map redis-py's errors to adcast's, with what to do about them."""
    import redis.exceptions as rex

    url = redact_url(settings.url)
    try:
        yield
    except (rex.AuthenticationError, rex.AuthorizationError, rex.NoPermissionError) as exc:
        raise ConfigError(
            f"Redis at {url} refused the credentials ({exc}); set ADCAST_REDIS__USERNAME / ADCAST_REDIS__PASSWORD"
        ) from exc
    except rex.MovedError as exc:
        if settings.cluster:
            raise StoreUnavailable(f"Redis Cluster at {url} is resharding or failing over: {exc}") from exc
        # A plain client got a redirect: the server is a cluster node.
        raise ConfigError(
            f"Redis at {url} is a cluster node (it answered {exc}); set ADCAST_REDIS__CLUSTER=true"
        ) from exc
    except (rex.ConnectionError, rex.TimeoutError, rex.ClusterError) as exc:
        raise StoreUnavailable(
            f"cannot reach Redis at {url} ({exc}); start it with `adcast up` or set ADCAST_REDIS__URL"
        ) from exc
    except rex.RedisClusterException as exc:
        text = str(exc)
        if "not enabled" in text:
            raise ConfigError(f"Redis at {url} is not a cluster; set ADCAST_REDIS__CLUSTER=false") from exc
        if "db" in text and "cluster mode" in text:
            raise ConfigError(f"Redis Cluster has only database 0; fix ADCAST_REDIS__URL ({url})") from exc
        # Unreachable startup nodes, slots not covered while a node fails over: transient.
        raise StoreUnavailable(f"Redis Cluster at {url} is unavailable: {text}") from exc


# Error replies that describe the server, not the key: every key would fail alike, so the
# operation is retried as a whole (after a failover, a load or a memory release it succeeds).
_SERVER_WIDE = ("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS")


def key_error(exc: Exception, settings: RedisSettings, op: str) -> StoreKeyError:
    """The StoreKeyError for one key's error reply; raises StoreUnavailable for a server-wide one,
    and re-raises what is no key's fault (for _mapped_errors, which every caller runs inside)."""
    import redis.exceptions as rex

    if not isinstance(exc, rex.ResponseError) or isinstance(
        exc, (rex.AskError, rex.NoPermissionError, rex.ClusterError)
    ):
        raise exc
    text = str(exc)
    code = text.split(" ", 1)[0]
    # redis-py strips the code from the replies it has a class for
    if isinstance(exc, (rex.OutOfMemoryError, rex.ReadOnlyError, rex.TryAgainError)) or code in _SERVER_WIDE:
        what = (
            "out of memory (maxmemory reached, and its policy evicts nothing)"
            if isinstance(exc, rex.OutOfMemoryError)
            else text
        )
        raise StoreUnavailable(f"Redis at {redact_url(settings.url)} refuses {op}s: {what}") from exc
    reason = "wrong_type" if code == "WRONGTYPE" else "store_error"
    metrics.STORE_KEY_ERRORS.labels(op, reason).inc()
    return StoreKeyError(reason, text)


def redis_client(settings: RedisSettings) -> Any:
    """A sync redis-py client for the settings: redis.Redis, or RedisCluster when `cluster` is set."""
    with _mapped_errors(settings):
        if settings.cluster:
            from redis.cluster import RedisCluster

            # Connects (and discovers the nodes) now, unlike redis.Redis.
            return RedisCluster.from_url(settings.url, **_connection_kwargs(settings))
        import redis

        return redis.Redis.from_url(settings.url, **_connection_kwargs(settings))


def async_redis_client(settings: RedisSettings) -> Any:
    """The asyncio counterpart of redis_client; connects on first use."""
    with _mapped_errors(settings):
        if settings.cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(settings.url, **_connection_kwargs(settings))
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(settings.url, **_connection_kwargs(settings))


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
        with _mapped_errors(self.settings):
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
        with _mapped_errors(self.settings):
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
        with _mapped_errors(self.settings):
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
        with _mapped_errors(self.settings):
            return bool(await self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> AsyncAffinityClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncAffinityStore:
    """The inference tier's writer (redis.asyncio): store.lua per user, one pipeline per batch."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.redis = async_redis_client(settings)
        self._script = write_script()
        self._sha = hashlib.sha1(self._script.encode()).hexdigest()

    def key(self, user_id: str) -> str:
        return self.settings.key_prefix + user_id

    async def write_many(self, items: list[Affinities]) -> list[bool | StoreKeyError]:
        """Write each item if newer; returns per item whether it was written, or the StoreKeyError
        of an item whose key failed (the others are written all the same)."""
        import redis.exceptions

        if not items:
            return []
        with _mapped_errors(self.settings):
            results = await self._evalsha(items)
            missing = [i for i, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)]
            if missing:
                # First write, or a node restarted or failed over since: load the script (on every
                # primary of a cluster) and redo just those items, which did not run.
                await self.redis.script_load(self._script)
                for i, r in zip(missing, await self._evalsha([items[i] for i in missing]), strict=True):
                    results[i] = r
            for i, r in enumerate(results):
                if isinstance(r, redis.exceptions.ResponseError):
                    results[i] = key_error(r, self.settings, "write")
                elif isinstance(r, Exception):
                    raise r  # not a reply: the connection failed (mapped to StoreUnavailable)
        return [r if isinstance(r, StoreKeyError) else bool(r) for r in results]

    async def _evalsha(self, items: list[Affinities]) -> list[Any]:
        ttl_ms = self.settings.ttl_seconds * 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            for a in items:
                h = a.to_hash()
                # A raw EVALSHA: redis-py's cluster pipeline refuses its evalsha() helper because it
                # cannot load scripts itself; write_many handles NOSCRIPT instead.
                pipe.execute_command(
                    "EVALSHA", self._sha, 1, self.key(a.user_id), h["v"], h["mv"], h["ct"], h["et"], h["top"], ttl_ms
                )
            return list(await pipe.execute(raise_on_error=False))

    async def close(self) -> None:
        await self.redis.aclose()
