"""The inference tier's writer: store.lua per user (write only newer versions, set the TTL), one
pipeline per batch; an error of one key fails that item only."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from adcast.config import RedisSettings
from adcast.core.affinities import Affinities
from adcast.core.slots import DEFAULT_SLOT, WRITER, check_slot, pointer_key, user_key
from adcast.errors import StoreKeyError
from adcast.store.connection import async_redis_client, key_error, mapped_errors


def write_script() -> str:
    return resources.files("adcast.store").joinpath("store.lua").read_text()


class AsyncAffinityStore:
    """The inference tier's writer (redis.asyncio) of one slot: store.lua per user, one pipeline
    per batch; the version guard is per slot (each slot is its own set of keys)."""

    def __init__(self, settings: RedisSettings, slot: str = DEFAULT_SLOT) -> None:
        self.settings = settings
        self.slot = check_slot(slot)
        self.redis = async_redis_client(settings)
        self._script = write_script()
        self._sha = hashlib.sha1(self._script.encode()).hexdigest()

    def key(self, user_id: str) -> str:
        return user_key(self.settings.key_prefix, self.slot, user_id)

    async def announce(self, now_ms: int) -> bool:
        """Say, in the slot pointer, that a writer of this slot runs now; the first slot ever
        written becomes live (a new deployment needs no promote). Returns whether it did."""
        key = pointer_key(self.settings.key_prefix)
        with mapped_errors(self.settings):
            async with self.redis.pipeline(transaction=True) as pipe:  # one key: fine on a cluster
                pipe.hsetnx(key, "live", self.slot)
                pipe.hset(key, f"{WRITER}{self.slot}", now_ms)
                became_live, _ = await pipe.execute()
            if became_live:
                await self.redis.hset(key, "updated_at", now_ms)
        return bool(became_live)

    async def write_many(self, items: list[Affinities]) -> list[bool | StoreKeyError]:
        """Write each item if newer; returns per item whether it was written, or the StoreKeyError
        of an item whose key failed (the others are written all the same)."""
        import redis.exceptions

        if not items:
            return []
        with mapped_errors(self.settings):
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
