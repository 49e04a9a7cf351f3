"""The read clients (sync and asyncio) against a real single redis-server; records are written
through the real writer path (AsyncAffinityStore, store.lua)."""

import asyncio
import time

import pytest
from pydantic import SecretStr
from store_helpers import write

from adcast.config import override
from adcast.core.affinities import Affinities
from adcast.core.slots import DEFAULT_SLOT
from adcast.errors import ConfigError, StoreUnavailable
from adcast.local.services import free_port
from adcast.store import AffinityClient, AsyncAffinityClient, StoredAffinities

pytestmark = pytest.mark.integration


def aff(user: str, version: int, computed_at: int = 1_700_000_000_000) -> Affinities:
    return Affinities(user, version, "m7", computed_at, computed_at - 500, (("a0017", 0.412304), ("a0102", 0.081221)))


def test_sync_get_and_get_many_return_typed_records_and_none_for_missing(settings, redis_url):
    assert write(settings, [aff("u1", 3), aff("u2", 5)]) == [True, True]
    with AffinityClient(settings.redis) as client:
        one = client.get("u1")
        many = client.get_many(["u2", "nobody", "u1", "u2"])
        assert client.get("nobody") is None
        assert client.get_many([]) == {}
        assert client.ping()
    assert isinstance(one, StoredAffinities)
    assert (one.user_id, one.version, one.model_version) == ("u1", 3, "m7")
    assert one.top == (("a0017", 0.412304), ("a0102", 0.081221))
    assert (one.computed_at, one.newest_event_time) == (1_700_000_000_000, 1_699_999_999_500)
    assert list(many) == ["u2", "nobody", "u1"]  # request order, duplicates once
    assert many["nobody"] is None and many["u1"] == one and many["u2"] is not None and many["u2"].version == 5


def test_async_client_reads_the_same(settings, redis_url):
    write(settings, [aff("u1", 3), aff("u2", 5)])
    with AffinityClient(settings.redis) as client:
        expected = client.get_many(["u1", "u2", "nobody"])

    async def go():
        async with AsyncAffinityClient(settings.redis) as client:
            return await client.get_many(["u1", "u2", "nobody"]), await client.get("u2"), await client.get("x")

    many, u2, missing = asyncio.run(go())
    assert many == expected and u2 == expected["u2"] and missing is None


def test_age_is_seconds_since_computed(settings, redis_url):
    now_ms = int(time.time() * 1000)
    write(settings, [aff("u1", 1, computed_at=now_ms - 2500)])
    with AffinityClient(settings.redis) as client:
        a = client.get("u1")
    assert a is not None
    assert a.age_seconds(now_ms) == 2.5
    assert 2.5 <= a.age_seconds() < 60
    assert a.age_seconds(now_ms - 10_000) == 0.0  # the writer's clock ahead of ours


def test_a_hash_not_written_by_the_script_reads_as_missing(settings, redis_url):
    write(settings, [aff("good", 1)])
    with AffinityClient(settings.redis) as client:
        client.redis.hset(client.key("partial", DEFAULT_SLOT), mapping={"v": "4", "mv": "m"})
        client.redis.hset(
            client.key("garbled", DEFAULT_SLOT), mapping={"v": "4", "mv": "m", "ct": "1", "et": "1", "top": "[1]"}
        )
        got = client.get_many(["good", "partial", "garbled"])
    assert got["good"] is not None and got["partial"] is None and got["garbled"] is None


def test_writes_survive_a_flushed_script_cache(settings, redis_url):
    # A restarted or failed-over Redis has no scripts: the writer reloads store.lua and redoes
    # only the writes that did not run.
    with AffinityClient(settings.redis) as client:
        client.redis.script_flush()
        assert write(settings, [aff("u1", 1), aff("u2", 1)]) == [True, True]
        client.redis.script_flush()
        assert write(settings, [aff("u1", 2), aff("u2", 1)]) == [True, False]
        assert client.get("u1").version == 2


def test_unreachable_redis_is_store_unavailable_with_what_to_do(settings):
    settings = override(settings, redis={"url": f"redis://127.0.0.1:{free_port()}/0"})
    client = AffinityClient(settings.redis)
    with pytest.raises(StoreUnavailable, match="adcast up"):
        client.get_many(["u1"])
    client.close()

    async def go():
        client = AsyncAffinityClient(settings.redis)
        try:
            await client.get("u1")
        finally:
            await client.close()

    with pytest.raises(StoreUnavailable, match="ADCAST_REDIS__URL"):
        asyncio.run(go())


def test_cluster_mode_against_a_single_redis_says_what_to_set(settings, redis_url):
    settings = override(settings, redis={"cluster": True})
    with pytest.raises(ConfigError, match="ADCAST_REDIS__CLUSTER=false"):
        AffinityClient(settings.redis)


def test_a_large_batch_reads_like_single_gets(settings, redis_url):
    users = [f"c{i}" for i in range(1237)]
    write(settings, [aff(u, i + 1) for i, u in enumerate(users) if i % 3])  # every third one missing
    with AffinityClient(settings.redis) as client:
        many = client.get_many(users)
        singles = {u: client.get(u) for u in users}
    assert many == singles
    assert sum(a is None for a in many.values()) == len(users[::3])
    assert all(many[u].version == i + 1 for i, u in enumerate(users) if i % 3)


def test_batch_reads_survive_connections_killed_by_the_server(settings, redis_url):
    # What a Redis restart or an idle timeout does to pooled connections.
    write(settings, [aff("u1", 3), aff("u2", 5)])

    async def read_async(client):
        first = await client.get_many(["u1", "u2"])
        await client.redis.client_kill_filter(_type="normal", skipme=False)
        return first, await client.get_many(["u1", "u2"])

    async def go():
        async with AsyncAffinityClient(settings.redis) as client:
            return await read_async(client)

    with AffinityClient(settings.redis) as client:
        before = client.get_many(["u1", "u2"])
        client.redis.client_kill_filter(_type="normal", skipme=False)
        after = client.get_many(["u1", "u2"])
    assert before == after and after["u2"].version == 5
    first, second = asyncio.run(go())
    assert first == second == before


def test_a_reader_allowed_only_hmget_reads_batches(settings, redis_url):
    # Ranking servers often get an ACL user that may only read hashes.
    write(settings, [aff("u1", 3), aff("u2", 5)])
    with AffinityClient(settings.redis) as admin:
        admin.redis.acl_setuser("hash-reader", enabled=True, passwords=["+pw"], keys=["*"], commands=["+hmget"])
        try:
            expected = admin.get_many(["u1", "u2", "nobody"])
            reader = settings.redis.model_copy(update={"username": "hash-reader", "password": SecretStr("pw")})

            async def read_async():
                async with AsyncAffinityClient(reader) as client:
                    return await client.get_many(["u1", "u2", "nobody"])

            with AffinityClient(reader) as client:
                sync_read = client.get_many(["u1", "u2", "nobody"])
            async_read = asyncio.run(read_async())
        finally:
            admin.redis.acl_deluser("hash-reader")
    assert sync_read == async_read == expected and expected["u2"].version == 5
