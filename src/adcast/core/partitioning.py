"""Where Kafka puts a keyed record: murmur2 of the key, as the Java client, aiokafka and Faust do.

The stream tier's versions are offsets of one partition, so a user's events must all arrive on
the partition this function gives for their user id (librdkafka producers need
`partitioner=murmur2_random`; its default, `consistent_random`, hashes with CRC32 and places the
same key elsewhere).
"""

from __future__ import annotations

from functools import lru_cache

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as an unsigned 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length - whole
    if tail:
        h ^= int.from_bytes(data[whole:], "little")
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=1 << 16)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition of `partitions` that Kafka's default partitioner gives `key`. Cached: the
    stream tier checks every event, and a user's events repeat the key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
