"""Failures on the real broker, a real redis-server and a real tiny model, both tiers as subprocesses
from their own environments: crashes (kill -9) of either tier at seeded random moments, a Redis
outage (restarted on its data and on an empty directory), a rebalance between two workers per tier,
and a graceful stop of the inference worker mid-batch. Each run must end exactly where a run
without failures ends: every user at the offset of their newest salient event, with the top-K the
same engine gives the prompt folded from the delivered events (see chaos.py)."""

from __future__ import annotations

import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from chaos import (
    RedisServer,
    Slot,
    affinity_versions,
    compare_with_reference,
    prometheus_value,
    reference_requests,
    requests_in,
    stop_together,
    versions_in_snapshot,
    write_new_click_per_user,
    written_before_commit,
)
from kafka_reading import committed_offsets, end_offsets, read_to_end

from adcast.config import Settings, override, to_env
from adcast.core.prompt import render
from adcast.core.slots import DEFAULT_SLOT
from adcast.data.files import read_records, write_records, write_user_slice
from adcast.kafka import create_topics
from adcast.local.demo import wait_for_versions
from adcast.local.services import free_port
from adcast.replay import ReplaySummary, expected_versions, replay
from adcast.store import AffinityClient

pytestmark = pytest.mark.e2e
pytest.importorskip("torch")

WORLD_USERS = 400  # about 22k events
CHAOS_SEED = int(os.environ.get("ADCAST_CHAOS_SEED", "6"))  # the kill plan and moments


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's world (same seed and advertisers), grown to 400 users."""
    from adcast.data.synthetic import WorldSpec, generate

    folder = tmp_path_factory.mktemp("chaos-world")
    for kind, records in generate(WorldSpec(users=WORLD_USERS, advertisers=60, seed=11)).items():
        write_records(folder, kind, records)
    return folder


@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    """The torch engine on the workers' checkpoint, in this process: the reference scorer."""
    from adcast.engines import create_engine

    e = create_engine("torch", str(tiny_model), cpu_threads=1)
    yield e
    e.close()


@pytest.fixture
def slots():
    """Every worker slot a test starts; whatever still runs is stopped at the end."""
    started: list[Slot] = []
    yield started
    for slot in started:
        slot.stop_all()


def users_of(world: Path, n: int) -> list[str]:
    return sorted(p["user_id"] for p in read_records(world, "profiles"))[:n]


def start(slots: list[Slot], *new: Slot) -> None:
    slots.extend(new)
    for s in new:
        s.start()
    for s in new:
        s.wait_ready()


def check_against_reference(
    settings: Settings, engine, slices: list[Path], delivered, timeout_s: float, *slots: Slot
) -> int:
    """Wait until Redis holds every expected version, then compare it with the clean result;
    returns the users compared. On failure, the slots' logs as they are then."""
    expected = expected_versions(delivered)
    with AffinityClient(settings.redis) as client:
        done = wait_for_versions(client, expected, timeout_s=timeout_s)
        stored = client.get_many(sorted(expected))
    logs = "\n".join(slot.logs() for slot in slots)
    if len(done) < len(expected):
        served = requests_in(read_to_end(settings.kafka.bootstrap_servers, settings.topics.name("requests")))
        for user in sorted(set(expected) - set(done))[:5]:
            versions = sorted({r.version for _, _, r in served if r.user_id == user})
            logs += f"\n{user}: expected v{expected[user]}, Redis {stored[user]}, requested {versions}"
    assert len(done) == len(expected), f"{len(expected) - len(done)} of {len(expected)} users never caught up\n{logs}"
    requests = reference_requests(settings, slices, delivered)
    result = compare_with_reference(engine, requests, expected, stored, settings.infer.top_k)
    if result.mismatches:
        served = requests_in(read_to_end(settings.kafka.bootstrap_servers, settings.topics.name("requests")))
        for line in result.mismatches[:5]:
            user = line.split(":")[0]
            logs += f"\n{user} reference: {render(requests[user])}"
            logs += "".join(f"\n{user} served v{r.version}: {render(r)}" for _, _, r in served if r.user_id == user)
    assert not result.mismatches, f"{len(result.mismatches)} mismatches: {result.mismatches[:10]}\n{logs}"
    assert result.users == len(expected)
    return result.users


