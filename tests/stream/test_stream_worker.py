"""The Faust stream worker as an operator runs it (`adcast stream`), on the real broker."""

from __future__ import annotations

import time

import pytest
from kafka_reading import committed_offsets, read_to_end
from produce import produce

from adcast.config import override
from adcast.kafka import create_topics
from adcast.local.workers import start_worker
from adcast.wire import serde

pytestmark = pytest.mark.integration
NOW = int(time.time() * 1000)


def event(n: int, user: str, kind: str = "click", **extra) -> dict:
    return {
        "event_id": f"e{n}",
        "user_id": user,
        "event_time": NOW + n,
        "event_type": kind,
        "advertiser_id": "a1",
        "item_id": None,
        "category": "shoes",
        "brand": None,
        "text": None,
        **extra,
    }


def test_stream_worker_dedupes_folds_triggers_and_dead_letters(settings, broker, tmp_path, topic_reader):
    def consume(settings, topic, until):
        return topic_reader(settings.kafka.bootstrap_servers, topic, until)

    create_topics(settings)
    from adcast.config import to_env

    worker = start_worker("stream", to_env(settings), tmp_path / "stream.log")
    try:
        worker.wait_ready()
        users = [f"user-{i}" for i in range(6)]
        values: list[tuple[str, bytes]] = []
        n = 0
        for u in users:
            for kind in ("impression", "view", "click", "impression"):
                values.append((u, serde.encode(serde.EVENT, event(n, u, kind))))
                n += 1
        # a redelivered event, garbage, and contract violations
        values.append((users[0], values[1][1]))
        values.append(("junk", b"\x07not avro at all"))
        values.append(("junk", serde.encode(serde.EVENT, event(900, "junk", "poke"))))
        values.append(("junk", serde.encode(serde.EVENT, event(901, "", "click"))))
        delivered = produce(settings, values)

        # Versions are the offsets of each user's newest event (every one here changes the prompt);
        # the redelivered copy of e1 (a view) is dropped by event id, so it moves nothing. The
        # click on the user's strongest advertiser and the same ad shown again are skipped by the
        # value policy: the newest version is scored with the rest, or once the user settles.
        expected = {key: offset for (_, offset), (key, _) in zip(delivered[: len(users) * 4], values, strict=False)}

        def newest(out) -> dict[str, int]:
            latest: dict[str, int] = {}
            for m in out:
                r = serde.decode(serde.REQUEST, m.value())
                latest[r["user_id"]] = max(latest.get(r["user_id"], -1), r["version"])
            return latest

        got = consume(settings, settings.topics.name("requests"), lambda out: newest(out) == expected)
        for m in got:
            r = serde.decode(serde.REQUEST, m.value())
            assert m.key().decode() == r["user_id"]
            assert [e["event_type"] for e in r["events"]] in ([], ["view"], ["view", "click"])
            assert len(r["shown"]) in (1, 2)
        assert newest(got) == expected

        dead = consume(settings, settings.topics.name("dead_letters"), lambda out: len(out) >= 3)
        letters = sorted(
            (d["stage"], d["reason"].split(":")[0]) for d in (serde.decode(serde.DEAD_LETTER, m.value()) for m in dead)
        )
        assert letters == [("decode", "bad_magic"), ("validate", "empty_user_id"), ("validate", "unknown_event_type")]
        assert worker.proc.poll() is None, "the worker must survive bad input"
    finally:
        assert worker.stop() in (0, -15), worker.tail()


