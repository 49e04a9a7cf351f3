"""Engine failures in the inference loop, on the real broker, real Redis and the real torch engine.

The engine is the real TorchEngine on the tiny model behind a wrapper that fails on purpose, in
ways a real engine does: an exception on the first calls, a call that hangs past the deadline,
a prompt it always chokes on, or every call (a dead device)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from prometheus_client import REGISTRY

from adcast.config import override
from adcast.core.history import HistoryEvent
from adcast.core.requests import PredictionRequest
from adcast.core.slots import DEFAULT_SLOT
from adcast.kafka import create_topics
from adcast.wire import serde

pytestmark = pytest.mark.integration
pytest.importorskip("torch")

T0 = 1_767_225_600_000
POISON = "segment=poison"  # in the prompt of a request whose profile has segment=poison


class FailingEngine:
    """The real engine, failing deterministically: raises on the first `fail_first` calls, sleeps
    `sleep_s` in the first `sleep_first` calls, raises on any batch holding a poison prompt, or
    raises on every call (`dead`)."""

    def __init__(
        self, inner, *, fail_first: int = 0, sleep_first: int = 0, sleep_s: float = 0.0, dead: bool = False
    ) -> None:
        self.inner = inner
        self.model_version = inner.model_version
        self.advertiser_ids = inner.advertiser_ids
        self.fail_first, self.sleep_first, self.sleep_s, self.dead = fail_first, sleep_first, sleep_s, dead
        self.calls = 0
        self._lock = threading.Lock()

    def encode(self, prompts):
        return self.inner.encode(prompts)

    def score_tokens(self, token_ids, k, biases=None):
        return self.inner.score_tokens(token_ids, k, biases)

    def score(self, prompts, k):
        with self._lock:
            self.calls += 1
            n = self.calls
        if n <= self.sleep_first:
            time.sleep(self.sleep_s)
        if self.dead:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")
        if n <= self.fail_first:
            raise RuntimeError(f"injected failure on call {n}")
        if any(POISON in p for p in prompts):
            raise ValueError("injected: this prompt always breaks the engine")
        return self.inner.score(prompts, k)

    def close(self):
        pass  # the inner engine is shared by the module's tests


@pytest.fixture(scope="module")
def engine(tiny_model):
    from adcast.engines import create_engine

    e = create_engine("torch", str(tiny_model))
    e.score(["profile ; next"], 5)  # warm up, so first-call costs do not count against deadlines
    yield e
    e.close()


def request(user: str, version: int, poison: bool = False) -> bytes:
    events = tuple(HistoryEvent(T0 + i, "click", f"a{i % 7:04d}") for i in range(1 + version % 5))
    profile = {"age": "25-34", **({"segment": "poison"} if poison else {})}
    r = PredictionRequest(user, version, "quiet", T0 + version, T0, profile, events)
    return serde.encode(serde.REQUEST, r.to_record())


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def produce(settings, messages: list[tuple[str, bytes]]) -> list[tuple[int, int]]:
    """Send (key, value) pairs to the requests topic; returns each one's (partition, offset)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        out = []
        for key, value in messages:
            meta = await producer.send_and_wait(settings.topics.name("requests"), value, key=key.encode())
            out.append((meta.partition, meta.offset))
        return out
    finally:
        await producer.stop()


async def read_topic(settings, topic: str, expect: int, timeout_s: float = 20) -> list:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka.bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    out: list = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(out) < expect and asyncio.get_running_loop().time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(messages)
    finally:
        await consumer.stop()
    return out