@pytest.mark.timeout(420)
def test_crashes_of_either_tier_converge_to_the_clean_result(
    settings, broker, redis_url, tiny_model, world, engine, slots, tmp_path
):
    t0 = time.monotonic()
    settings = override(settings, infer={"model_dir": str(tiny_model)})
    create_topics(settings)
    env = to_env(settings)
    stream, infer = Slot("stream", env, tmp_path, "stream"), Slot("infer", env, tmp_path, "infer")
    start(slots, stream, infer)

    rng = random.Random(CHAOS_SEED)
    plan = ["stream", "infer", rng.choice(["stream", "infer"])]
    rng.shuffle(plan)
    kills: list[tuple[str, float]] = []
    with ThreadPoolExecutor(1) as pool:
        # Original event times, paced so that the replay outlasts the first kills.
        replaying = pool.submit(replay, settings, world, rate=1000, collect=True, progress=False)
        replay_started = time.monotonic()
        for target in plan:
            slot = stream if target == "stream" else infer
            slot.wait_ready()  # a worker that got to work, not one still joining
            time.sleep(rng.uniform(1.5, 5.0))
            assert slot.kill() == -9, slot.logs()
            kills.append((target, round(time.monotonic() - replay_started, 1)))
            slot.start()  # right after, into the same group (and, for the stream tier, the same state dir)
        summary: ReplaySummary = replaying.result()
    assert summary.events >= 20_000
    assert {t for t, _ in kills} == {"stream", "infer"} and len(kills) >= 3

    users = check_against_reference(settings, engine, [world], summary.delivered, 180, stream, infer)
    for slot in (stream, infer):
        assert slot.current.proc.poll() is None, slot.logs()
    assert stop_together(stream, infer) == [0, 0], stream.logs() + "\n" + infer.logs()
    print(
        f"\ncrash convergence: {summary.events} events replayed, kills survived {kills}, "
        f"users compared {users}, mismatches 0, {time.monotonic() - t0:.0f}s"
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("restart_on", ["same-data-dir", "empty-data-dir"])
def test_a_redis_outage_commits_nothing_unwritten_and_writes_resume(
    restart_on, settings, broker, tiny_model, world, engine, slots, tmp_path
):
    t0 = time.monotonic()
    run_dir, data_dir = tmp_path / "redis-run", tmp_path / "redis-data"
    server = RedisServer.create(run_dir, data_dir)
    server.start()
    try:
        settings = override(settings, redis={"url": server.url}, infer={"model_dir": str(tiny_model)})
        create_topics(settings)
        env = to_env(settings)
        stream, infer = Slot("stream", env, tmp_path, "stream"), Slot("infer", env, tmp_path, "infer")
        start(slots, stream, infer)
        first = write_user_slice(world, tmp_path / "first", users_of(world, 100))
        bootstrap, group = settings.kafka.bootstrap_servers, settings.infer.group_id
        topic, partitions = settings.topics.name("requests"), settings.topics.partitions

        with ThreadPoolExecutor(1) as pool:
            replaying = pool.submit(replay, settings, first, rate=450, collect=True, progress=False)
            time.sleep(2.5)
            server.stop()  # SIGTERM: redis-server saves its data as it goes down
            stopped = time.monotonic()
            time.sleep(1.0)  # a batch written just before the stop may still commit
            committed_early = committed_offsets(bootstrap, group, topic, partitions)
            time.sleep(max(0.0, stopped + 8.5 - time.monotonic()))
            committed = committed_offsets(bootstrap, group, topic, partitions)
            waiting = read_to_end(bootstrap, topic)
            snapshot = versions_in_snapshot(data_dir, tmp_path, f"{settings.redis.key_prefix}{DEFAULT_SLOT}:")
            if restart_on == "empty-data-dir":
                data_dir = tmp_path / "redis-data-empty"
            time.sleep(max(0.0, stopped + 10.0 - time.monotonic()))
            server = RedisServer.create(run_dir, data_dir, port=server.port)
            server.start()
            first_summary = replaying.result()

        # Nothing committed while Redis was down, and nothing committed before its write succeeded.
        assert committed == committed_early, "offsets were committed while Redis was down"
        backlog = sum(end_offsets(waiting).values()) - sum(committed.values())
        assert backlog > 0, "no request waited for Redis: the outage missed the replay"
        unwritten = written_before_commit(requests_in(waiting), committed, snapshot)
        assert not unwritten, f"committed before written: {unwritten[:10]}"
        if restart_on == "same-data-dir":
            with AffinityClient(settings.redis) as client:
                kept = client.get_many(sorted(snapshot))
            assert all(a is not None and a.version >= snapshot[u] for u, a in kept.items())

        # A new salient event for every user: with an empty Redis, each must be scored again.
        second = write_new_click_per_user(world, first, tmp_path / "second")
        second_summary = replay(settings, second, collect=True, progress=False)
        delivered = first_summary.delivered + second_summary.delivered
        users = check_against_reference(settings, engine, [first, second], delivered, 120, stream, infer)
        logs = stream.logs() + "\n" + infer.logs()
        assert len(infer.processes) == 1 and infer.current.proc.poll() is None, logs
        assert "redis unavailable, retrying" in infer.current.log_text()
        assert stop_together(stream, infer) == [0, 0], logs
    finally:
        server.stop()
    print(
        f"\nredis outage ({restart_on}): {first_summary.events + second_summary.events} events, "
        f"{backlog} requests waited, {len(snapshot)} users in Redis at the stop, users compared {users}, "
        f"mismatches 0, {time.monotonic() - t0:.0f}s"
    )


@pytest.mark.timeout(300)
def test_a_rebalance_after_one_worker_per_tier_stops_loses_no_user(
    settings, broker, redis_url, tiny_model, world, engine, slots, tmp_path
):
    t0 = time.monotonic()
    settings = override(settings, infer={"model_dir": str(tiny_model)})
    create_topics(settings)
    env = to_env(settings)
    # Each stream worker keeps its own state directory, as on two machines.
    stream_a = Slot("stream", {**env, "ADCAST_STREAM__DATA_DIR": str(tmp_path / "a")}, tmp_path, "stream-a")
    stream_b = Slot("stream", {**env, "ADCAST_STREAM__DATA_DIR": str(tmp_path / "b")}, tmp_path, "stream-b")
    infer_a, infer_b = Slot("infer", env, tmp_path, "infer-a"), Slot("infer", env, tmp_path, "infer-b")
    start(slots, stream_a, stream_b, infer_a, infer_b)
    data = write_user_slice(world, tmp_path / "data", users_of(world, 150))

    with ThreadPoolExecutor(1) as pool:
        replaying = pool.submit(replay, settings, data, rate=800, collect=True, progress=False)
        time.sleep(3.0)
        assert stream_a.kill() == -9  # its partitions move to stream-b, rebuilt from the changelog
        assert infer_b.current.stop() == 0  # SIGTERM: finishes its batch, commits, leaves the group
        scored = re.search(r"inference worker stopped batches=\d+ scored=(\d+)", infer_b.current.log_text())
        assert scored and int(scored.group(1)) > 0, infer_b.logs()  # it had partitions, and work
        summary: ReplaySummary = replaying.result()

    workers = (stream_a, stream_b, infer_a, infer_b)
    users = check_against_reference(settings, engine, [data], summary.delivered, 150, *workers)
    logs = "\n".join(s.logs() for s in workers)
    for survivor in (stream_b, infer_a):
        assert survivor.current.proc.poll() is None, logs
    assert stop_together(stream_b, infer_a) == [0, 0], logs
    print(
        f"\nrebalance: {summary.events} events, stream-a killed, infer-b stopped, users compared {users}, "
        f"mismatches 0, {time.monotonic() - t0:.0f}s"
    )


@pytest.mark.timeout(300)
def test_sigterm_mid_batch_finishes_writes_commits_and_exits_zero(
    settings, broker, redis_url, tiny_model, world, engine, slots, tmp_path
):
    t0 = time.monotonic()
    settings = override(settings, infer={"model_dir": str(tiny_model)})
    create_topics(settings)
    env = to_env(settings)
    metrics_port = free_port()
    # One long micro-batch: everything the worker consumes waits for it, uncommitted, for 20 s
    # (users whose last change the policy skipped are emitted once they settle, a second later).
    holding = {**env, "ADCAST_INFER__MAX_BATCH": "4096", "ADCAST_INFER__MAX_WAIT_MS": "20000"}
    holding["ADCAST_METRICS_PORT"] = str(metrics_port)
    stream, infer = Slot("stream", env, tmp_path, "stream"), Slot("infer", holding, tmp_path, "infer")
    start(slots, stream, infer)
    data = write_user_slice(world, tmp_path / "data", users_of(world, 80))
    bootstrap, group = settings.kafka.bootstrap_servers, settings.infer.group_id
    topic, partitions = settings.topics.name("requests"), settings.topics.partitions

    summary = replay(settings, data, collect=True, progress=False)
    expected = expected_versions(summary.delivered)
    # Wait until the stream tier has emitted every user's final request and the worker has fetched
    # them all (its lag is 0) while its batch is still open: nothing committed, nothing written.
    deadline = time.monotonic() + 30
    while True:
        emitted = read_to_end(bootstrap, topic)
        newest = {}
        for _, _, r in requests_in(emitted):
            newest[r.user_id] = max(newest.get(r.user_id, -1), r.version)
        # The requests topic's partitions (the worker reads the rollout topic too).
        lag = {k: v for k, v in prometheus_value(metrics_port, "adcast_consumer_lag").items() if f'"{topic}"' in k}
        if newest == expected and len(lag) == partitions and not any(lag.values()):
            break
        assert time.monotonic() < deadline, f"requests or the worker's fetches never caught up\n{infer.logs()}"
        time.sleep(0.2)
    ends = end_offsets(emitted)
    assert committed_offsets(bootstrap, group, topic, partitions) == dict.fromkeys(range(partitions), 0)
    with AffinityClient(settings.redis) as client:
        assert not any(client.get_many(sorted(expected)).values()), "the batch was flushed before the SIGTERM"

    first = infer.current
    first.proc.terminate()
    # The replacement, with the usual batching, joins the group once the first has left.
    infer = Slot("infer", env, tmp_path, "infer-after")
    slots.append(infer)
    infer.start()
    assert first.proc.wait(30) == 0, first.tail(40)
    assert "inference worker stopped batches=1 " in first.log_text(), first.tail(40)
    assert committed_offsets(bootstrap, group, topic, partitions) == ends
    with AffinityClient(settings.redis) as client:
        stored = client.get_many(sorted(expected))
    assert {u: a.version if a else None for u, a in stored.items()} == expected, "the batch in flight was not written"

    # The replacement re-scores nothing of that batch, and carries on (the stream tier emits the
    # new requests while it joins).
    second = write_new_click_per_user(world, data, tmp_path / "second")
    second_summary = replay(settings, second, collect=True, progress=False)
    infer.wait_ready()
    delivered = summary.delivered + second_summary.delivered
    users = check_against_reference(settings, engine, [data, second], delivered, 120, stream, infer)
    assert stop_together(stream, infer) == [0, 0], stream.logs() + "\n" + infer.logs()
    published = affinity_versions(read_to_end(bootstrap, settings.topics.name("affinities")))
    first_batch = [(u, v) for u, v in published if v == expected[u]]
    assert sorted(first_batch) == sorted(expected.items()), "a prediction of the batch in flight was scored twice"
    print(
        f"\ngraceful stop: batch of {len(expected)} users finished, exit 0, {len(published)} predictions published, "
        f"users compared {users}, mismatches 0, {time.monotonic() - t0:.0f}s"
    )
