"""A partition handed over by a worker that died before its first offset commit: the worker that
takes it over must read it from the start (Faust's post-rebalance rewind skips such partitions;
stream/transport.py rewinds them)."""

from __future__ import annotations

import re
import time

import pytest
from produce import produce

from adcast.config import override, to_env
from adcast.kafka import create_topics
from adcast.local.workers import WorkerProcess, start_worker
from adcast.wire import serde

pytestmark = pytest.mark.integration
NOW = int(time.time() * 1000)


def click(n: int, user: str) -> bytes:
    record = {"event_id": f"e{n}", "user_id": user, "event_time": NOW + n, "event_type": "click"}
    record |= {"advertiser_id": "a1", "item_id": None, "category": "shoes", "brand": None, "text": None}
    return serde.encode(serde.EVENT, record)


def owned_partitions(worker: WorkerProcess, topic: str) -> set[int]:
    """The partitions of `topic` in the worker's latest assignment (Faust logs each one as a table)."""
    tables = worker.log_text().split("Setting newly assigned partitions")
    row = re.search(rf"\| {re.escape(topic)}\s+\| \{{([0-9,\- ]*)\}}", tables[-1]) if len(tables) > 1 else None
    if row is None:
        return set()
    owned: set[int] = set()
    for part in row.group(1).split(","):
        first, _, last = part.strip().partition("-")
        owned.update(range(int(first), int(last or first) + 1))
    return owned


def latest_versions(messages) -> dict[str, int]:
    latest: dict[str, int] = {}
    for m in messages:
        r = serde.decode(serde.REQUEST, m.value())
        latest[r["user_id"]] = max(latest.get(r["user_id"], -1), r["version"])
    return latest


@pytest.mark.timeout(240)
def test_a_worker_killed_before_its_first_commit_hands_over_every_event(settings, broker, tmp_path, topic_reader):
    # No worker commits: the handover finds no offsets.
    settings = override(settings, stream={"commit_interval_ms": 600_000})
    create_topics(settings)
    env, events = to_env(settings), settings.topics.name("events")
    requests = settings.topics.name("requests")
    a = start_worker("stream", {**env, "ADCAST_STREAM__DATA_DIR": str(tmp_path / "a")}, tmp_path / "a.log")
    b = start_worker("stream", {**env, "ADCAST_STREAM__DATA_DIR": str(tmp_path / "b")}, tmp_path / "b.log")
    try:
        a.wait_ready()
        b.wait_ready()
        deadline = time.monotonic() + 60
        while not (owned_partitions(a, events) and owned_partitions(b, events)):
            assert time.monotonic() < deadline, f"the workers never split the partitions\n{a.tail()}\n{b.tail()}"
            time.sleep(0.5)
        handed_over = owned_partitions(a, events)

        users = [f"user-{i}" for i in range(16)]
        first = produce(settings, [(u, click(i, u)) for i, u in enumerate(users)])
        expected = {u: offset for u, (_, offset) in zip(users, first, strict=True)}
        got = topic_reader(settings.kafka.bootstrap_servers, requests, lambda out: latest_versions(out) == expected)
        assert latest_versions(got) == expected, f"{a.tail()}\n{b.tail()}"
        assert {p for p, _ in first} & handed_over, "no event landed on the partition that will be handed over"

        assert a.stop(kill=True) == -9
        # Events for the dead worker's partition while nobody reads it: its successor starts there.
        second = produce(settings, [(u, click(100 + i, u)) for i, u in enumerate(users)])
        expected = {u: offset for u, (_, offset) in zip(users, second, strict=True)}
        got = topic_reader(
            settings.kafka.bootstrap_servers, requests, lambda out: latest_versions(out) == expected, timeout_s=120
        )
        assert latest_versions(got) == expected, b.tail(60)
        assert owned_partitions(b, events) >= handed_over
        assert b.proc.poll() is None
    finally:
        a.stop(kill=True)
        assert b.stop() in (0, -15), b.tail()