async def offsets(settings) -> tuple[dict[int, int], dict[int, int]]:
    """(end offsets, committed offsets of the inference group), by partition of the requests topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=settings.infer.group_id)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topics.name("requests"), p) for p in range(settings.topics.partitions)]
        end = await consumer.end_offsets(tps)
        return {tp.partition: end[tp] for tp in tps}, {tp.partition: await consumer.committed(tp) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def wait_for_users(settings, users: list[str], timeout_s: float = 30) -> dict:
    from adcast.store import AffinityClient

    client = AffinityClient(settings.redis)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            found = client.get_many(users)
            if all(a is not None for a in found.values()) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.1)
    finally:
        client.close()


async def wait_committed(settings, timeout_s: float = 10) -> tuple[dict[int, int], dict[int, int]]:
    deadline = time.monotonic() + timeout_s
    while True:
        end, committed = await offsets(settings)
        if committed == end or time.monotonic() > deadline:
            return end, committed
        await asyncio.sleep(0.1)


def test_transient_errors_and_a_timeout_are_retried_then_written(settings, broker, redis_url, engine):
    from adcast.inference.worker import InferenceWorker

    create_topics(settings)
    settings = override(settings, infer={"engine_attempts": 4, "engine_retry_base_s": 0.05, "engine_timeout_s": 2.0})
    # Call 1 hangs past the deadline, calls 1 and 2 raise: three failures, then success.
    flaky = FailingEngine(engine, fail_first=3, sleep_first=1, sleep_s=2.5)
    users = [f"u{i}" for i in range(6)]
    retries_before = sample("adcast_retries_total", {"operation": "engine_score"})
    timeouts_before = sample("adcast_engine_failures_total", {"slot": DEFAULT_SLOT, "reason": "engine_timeout"})

    async def scenario():
        await produce(settings, [(u, request(u, 3)) for u in users])
        worker = InferenceWorker(settings, flaky)
        task = asyncio.create_task(worker.run())
        try:
            found = await wait_for_users(settings, users)
            end, committed = await wait_committed(settings)
        finally:
            worker.stop.set()
            stats = await task
        return found, stats, end, committed

    found, stats, end, committed = asyncio.run(scenario())
    assert all(a is not None and a.version == 3 for a in found.values()), found
    assert stats.dead_letters == 0 and stats.engine_retries == 3
    assert sample("adcast_retries_total", {"operation": "engine_score"}) - retries_before == 3
    assert (
        sample("adcast_engine_failures_total", {"slot": DEFAULT_SLOT, "reason": "engine_timeout"}) - timeouts_before
        == 1
    )
    assert committed == end


def test_a_request_that_keeps_failing_is_dead_lettered_and_its_batch_mates_written(settings, broker, redis_url, engine):
    from adcast.inference.worker import InferenceWorker

    create_topics(settings)
    # One micro-batch: the poison request has batch-mates.
    settings = override(settings, infer={"engine_attempts": 2, "engine_retry_base_s": 0.05, "max_wait_ms": 300})
    users = [f"u{i}" for i in range(8)]
    poison_raw = request("u-poison", 4, poison=True)
    letters_before = sample("adcast_dead_letters_total", {"stage": "infer", "reason": "engine_error"})

    async def scenario():
        messages = [(u, request(u, 2)) for u in users[:4]] + [("u-poison", poison_raw)]
        messages += [(u, request(u, 2)) for u in users[4:]]
        delivered = await produce(settings, messages)
        worker = InferenceWorker(settings, FailingEngine(engine))
        task = asyncio.create_task(worker.run())
        try:
            found = await wait_for_users(settings, users)
            end, committed = await wait_committed(settings)
            dead = await read_topic(settings, settings.topics.name("dead_letters"), 1)
            # Still alive and still scoring.
            await produce(settings, [("u-late", request("u-late", 1))])
            late = await wait_for_users(settings, ["u-late"])
            alive = not task.done()
        finally:
            worker.stop.set()
            stats = await task
        return delivered[4], found, end, committed, dead, late, alive, stats

    poison_at, found, end, committed, dead, late, alive, stats = asyncio.run(scenario())
    assert all(found[u] is not None for u in users), found
    assert late["u-late"] is not None and alive
    assert committed == end
    (letter,) = [serde.decode(serde.DEAD_LETTER, m.value) for m in dead]
    assert letter["stage"] == "infer" and letter["reason"].startswith("engine_error: ValueError: injected")
    assert letter["raw"] == poison_raw and letter["key"] == b"u-poison"
    assert letter["source_topic"] == settings.topics.name("requests")
    assert (letter["partition"], letter["offset"]) == poison_at
    assert stats.dead_letters == 1
    assert sample("adcast_dead_letters_total", {"stage": "infer", "reason": "engine_error"}) - letters_before == 1


def test_a_dead_engine_stops_the_worker_with_a_clear_error_and_a_nonzero_exit(
    settings, broker, redis_url, engine, monkeypatch, capsys
):
    """Through the CLI, as an operator runs it: only the engine is swapped for the failing one."""
    import adcast.engines
    from adcast import cli
    from adcast.config import to_env

    create_topics(settings)
    infer = {"max_batch": 2, "engine_attempts": 2, "engine_retry_base_s": 0.01, "engine_max_failed_batches": 2}
    settings = override(settings, infer=infer)  # several micro-batches
    users = [f"u{i}" for i in range(8)]
    delivered = asyncio.run(produce(settings, [(u, request(u, 1)) for u in users]))
    for name, value in to_env(settings).items():
        monkeypatch.setenv(name, value)
    failing = FailingEngine(engine, dead=True)
    monkeypatch.setattr(adcast.engines, "create_engine", lambda *a, **kw: failing)

    rc = cli.main(["infer"])
    err = capsys.readouterr().err

    assert rc != 0
    assert "failed every request of 2 micro-batches in a row" in err and "RuntimeError: CUDA error" in err
    # It stopped instead of spinning: two micro-batches of at most two requests, each given 2
    # attempts, then each half of it one.
    assert 2 * 2 <= failing.calls <= 2 * (2 + 2)
    # Whatever was committed was dead-lettered first; the batch that stopped the worker was not
    # committed, so a restart scores it again.
    end, committed = asyncio.run(offsets(settings))
    assert sum(committed.values()) < sum(end.values())
    dead = asyncio.run(read_topic(settings, settings.topics.name("dead_letters"), len(users), timeout_s=3))
    letters = [serde.decode(serde.DEAD_LETTER, m.value) for m in dead]
    done = {(p, o) for p, o in delivered if o < committed[p]}
    assert done and done == {(d["partition"], d["offset"]) for d in letters}
    assert all(d["stage"] == "infer" and d["reason"].startswith("engine_error") for d in letters)
