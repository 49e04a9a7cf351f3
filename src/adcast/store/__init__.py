"""The Redis online store: versioned writes through one Lua script, pipelined reads.

One hash per user and model slot (see adcast.core.affinities for the fields, adcast.core.slots
for the keys and the slot pointer). No operation touches two keys, so
everything here works on a single Redis and on Redis Cluster (`redis.cluster = true`): a batch read
is one round trip of HMGETs (pack_hmgets) on a single Redis and one pipeline on a cluster, which
redis-py splits by node and sends to all nodes at once; the write script names its only key in
KEYS, so it runs on the node that owns the user's slot.

  AffinityClient        sync reader: get(user) / get_many(users) -> StoredAffinities or None
  AsyncAffinityClient   the same on asyncio (redis.asyncio)
  AsyncAffinityStore    the inference tier's writer of one slot (write only newer versions, set the TTL)
  SlotAdmin             the slot pointer: candidate, promote, retire (SCAN + UNLINK), count

A user without a stored prediction is None, not an error. Redis errors are mapped here:
unreachable, failing over, loading or out of memory -> StoreUnavailable (retry); wrong mode or
credentials -> ConfigError. An error of one key (a value of another type at a user's key, a
record the script cannot read) fails that key only: a read returns the user as missing, a
write returns StoreKeyError in that item's place, and both are counted in
adcast_store_key_errors_total.
"""

from adcast.store.client import AffinityClient, AsyncAffinityClient, StoredAffinities
from adcast.store.connection import async_redis_client, redis_client
from adcast.store.slots import SlotAdmin
from adcast.store.writer import AsyncAffinityStore, write_script

__all__ = [
    "AffinityClient",
    "AsyncAffinityClient",
    "AsyncAffinityStore",
    "SlotAdmin",
    "StoredAffinities",
    "async_redis_client",
    "redis_client",
    "write_script",
]
