"""adcast_consumer_lag of the inference worker, on the real broker, Redis and the torch engine."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from prometheus_client import REGISTRY

from adcast.config import override
from adcast.core.history import HistoryEvent
from adcast.core.requests import PredictionRequest
from adcast.kafka import create_topics
from adcast.wire import serde

pytestmark = pytest.mark.integration
pytest.importorskip("torch")

T0 = 1_767_225_600_000


class GatedEngine:
    """The real engine, whose first call waits for the test to open the gate: the backlog then
    stays in the topic long enough to be seen."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.model_version = inner.model_version
        self.advertiser_ids = inner.advertiser_ids
        self.gate = threading.Event()

    def encode(self, prompts):
        return self.inner.encode(prompts)

    def score_tokens(self, token_ids, k, biases=None):
        return self.inner.score_tokens(token_ids, k, biases)

    def score(self, prompts, k):
        self.gate.wait(timeout=30)
        return self.inner.score(prompts, k)

    def close(self):
        self.inner.close()


def lag(settings) -> dict[int, float | None]:
    topic = settings.topics.name("requests")
    return {
        p: REGISTRY.get_sample_value("adcast_consumer_lag", {"tier": "infer", "topic": topic, "partition": str(p)})
        for p in range(settings.topics.partitions)
    }


def test_consumer_lag_is_exported_per_partition_and_drains_to_zero(settings, broker, redis_url, tiny_model):
    from aiokafka import AIOKafkaProducer

    from adcast.engines import create_engine
    from adcast.inference.worker import InferenceWorker
    from adcast.store import AffinityClient

    create_topics(settings)
    settings = override(settings, infer={"max_batch": 2})  # consume the backlog a little at a time
    engine = GatedEngine(create_engine("torch", str(tiny_model)))
    users = [f"u{i}" for i in range(30)]

    async def scenario():
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        await producer.start()
        try:
            for u in users:
                r = PredictionRequest(u, 1, "quiet", T0, T0, {}, (HistoryEvent(T0, "click", "a0001"),))
                await producer.send_and_wait(
                    settings.topics.name("requests"), serde.encode(serde.REQUEST, r.to_record()), key=u.encode()
                )
        finally:
            await producer.stop()
        worker = InferenceWorker(settings, engine)
        task = asyncio.create_task(worker.run())
        client = AffinityClient(settings.redis)
        try:
            deadline = time.monotonic() + 30
            while sum(v or 0 for v in lag(settings).values()) == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            backlog = lag(settings)
            engine.gate.set()
            while time.monotonic() < deadline:
                drained = lag(settings)
                if all(a is not None for a in client.get_many(users).values()) and set(drained.values()) == {0}:
                    break
                await asyncio.sleep(0.1)
        finally:
            engine.gate.set()
            worker.stop.set()
            await task
            client.close()
        return backlog, drained, lag(settings)

    backlog, drained, after_stop = asyncio.run(scenario())
    engine.close()
    assert sum(v or 0 for v in backlog.values()) > 0, backlog
    assert drained == dict.fromkeys(range(settings.topics.partitions), 0.0)
    assert set(after_stop.values()) == {None}  # a stopped worker reports no partitions