def test_batched_table_writes_land_in_each_users_partition(settings, broker, tmp_path, topic_reader):
    """A batch mixes partitions; every history must be written to its own user's partition (its
    RocksDB and its changelog partition), as per-event processing would."""
    create_topics(settings)
    from adcast.config import to_env

    worker = start_worker("stream", to_env(settings), tmp_path / "stream.log")
    try:
        worker.wait_ready()
        users = [f"user-{i}" for i in range(40)]
        values = [(u, serde.encode(serde.EVENT, event(i * 3 + j, u))) for j in range(3) for i, u in enumerate(users)]
        delivered = produce(settings, values)
        partition_of = {key: partition for (key, _), (partition, _) in zip(values, delivered, strict=True)}
        assert len(set(partition_of.values())) > 1, "the test needs users on several partitions"

        changelog = f"{settings.stream.app_id}-history-changelog"

        def folded_all(out) -> bool:
            last = {m.key().decode(): m for m in out}
            return len(last) == len(users) and all(
                len(serde.decode(serde.HISTORY, m.value())["events"]) == 3 for m in last.values()
            )

        records = topic_reader(settings.kafka.bootstrap_servers, changelog, folded_all)
        for m in records:
            assert m.partition() == partition_of[m.key().decode()], m.key()
        assert worker.proc.poll() is None and "Crashed" not in worker.log_text(), worker.tail()
    finally:
        assert worker.stop() in (0, -15), worker.tail()

    # The worker's disk agrees with the changelog: each partition's RocksDB holds the changelog's
    # last value of each of its keys, and its persisted offset (where recovery resumes reading the
    # changelog) is the partition's last changelog offset.
    changelog_records = read_to_end(settings.kafka.bootstrap_servers, changelog)
    for partition in set(partition_of.values()):
        mine = sorted((m for m in changelog_records if m.partition() == partition), key=lambda m: m.offset())
        on_disk = local_table(settings, "history", partition)
        assert on_disk.pop(b"__faust\0offset__") == str(mine[-1].offset()).encode()
        assert on_disk == {m.key(): m.value() for m in mine}


def local_table(settings, table: str, partition: int) -> dict[bytes, bytes]:
    """Every key and value in a stopped worker's RocksDB for one partition of `table`."""
    from pathlib import Path

    from rocksdict import AccessType, Options, Rdict

    (path,) = Path(settings.stream.data_dir).glob(f"**/{table}-{partition}.db")
    db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        return dict(db.items())
    finally:
        db.close()


def test_histories_reach_the_changelog_before_the_offsets_that_fold_them_are_committed(settings, broker, tmp_path):
    """Once Faust has committed the offsets of a user's events, the changelog must already hold
    the history folded from them: a crash right after the commit would otherwise lose them (the
    re-read starts past them), whatever the worker holds in memory."""
    from adcast.config import to_env

    settings = override(settings, stream={"commit_interval_ms": 1000})
    create_topics(settings)
    worker = start_worker("stream", to_env(settings), tmp_path / "stream.log")
    try:
        worker.wait_ready()
        users = [f"user-{i}" for i in range(30)]
        ends: dict[int, int] = {}
        for wave in range(3):  # separate produce calls: the worker folds them in separate batches
            values = [(u, serde.encode(serde.EVENT, event(wave * 100 + i, u))) for i, u in enumerate(users)]
            for partition, offset in produce(settings, values):
                ends[partition] = max(ends.get(partition, 0), offset + 1)
            time.sleep(0.3)

        bootstrap, events = settings.kafka.bootstrap_servers, settings.topics.name("events")
        deadline = time.monotonic() + 60
        while committed_offsets(bootstrap, settings.stream.app_id, events, settings.topics.partitions) != ends:
            assert time.monotonic() < deadline, f"the worker never committed every event\n{worker.tail()}"
            time.sleep(0.2)
        # Read at once, without waiting for more: the commit promises this much is there already.
        changelog = read_to_end(bootstrap, f"{settings.stream.app_id}-history-changelog")
        last = {m.key().decode(): serde.decode(serde.HISTORY, m.value()) for m in changelog}
        assert {u: len(last[u]["events"]) if u in last else 0 for u in users} == dict.fromkeys(users, 3)
        assert worker.proc.poll() is None, worker.tail()
    finally:
        assert worker.stop() in (0, -15), worker.tail()
