"""Poison pills against the real workers: both tiers as subprocesses from their own environments,
on the real broker, a real redis-server and a real tiny model. Each pill must leave both workers
up, reach the dead-letter topic (or a counter) with its reason, and leave a canary user getting
fresh predictions: no single bad record, key or producer may freeze a user or stop a tier."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from typing import Any

import pytest
from chaos import prometheus_value
from kafka_reading import read_to_end

from adcast.config import Settings, override, to_env
from adcast.core.partitioning import partition_for
from adcast.core.slots import DEFAULT_SLOT, user_key
from adcast.kafka import create_topics
from adcast.local.services import free_port
from adcast.local.workers import WorkerProcess, start_worker
from adcast.replay import event_producer
from adcast.store import AffinityClient
from adcast.wire import serde

pytestmark = pytest.mark.e2e
pytest.importorskip("torch")

_ids = count()


@dataclass
class Pipeline:
    settings: Settings
    stream: WorkerProcess
    infer: WorkerProcess
    stream_metrics: int
    infer_metrics: int
    producer: Any

    def event(self, user: str, kind: str = "click", key: bytes | None = None, partition: int | None = None,
              **fields: Any) -> tuple[int, int]:  # fmt: skip
        """Produce one event of `user` (keyed and placed by the contract unless told otherwise);
        returns (partition, offset)."""
        record = {"event_id": f"pill-{next(_ids)}", "user_id": user, "event_time": int(time.time() * 1000),
                  "event_type": kind, "advertiser_id": "a0001", "item_id": None, "category": None, "brand": None,
                  "text": None, **fields}  # fmt: skip
        value = serde.encode(serde.EVENT, record)
        return self.produce(self.settings.topics.name("events"), key or user.encode(), value, partition)

    def produce(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> tuple[int, int]:
        placed: list[tuple[int, int]] = []

        def done(err: Any, msg: Any) -> None:
            assert err is None, err
            placed.append((msg.partition(), msg.offset()))

        extra = {} if partition is None else {"partition": partition}
        self.producer.produce(topic, key=key, value=value, on_delivery=done, **extra)
        assert self.producer.flush(30) == 0
        return placed[0]

    def stored_version(self, user: str) -> int | None:
        with AffinityClient(self.settings.redis) as client:
            got = client.get(user)
        return None if got is None else got.version

    def wait_version(self, user: str, at_least: int, timeout_s: float = 60) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            version = self.stored_version(user)
            if version is not None and version >= at_least:
                return version
            time.sleep(0.2)
        raise AssertionError(f"{user} never reached version {at_least}\n{self.stream.tail()}\n{self.infer.tail()}")

    def dead_letters(self, reason: str, key: bytes | None = None, want: int = 1, timeout_s: float = 60) -> list[Any]:
        """The dead letters of `reason` (and of this original key), once `want` of them are there."""
        deadline = time.monotonic() + timeout_s
        while True:
            topic = self.settings.topics.name("dead_letters")
            letters = [serde.decode(serde.DEAD_LETTER, m.value()) for m in read_to_end(self.kafka, topic)]
            found = [d for d in letters if d["reason"].split(":")[0] == reason and key in (None, d["key"])]
            if len(found) >= want or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    @property
    def kafka(self) -> str:
        return self.settings.kafka.bootstrap_servers

    def assert_healthy(self) -> None:
        """Both workers up, and a canary user's new click reaches Redis."""
        assert self.stream.proc.poll() is None, self.stream.tail()
        assert self.infer.proc.poll() is None, self.infer.tail()
        _, offset = self.event("canary")
        self.wait_version("canary", offset)


@pytest.fixture(scope="module")
def pipeline(module_settings: Settings, tiny_model, tmp_path_factory) -> Iterator[Pipeline]:
    settings = override(module_settings, infer={"model_dir": str(tiny_model)})
    # Every topic but the dead-letter topic: a deployment that forgot it (the first pill).
    create_topics(settings, only=["events", "profiles", "advertisers", "requests", "affinities", "ticks"])
    logs = tmp_path_factory.mktemp("pill-logs")
    ports = free_port(), free_port()
    env = to_env(settings)
    stream = start_worker("stream", {**env, "ADCAST_METRICS_PORT": str(ports[0])}, logs / "stream.log")
    infer = start_worker("infer", {**env, "ADCAST_METRICS_PORT": str(ports[1])}, logs / "infer.log")
    p = Pipeline(settings, stream, infer, ports[0], ports[1], event_producer(settings))
    try:
        stream.wait_ready()
        infer.wait_ready()
        p.assert_healthy()
        yield p
    finally:
        p.producer.flush(10)
        p.producer = None  # librdkafka's client closes when collected, before the broker stops
        assert stream.stop() in (0, -15), stream.tail()
        assert infer.stop() in (0, -15), infer.tail()


def counter(port: int, name: str, *labels: str) -> float:
    return sum(v for text, v in prometheus_value(port, name).items() if all(label in text for label in labels))


def test_a_missing_dead_letter_topic_loses_no_dead_letter(pipeline):
    """The workers create it when missing (kafka.ensure_dead_letter_topic, tested on its own in
    tests/integration/test_topics.py: the local broker also creates a topic a client only names)."""
    from confluent_kafka.admin import AdminClient

    topic = pipeline.settings.topics.name("dead_letters")
    admin = AdminClient({"bootstrap.servers": pipeline.kafka})
    assert topic not in admin.list_topics(timeout=10).topics
    pipeline.event("pill-no-dlq", key=b"not-the-user")  # a stream-tier dead letter
    request = {"user_id": "pill-no-dlq", "version": -(2**60), "reason": "crafted", "newest_event_time": 1,
               "enqueued_at": 1, "profile": {}, "events": [], "own": []}  # fmt: skip
    pipeline.produce(pipeline.settings.topics.name("requests"), b"pill-no-dlq", serde.encode(serde.REQUEST, request))
    assert len(pipeline.dead_letters("key_mismatch", b"not-the-user")) == 1
    assert len(pipeline.dead_letters("version_out_of_range", b"pill-no-dlq")) == 1  # the inference tier's
    pipeline.assert_healthy()


