"""Model slots on a real redis-server: each slot its own keys and version guard, the pointer that
readers follow (live, then previous for users the live slot lacks), promote, retire."""

import asyncio
import time

import pytest
from pydantic import SecretStr
from store_helpers import write

from adcast.config import override
from adcast.core.affinities import Affinities
from adcast.core.slots import pointer_key
from adcast.errors import ConfigError
from adcast.store import AffinityClient, AsyncAffinityClient, AsyncAffinityStore, SlotAdmin

pytestmark = pytest.mark.integration


def aff(user: str, version: int, model: str) -> Affinities:
    return Affinities(user, version, model, 1_700_000_000_000, 1_699_999_999_000, (("a1", 0.5), ("a2", 0.25)))


def announce(settings, slot: str) -> bool:
    async def go():
        store = AsyncAffinityStore(settings.redis, slot)
        try:
            return await store.announce(int(time.time() * 1000))
        finally:
            await store.close()

    return asyncio.run(go())


def test_each_slot_has_its_own_records_and_version_guard(settings, redis_url):
    assert write(settings, [aff("u1", 7, "A")], "g1") == [True]
    # A new model's prediction at the same version lands in its own slot, not refused as stale.
    assert write(settings, [aff("u1", 7, "B")], "g2") == [True]
    assert write(settings, [aff("u1", 6, "B")], "g2") == [False]  # the guard holds within a slot
    with AffinityClient(settings.redis) as client:
        assert client.get("u1", slot="g1").model_version == "A"
        assert client.get("u1", slot="g2").model_version == "B"
        both = client.get_many_slots(["u1", "nobody"], ["g1", "g2"])
    assert {s: {u: a and a.model_version for u, a in r.items()} for s, r in both.items()} == {
        "g1": {"u1": "A", "nobody": None},
        "g2": {"u1": "B", "nobody": None},
    }


def test_the_first_slot_announced_becomes_live_and_a_later_one_does_not(settings, redis_url):
    assert announce(settings, "g1") is True
    assert announce(settings, "g2") is False
    assert announce(settings, "g1") is False
    with SlotAdmin(settings.redis) as admin:
        p = admin.pointer()
    assert p.live == "g1" and set(p.writers) == {"g1", "g2"} and p.updated_at > 0


def test_readers_follow_promote_and_fall_back_on_the_previous_slot(settings, redis_url):
    settings = override(settings, redis={"pointer_refresh_s": 0.05})
    write(settings, [aff("old-only", 3, "A"), aff("both", 3, "A")], "g1")
    write(settings, [aff("both", 3, "B"), aff("new-only", 4, "B")], "g2")
    announce(settings, "g1")
    users = ["old-only", "both", "new-only"]
    with AffinityClient(settings.redis) as client, SlotAdmin(settings.redis) as admin:
        assert {u: a and a.model_version for u, a in client.get_many(users).items()} == {
            "old-only": "A",
            "both": "A",
            "new-only": None,
        }
        admin.set_candidate("g2")
        assert admin.pointer().candidate == "g2"
        assert admin.promote("g2") == "g1"
        time.sleep(0.1)
        p = admin.pointer()
        assert (p.live, p.previous, p.candidate) == ("g2", "g1", None)
        # The live slot first; a user it lacks still reads the previous slot's record.
        read = {u: a and a.model_version for u, a in client.get_many(users).items()}

        async def read_async():
            async with AsyncAffinityClient(settings.redis) as aclient:
                return {u: a and a.model_version for u, a in (await aclient.get_many(users)).items()}

        assert read == asyncio.run(read_async()) == {"old-only": "A", "both": "B", "new-only": "B"}
        assert admin.promote("g2") == "g2"  # promoting the live slot again changes nothing
        assert admin.pointer().previous == "g1"


def test_retire_refuses_the_live_slot_and_a_slot_still_written(settings, redis_url):
    settings = override(settings, redis={"pointer_refresh_s": 0.05})
    write(settings, [aff(f"u{i}", 1, "A") for i in range(1200)], "g1")
    write(settings, [aff("u1", 1, "B")], "g2")
    announce(settings, "g1")
    with SlotAdmin(settings.redis) as admin:
        with pytest.raises(ConfigError, match="is live"):
            admin.retire("g1", rate=1e6)
        admin.promote("g2")
        with pytest.raises(ConfigError, match="ran 0 s ago"):
            admin.retire("g1", rate=1e6)  # its worker announced itself a moment ago
        batches: list[int] = []
        started = time.monotonic()
        assert admin.retire("g1", rate=4000, batch=500, force=True, on_batch=batches.append) == 1200
        took = time.monotonic() - started
        assert batches == [500, 500, 200] and admin.count("g1") == 0 and admin.count("g2") == 1
        assert took >= 1200 / 4000  # paced (a lower bound: the pacing cannot be faster than the rate)
        p = admin.pointer()
        assert (p.live, p.previous) == ("g2", None) and "g1" not in p.writers
        assert admin.redis.exists(pointer_key(settings.redis.key_prefix))


def test_a_reader_allowed_only_hmget_follows_the_pointer(settings, redis_url):
    write(settings, [aff("u1", 2, "A")], "g7")
    with SlotAdmin(settings.redis) as admin:
        admin.promote("g7")
        admin.redis.acl_setuser("slot-reader", enabled=True, passwords=["+pw"], keys=["*"], commands=["+hmget"])
        try:
            reader = settings.redis.model_copy(update={"username": "slot-reader", "password": SecretStr("pw")})
            with AffinityClient(reader) as client:
                got = client.get("u1")
        finally:
            admin.redis.acl_deluser("slot-reader")
    assert got is not None and got.model_version == "A"
