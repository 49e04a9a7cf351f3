"""Backfill on the small synthetic world with a real tiny model, real Redis and, for the live
prediction, the real inference worker on the real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from adcast.backfill import backfill, backfill_version
from adcast.config import override, to_env
from adcast.core.affinities import Affinities
from adcast.core.history import HistoryEvent
from adcast.core.requests import PredictionRequest
from adcast.core.slots import DEFAULT_SLOT
from adcast.data.files import read_records, write_records
from adcast.kafka import create_topics
from adcast.store import AffinityClient, AsyncAffinityStore
from adcast.wire import serde

pytestmark = pytest.mark.integration
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def engine(tiny_model):
    from adcast.engines import create_engine

    e = create_engine("torch", str(tiny_model), cpu_threads=1)
    yield e
    e.close()


def newest_times(events) -> tuple[dict[str, int], dict[str, int]]:
    """Per user: the time of the newest event that changes a prompt (anything but an impression
    without an advertiser), and the newest event time of any kind."""
    changed: dict[str, int] = {}
    newest: dict[str, int] = defaultdict(int)
    for e in events:
        newest[e["user_id"]] = max(newest[e["user_id"]], e["event_time"])
        if e["event_type"] != "impression" or e.get("advertiser_id"):
            changed[e["user_id"]] = max(changed.get(e["user_id"], 0), e["event_time"])
    return changed, dict(newest)


def stored_users(settings, slot: str = DEFAULT_SLOT) -> list[str]:
    """The users a slot holds a key for."""
    client = AffinityClient(settings.redis)
    prefix = f"{settings.redis.key_prefix}{slot}:"
    try:
        return sorted(k[len(prefix) :] for k in client.redis.scan_iter(match=prefix + "*"))
    finally:
        client.close()


def test_backfill_writes_one_record_per_user_and_a_rerun_writes_nothing(settings, redis_url, small_world, engine):
    salient, newest = newest_times(read_records(small_world, "events"))

    first = backfill(settings, small_world, batch=32, engine=engine, progress=False)

    assert first.users == len(newest) and first.nothing_to_show == len(newest) - len(salient)
    assert first.scored == first.written == len(salient) and first.stale == 0 and not first.invalid
    assert stored_users(settings) == sorted(salient)
    client = AffinityClient(settings.redis)
    try:
        found = client.get_many(sorted(salient))
        known = set(engine.advertiser_ids)
        for user, t in salient.items():
            a = found[user]
            assert a is not None and a.version == backfill_version(t) < 0, user
            assert a.model_version == engine.model_version and a.newest_event_time == t  # the newest change
            probs = [p for _, p in a.top]
            assert len(a.top) == settings.infer.top_k and {x for x, _ in a.top} <= known
            assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
            assert 0 < client.redis.pttl(client.key(user, DEFAULT_SLOT)) <= settings.redis.ttl_seconds * 1000

        second = backfill(settings, small_world, batch=32, engine=engine, progress=False)
        assert second.scored == len(salient) and second.written == 0 and second.stale == len(salient)
        assert client.get_many(sorted(salient)) == found  # not even the computed time moved
    finally:
        client.close()


def test_newer_files_supersede_an_older_backfill_and_older_ones_do_not(
    settings, redis_url, small_world, engine, tmp_path
):
    events = list(read_records(small_world, "events"))
    cutoff = sorted(e["event_time"] for e in events)[len(events) * 3 // 4]
    older = tmp_path / "older"
    invalid = {**events[0], "event_id": "bad", "event_type": "teleport"}
    # Impressions with no advertiser: nothing a prompt could show.
    lurker = [
        {**events[0], "event_id": f"imp{i}", "user_id": "lurker", "event_type": "impression", "advertiser_id": None}
        for i in range(3)
    ]
    write_records(older, "events", [e for e in events if e["event_time"] < cutoff] + [invalid] + lurker)
    write_records(older, "profiles", read_records(small_world, "profiles"))
    salient_old, _ = newest_times(e for e in events if e["event_time"] < cutoff)
    salient_new, _ = newest_times(events)
    moved = {u for u, t in salient_new.items() if t != salient_old.get(u)}
    assert 0 < len(moved) < len(salient_new), "the cutoff should leave some users unchanged"

    s = backfill(settings, older, batch=64, engine=engine, progress=False)
    assert s.written == len(salient_old) and s.nothing_to_show == 1 and s.invalid == {"unknown_event_type": 1}
    assert "lurker" not in stored_users(settings)

    s = backfill(settings, small_world, batch=64, engine=engine, progress=False)
    assert (s.written, s.stale) == (len(moved), len(salient_new) - len(moved))

    s = backfill(settings, older, batch=64, engine=engine, progress=False)
    assert (s.written, s.stale) == (0, len(salient_old))
    client = AffinityClient(settings.redis)
    try:
        found = client.get_many(sorted(salient_new))
    finally:
        client.close()
    assert {u: a.version for u, a in found.items() if a} == {u: backfill_version(t) for u, t in salient_new.items()}


def test_a_live_prediction_overwrites_a_backfilled_one_and_backfill_never_overwrites_live(
    settings, broker, redis_url, small_world, tiny_model, engine
):
    from adcast.inference.worker import InferenceWorker

    settings = override(settings, infer={"model_dir": str(tiny_model)})
    create_topics(settings)
    s = backfill(settings, small_world, limit_users=3, engine=engine, progress=False)
    assert s.users == s.written == 3
    users = sorted({e["user_id"] for e in read_records(small_world, "events")})[:3]
    assert stored_users(settings) == users
    live_user = users[0]
    client = AffinityClient(settings.redis)
    backfilled = client.get_many(users)

    # A live request: its version is an input offset, so >= 0 and above every backfilled version.
    t = backfilled[live_user].newest_event_time
    request = PredictionRequest(live_user, 5, "quiet", t, t, {"age": "25-34"}, (HistoryEvent(t, "click", "a0001"),))

    async def live() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await producer.start()
        try:
            value = serde.encode(serde.REQUEST, request.to_record())
            await producer.send_and_wait(settings.topics.name("requests"), value, key=live_user.encode())
        finally:
            await producer.stop()
        worker = InferenceWorker(settings, engine)
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(300):
                stored = client.get(live_user)
                if stored is not None and stored.version == 5:
                    break
                await asyncio.sleep(0.1)
        finally:
            worker.stop.set()
            await task

    try:
        asyncio.run(live())
        after_live = client.get_many(users)
        assert after_live[live_user].version == 5 and after_live[live_user].top != backfilled[live_user].top
        assert {u: after_live[u] for u in users[1:]} == {u: backfilled[u] for u in users[1:]}

        async def older_live_write() -> list[bool]:
            store = AsyncAffinityStore(settings.redis)
            try:
                older = Affinities(live_user, 2, engine.model_version, t, t, (("a0001", 1.0),))
                return await store.write_many([older])
            finally:
                await store.close()

        assert asyncio.run(older_live_write()) == [False]
        s = backfill(settings, small_world, limit_users=3, engine=engine, progress=False)
        assert (s.written, s.stale) == (0, 3)
        assert client.get_many(users) == after_live

        # A backfill of a new slot fills that slot only: the live one keeps its live prediction.
        s = backfill(settings, small_world, limit_users=3, engine=engine, progress=False, slot="g1")
        assert (s.written, s.stale) == (3, 0) and stored_users(settings, "g1") == users
        assert client.get_many(users) == after_live
        in_new = client.get_many(users, slot="g1")
        assert {u: (a.version, a.top) for u, a in in_new.items() if a} == {
            u: (a.version, a.top) for u, a in backfilled.items() if a
        }
    finally:
        client.close()


def test_cli_backfill_prints_its_summary(settings, redis_url, small_world, tiny_model):
    settings = override(settings, infer={"model_dir": str(tiny_model)})
    env = {**os.environ, **to_env(settings)}
    args = [sys.executable, "-m", "adcast.cli", "backfill", "--data", str(small_world), "--limit-users", "5"]
    out = subprocess.run([*args, "--batch", "2", "--quiet"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("backfilled 5 users in ")
    assert "written 5, skipped as stale 0" in out.stdout
    assert len(stored_users(settings)) == 5

    bad = subprocess.run([*args, "--batch", "0"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "batch must be at least 1" in bad.stderr