def test_a_key_of_another_type_in_redis_dead_letters_that_users_requests_only(pipeline):
    key = user_key(pipeline.settings.redis.key_prefix, DEFAULT_SLOT, "pill-wrongtype")
    with AffinityClient(pipeline.settings.redis) as client:
        client.redis.set(key, "not a hash")
    pipeline.event("pill-wrongtype")
    (letter,) = pipeline.dead_letters("wrong_type", b"pill-wrongtype")
    assert letter["stage"] == "store" and letter["source_topic"] == pipeline.settings.topics.name("requests")
    assert counter(pipeline.infer_metrics, "adcast_store_key_errors_total", 'reason="wrong_type"') >= 1
    pipeline.assert_healthy()
    with AffinityClient(pipeline.settings.redis) as client:
        assert client.redis.get(key) == "not a hash"  # the foreign value is left alone


def test_an_event_on_the_wrong_partition_is_dead_lettered_and_freezes_nobody(pipeline):
    _, first = pipeline.event("pill-partition")
    before = pipeline.wait_version("pill-partition", first)
    partitions = pipeline.settings.topics.partitions
    wrong = (partition_for(b"pill-partition", partitions) + 1) % partitions
    for _ in range(3):  # a librdkafka producer with its default partitioner, at higher offsets
        pipeline.event("pill-partition", partition=wrong)
    letters = pipeline.dead_letters("wrong_partition", b"pill-partition", want=3)
    assert len(letters) == 3 and {d["partition"] for d in letters} == {wrong}
    _, after = pipeline.event("pill-partition")  # the user's next event on their own partition
    assert pipeline.wait_version("pill-partition", after) == after > before
    assert counter(pipeline.stream_metrics, "adcast_dead_letters_total", 'reason="wrong_partition"') == 3
    pipeline.assert_healthy()


def test_a_key_that_is_not_the_user_id_is_dead_lettered(pipeline):
    pipeline.event("pill-key", key=b"someone-else")
    (letter,) = pipeline.dead_letters("key_mismatch", b"someone-else")
    assert not letter["truncated"] and letter["key_size"] == len(b"someone-else")
    assert pipeline.stored_version("pill-key") is None
    pipeline.assert_healthy()


def test_an_oversized_key_is_dead_lettered_cut_to_fit(pipeline):
    long_key = b"k" * 5000
    pipeline.event("pill-longkey", key=long_key)
    (letter,) = pipeline.dead_letters("key_mismatch", long_key[:1024])  # the key, cut to fit
    assert letter["truncated"] and letter["key_size"] == len(long_key)
    pipeline.assert_healthy()


def test_an_event_near_the_request_limit_is_dead_lettered_cut_to_fit(pipeline):
    size = 900_000  # the events topic takes it; a dead letter carrying it whole would not fit a request
    pipeline.event("pill-huge", category="c" * size)
    (letter,) = pipeline.dead_letters("oversized_category", b"pill-huge")
    assert letter["truncated"] and letter["raw_size"] > size > len(letter["raw"])
    pipeline.assert_healthy()


def test_a_request_with_a_version_redis_cannot_compare_is_dead_lettered(pipeline):
    _, first = pipeline.event("pill-version")
    pipeline.wait_version("pill-version", first)
    request = {"user_id": "pill-version", "version": 2**62, "reason": "crafted", "newest_event_time": 1,
               "enqueued_at": 1, "profile": {}, "events": [], "own": []}  # fmt: skip
    topic = pipeline.settings.topics.name("requests")
    pipeline.produce(topic, b"pill-version", serde.encode(serde.REQUEST, request))
    (letter,) = pipeline.dead_letters("version_out_of_range", b"pill-version")
    assert letter["stage"] == "validate"
    _, after = pipeline.event("pill-version")  # real writes are not blocked
    assert pipeline.wait_version("pill-version", after) == after
    pipeline.assert_healthy()


def test_an_advertiser_the_model_does_not_know_is_scored_like_any_other(pipeline):
    _, offset = pipeline.event("pill-unknown-adv", advertiser_id="adv-not-in-the-model")
    assert pipeline.wait_version("pill-unknown-adv", offset) == offset
    pipeline.assert_healthy()


def test_redis_out_of_memory_holds_writes_until_memory_is_freed_and_loses_none(pipeline):
    with AffinityClient(pipeline.settings.redis) as client:
        before = client.redis.config_get("maxmemory*")
        retries = counter(pipeline.infer_metrics, "adcast_retries_total", 'operation="store_write"')
        client.redis.config_set("maxmemory-policy", "noeviction")
        client.redis.config_set("maxmemory", "1")
        try:
            _, offset = pipeline.event("pill-oom")
            deadline = time.monotonic() + 60
            while counter(pipeline.infer_metrics, "adcast_retries_total", 'operation="store_write"') <= retries:
                assert time.monotonic() < deadline, pipeline.infer.tail()
                time.sleep(0.2)
            assert pipeline.infer.proc.poll() is None, pipeline.infer.tail()
        finally:
            client.redis.config_set("maxmemory", before["maxmemory"])
            client.redis.config_set("maxmemory-policy", before["maxmemory-policy"])
    assert pipeline.wait_version("pill-oom", offset) == offset  # written once memory was there
    pipeline.assert_healthy()
