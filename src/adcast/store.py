"""The Redis online store: versioned writes through one Lua script, pipelined reads.

One hash per user (see adcast.core.affinities for the fields); no operation touches two keys,
so it works unchanged on Redis Cluster.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from adcast.config import RedisSettings, redact_url
from adcast.core.affinities import Affinities
from adcast.errors import StoreUnavailable

log = logging.getLogger(__name__)
FIELDS = ("v", "mv", "ct", "et", "top")


def write_script() -> str:
    return resources.files("adcast").joinpath("store.lua").read_text()


def _connection_kwargs(settings: RedisSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"decode_responses": True}
    if settings.username:
        kwargs["username"] = settings.username
    if settings.password:
        kwargs["password"] = settings.password.get_secret_value()
    return kwargs


class AsyncAffinityStore:
    """The inference tier's writer (redis.asyncio)."""

    def __init__(self, settings: RedisSettings) -> None:
        import redis.asyncio as aioredis

        self.settings = settings
        self.redis = aioredis.Redis.from_url(settings.url, **_connection_kwargs(settings))
        self._script = self.redis.register_script(write_script())

    def key(self, user_id: str) -> str:
        return self.settings.key_prefix + user_id

    async def write_many(self, items: list[Affinities]) -> list[bool]:
        """Write each item if newer; returns per item whether it was written."""
        import redis.exceptions

        ttl_ms = self.settings.ttl_seconds * 1000
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for a in items:
                    h = a.to_hash()
                    await self._script(
                        keys=[self.key(a.user_id)],
                        args=[h["v"], h["mv"], h["ct"], h["et"], h["top"], ttl_ms],
                        client=pipe,
                    )
                results = await pipe.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreUnavailable(f"Redis at {redact_url(self.settings.url)} is unavailable: {exc}") from exc
        return [bool(r) for r in results]

    async def close(self) -> None:
        await self.redis.aclose()


class AffinityClient:
    """Synchronous reader for ranking servers and tools: missing users are None, not errors."""

    def __init__(self, settings: RedisSettings) -> None:
        import redis

        self.settings = settings
        self.redis = redis.Redis.from_url(settings.url, **_connection_kwargs(settings))

    def get_many(self, user_ids: list[str]) -> dict[str, Affinities | None]:
        import redis.exceptions

        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for u in user_ids:
                    pipe.hmget(self.settings.key_prefix + u, FIELDS)
                rows = pipe.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreUnavailable(
                f"cannot reach Redis at {redact_url(self.settings.url)} ({exc}); "
                "start it with `adcast up` or set ADCAST_REDIS__URL"
            ) from exc
        out: dict[str, Affinities | None] = {}
        for u, values in zip(user_ids, rows, strict=True):
            out[u] = None if values[0] is None else Affinities.from_hash(u, dict(zip(FIELDS, values, strict=True)))
        return out

    def get(self, user_id: str) -> Affinities | None:
        return self.get_many([user_id])[user_id]

    def close(self) -> None:
        self.redis.close()
