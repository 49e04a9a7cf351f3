"""The inference loop on the real broker, real Redis and a real tiny model."""

import asyncio

import pytest

from adcast.config import override
from adcast.core.history import HistoryEvent
from adcast.core.requests import PredictionRequest
from adcast.kafka import create_topics
from adcast.wire import serde

pytestmark = pytest.mark.integration
pytest.importorskip("torch")

T0 = 1_767_225_600_000


def request(user: str, version: int) -> PredictionRequest:
    events = tuple(HistoryEvent(T0 + i, "click", f"a{i % 7:04d}") for i in range(1 + version % 5))
    return PredictionRequest(user, version, "quiet", T0 + version, T0, {"age": "25-34"}, events)


async def produce(settings, messages: list[tuple[str, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(settings.topics.name("requests"), value, key=key.encode())
    finally:
        await producer.stop()


async def read_all(settings, topic: str, expect: int, timeout_s: float = 20) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka.bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    out: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(out) < expect and asyncio.get_running_loop().time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(m.value for m in messages)
    finally:
        await consumer.stop()
    return out


def test_newest_request_per_user_lands_in_redis_then_offsets_are_committed(settings, broker, redis_url, tiny_model):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from adcast.engines import create_engine
    from adcast.inference.worker import InferenceWorker
    from adcast.store import AffinityClient

    settings = override(settings, infer={"model_dir": str(tiny_model)})
    create_topics(settings)
    engine = create_engine("torch", str(tiny_model))
    users = [f"u{i}" for i in range(12)]
    # Versions arrive out of order and repeated; one message is garbage.
    messages = [(u, serde.encode(serde.REQUEST, request(u, v).to_record())) for v in (5, 9, 7) for u in users]
    messages.append(("bad", b"\x00\x00\x00\x00\x04garbage"))

    async def scenario():
        await produce(settings, messages)
        worker = InferenceWorker(settings, engine)
        task = asyncio.create_task(worker.run())
        client = AffinityClient(settings.redis)
        try:
            for _ in range(200):
                found = client.get_many(users)
                if all(a is not None and a.version == 9 for a in found.values()):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # let the loop commit
        finally:
            worker.stop.set()
            stats = await task
            client.close()
        dead = await read_all(settings, settings.topics.name("dead_letters"), 1)
        updates = await read_all(settings, settings.topics.name("affinities"), len(users))
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap_servers, group_id=settings.infer.group_id
        )
        await consumer.start()
        tps = [TopicPartition(settings.topics.name("requests"), p) for p in range(settings.topics.partitions)]
        end = await consumer.end_offsets(tps)
        committed = {tp: await consumer.committed(tp) for tp in tps}
        await consumer.stop()
        return found, stats, dead, updates, end, committed

    found, stats, dead, updates, end, committed = asyncio.run(scenario())
    assert {u: a.version for u, a in found.items()} == dict.fromkeys(users, 9)
    meta_ids = set(engine.advertiser_ids)
    for a in found.values():
        assert a.model_version == engine.model_version
        assert {x for x, _ in a.top} <= meta_ids and len(a.top) == settings.infer.top_k
    assert stats.dead_letters == 1
    (letter,) = [serde.decode(serde.DEAD_LETTER, d) for d in dead]
    assert letter["stage"] == "decode" and letter["raw"] == b"\x00\x00\x00\x00\x04garbage"
    published = {serde.decode(serde.AFFINITY, u)["user_id"] for u in updates}
    assert published >= set(users)
    assert committed == end  # everything consumed was committed, after its effects


def test_a_request_dead_lettered_at_decode_creates_a_missing_dead_letter_topic_first(
    settings, broker, redis_url, tiny_model
):
    """Each of the tier's dead letters, a decode failure's too, goes through the one path that
    makes sure the topic exists: on a broker that creates no topic on a send, none is lost."""
    from prometheus_client import REGISTRY

    from adcast.engines import create_engine
    from adcast.inference.worker import InferenceWorker

    create_topics(settings, only=["requests", "affinities", "rollout"])
    engine = create_engine("torch", str(tiny_model))
    created = {"topic": "dead_letters"}
    before = REGISTRY.get_sample_value("adcast_topics_created_total", created) or 0

    async def scenario():
        await produce(settings, [("bad", b"\x00\x00\x00\x00\x04garbage")])
        worker = InferenceWorker(settings, engine)
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(200):
                if worker.stats.dead_letters:
                    break
                await asyncio.sleep(0.1)
        finally:
            worker.stop.set()
            stats = await task
        return stats, await read_all(settings, settings.topics.name("dead_letters"), 1)

    stats, dead = asyncio.run(scenario())
    assert stats.dead_letters == 1
    (letter,) = [serde.decode(serde.DEAD_LETTER, d) for d in dead]
    assert letter["stage"] == "decode" and letter["raw"] == b"\x00\x00\x00\x00\x04garbage"
    # The worker made the topic itself before sending, not the broker on the send.
    assert REGISTRY.get_sample_value("adcast_topics_created_total", created) == before + 1
