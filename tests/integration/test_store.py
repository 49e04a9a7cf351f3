"""Versioned writes and pipelined reads against a real redis-server."""

import msgspec
import pytest
from store_helpers import write

from adcast.core.affinities import Affinities
from adcast.core.slots import DEFAULT_SLOT, user_key
from adcast.store import AffinityClient, StoredAffinities

pytestmark = pytest.mark.integration


def aff(user: str, version: int, top: tuple[tuple[str, float], ...] = (("a1", 0.6), ("a2", 0.3))) -> Affinities:
    return Affinities(user, version, "m1", 1000 + version, 900 + version, top)


def test_only_newer_versions_are_written(settings, redis_url):
    assert write(settings, [aff("u1", 10)]) == [True]
    assert write(settings, [aff("u1", 9, (("old", 1.0),)), aff("u1", 10, (("same", 1.0),))]) == [False, False]
    assert write(settings, [aff("u1", 11, (("new", 0.9),))]) == [True]
    client = AffinityClient(settings.redis)
    got = client.get("u1")
    client.close()
    assert got is not None and got.version == 11 and got.top == (("new", 0.9),)


def test_out_of_order_batch_converges_to_the_newest(settings, redis_url):
    items = [aff("u2", v, ((f"v{v}", 1.0),)) for v in (3, 7, 5, 1, 6)]
    assert write(settings, items) == [True, True, False, False, False]
    client = AffinityClient(settings.redis)
    assert client.get("u2").top == (("v7", 1.0),)
    client.close()


def test_ttl_is_set_and_missing_users_are_none(settings, redis_url):
    write(settings, [aff("u3", 1)])
    client = AffinityClient(settings.redis)
    ttl = client.redis.ttl(user_key(settings.redis.key_prefix, DEFAULT_SLOT, "u3"))
    assert 0 < ttl <= settings.redis.ttl_seconds
    assert client.get_many(["u3", "nobody"]) == {
        "u3": StoredAffinities(*msgspec.structs.astuple(aff("u3", 1))),
        "nobody": None,
    }
    client.close()


def _string_at(settings, user: str) -> None:
    client = AffinityClient(settings.redis)
    try:
        client.redis.set(user_key(settings.redis.key_prefix, DEFAULT_SLOT, user), "not a hash")
    finally:
        client.close()


def test_a_key_of_another_type_fails_its_own_write_only(settings, redis_url):
    from adcast.errors import StoreKeyError

    _string_at(settings, "bad")
    results = write(settings, [aff("u1", 5), aff("bad", 5), aff("u2", 5)])
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], StoreKeyError) and results[1].reason == "wrong_type"
    with AffinityClient(settings.redis) as client:
        assert client.get("u1").version == 5 and client.get("u2").version == 5
        assert (
            client.redis.get(user_key(settings.redis.key_prefix, DEFAULT_SLOT, "bad")) == "not a hash"
        )  # left as it was


def test_a_key_of_another_type_reads_as_missing_in_every_reader(settings, redis_url):
    import asyncio

    from adcast.store import AsyncAffinityClient

    write(settings, [aff("u1", 5), aff("u2", 6)])
    _string_at(settings, "bad")
    with AffinityClient(settings.redis) as client:
        got = client.get_many(["u1", "bad", "u2"])
        assert got["bad"] is None and got["u1"].version == 5 and got["u2"].version == 6
        assert client.get("bad") is None

    async def read():
        async with AsyncAffinityClient(settings.redis) as client:
            return await client.get_many(["u1", "bad", "u2"]), await client.get("bad")

    many, one = asyncio.run(read())
    assert many["bad"] is None and one is None and many["u2"].version == 6


def test_a_redis_out_of_memory_is_unavailable_not_a_key_error(settings, redis_url):
    from adcast.errors import StoreUnavailable

    with AffinityClient(settings.redis) as client:
        before = client.redis.config_get("maxmemory*")
        client.redis.config_set("maxmemory-policy", "noeviction")
        client.redis.config_set("maxmemory", "1")
        try:
            with pytest.raises(StoreUnavailable, match="out of memory"):
                write(settings, [aff("u1", 5)])
        finally:
            client.redis.config_set("maxmemory", before["maxmemory"])
            client.redis.config_set("maxmemory-policy", before["maxmemory-policy"])
    assert write(settings, [aff("u1", 5)]) == [True]
