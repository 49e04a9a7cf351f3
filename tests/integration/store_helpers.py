"""Writing affinity records through the real writer (AsyncAffinityStore + store.lua), for tests."""

import asyncio

from adcast.core.slots import DEFAULT_SLOT
from adcast.store import AsyncAffinityStore


def write(settings, items, slot=DEFAULT_SLOT):
    """Write `items` (Affinities) with the inference tier's writer into `slot`; returns one bool per item."""

    async def go():
        store = AsyncAffinityStore(settings.redis, slot)
        try:
            return await store.write_many(items)
        finally:
            await store.close()

    return asyncio.run(go())
