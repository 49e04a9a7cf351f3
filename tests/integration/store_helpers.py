"""Writing affinity records through the real writer (AsyncAffinityStore + store.lua), for tests."""

import asyncio

from adcast.store import AsyncAffinityStore


def write(settings, items):
    """Write `items` (Affinities) with the inference tier's writer; returns one bool per item."""

    async def go():
        store = AsyncAffinityStore(settings.redis)
        try:
            return await store.write_many(items)
        finally:
            await store.close()

    return asyncio.run(go())
