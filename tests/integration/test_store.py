"""Versioned writes and pipelined reads against a real redis-server."""

import msgspec
import pytest
from store_helpers import write

from adcast.core.affinities import Affinities
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
    ttl = client.redis.ttl(settings.redis.key_prefix + "u3")
    assert 0 < ttl <= settings.redis.ttl_seconds
    assert client.get_many(["u3", "nobody"]) == {
        "u3": StoredAffinities(*msgspec.structs.astuple(aff("u3", 1))),
        "nobody": None,
    }
    client.close()
