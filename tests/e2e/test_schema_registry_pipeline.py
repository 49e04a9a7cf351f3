"""Schema evolution end to end: both tiers read and write through a Schema Registry (confluent-kafka's
mock://, seeded alike in every process; tests/registry_seeded.py says why). Events a producer
wrote under a registry-assigned id with an evolved schema are folded and reach Redis; the same
events under an incompatible schema reach the dead-letter topic with their reason."""

from __future__ import annotations

import io
import json
import os
import struct
import time
from pathlib import Path

import fastavro
import pytest
from produce import produce
from registry_seeded import seed

from adcast.config import override, to_env
from adcast.core.events import ENGAGEMENTS
from adcast.data.files import read_records
from adcast.kafka import create_topics
from adcast.local.demo import wait_for_versions
from adcast.local.workers import start_worker, tier_binary
from adcast.store import AffinityClient
from adcast.wire import schema_registry, serde

pytestmark = pytest.mark.e2e
pytest.importorskip("torch")
NOW = int(time.time() * 1000) - 60_000
USERS = [f"sr-user-{i}" for i in range(12)]


def _wrapper(tmp_path: Path, tier: str) -> str:
    """An executable that runs `adcast TIER` from the tier's environment after seeding its registry."""
    python = Path(tier_binary(tier)).with_name("python")
    script = tmp_path / f"seeded-{tier}"
    seeded = Path(__file__).resolve().parents[1] / "registry_seeded.py"
    script.write_text(f'#!/bin/sh\nexec "{python}" "{seeded}" "{tmp_path / "seed.json"}" "$@"\n')
    script.chmod(0o755)
    return str(script)


def _framed(schema_id: int, schema: dict, record: dict) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return struct.pack(">bI", 0, schema_id) + body.getvalue()


def test_evolved_events_reach_redis_and_incompatible_ones_the_dead_letters(
    settings, broker, redis_url, tiny_model, small_world, tmp_path, monkeypatch, topic_reader
):
    settings = override(
        settings, schema_registry={"url": f"mock://pipeline-{os.getpid()}"}, infer={"model_dir": str(tiny_model)}
    )
    base = json.loads(serde.schema_text(serde.EVENT))
    evolved = {**base, "fields": [*base["fields"], {"name": "campaign", "type": ["null", "string"], "default": None}]}
    incompatible = {**base, "fields": [f for f in base["fields"] if f["name"] != "event_type"]}
    events_subject = settings.topics.name("events") + "-value"
    own = sorted(schema_registry.subjects(settings).items(), key=lambda item: item[1])
    registrations = [[subject, serde.schema_text(name)] for name, subject in own]
    registrations += [[events_subject, json.dumps(evolved)], [events_subject, json.dumps(incompatible)]]
    (tmp_path / "seed.json").write_text(json.dumps(registrations))
    *own_ids, evolved_id, incompatible_id = seed(settings, registrations)
    assert 1 not in (evolved_id, incompatible_id)  # not the file registry's event id
    schema_registry.activate(settings)  # this process reads the topics through the same ids

    advertisers = [a["advertiser_id"] for a in read_records(small_world, "advertisers")]
    salient = sorted(ENGAGEMENTS)
    values: list[tuple[str, bytes]] = []
    for n in range(60):
        user = USERS[n % len(USERS)]
        record = {
            "event_id": f"sr-{n}",
            "user_id": user,
            "event_time": NOW + n,
            "event_type": salient[n % len(salient)],
            "advertiser_id": advertisers[n % len(advertisers)],
            "item_id": None,
            "category": "c1",
            "brand": None,
            "text": None,
        }
        values.append((user, _framed(evolved_id, evolved, {**record, "campaign": f"spring-{n % 3}"})))
    rest = {"user_id": "sr-bad", "event_time": NOW, "advertiser_id": "a1", "item_id": None, "category": None}
    rest |= {"brand": None, "text": None}
    bad = [("sr-bad", _framed(incompatible_id, incompatible, {**rest, "event_id": f"bad-{i}"})) for i in range(3)]

    monkeypatch.setenv("ADCAST_STREAM_BIN", _wrapper(tmp_path, "stream"))
    monkeypatch.setenv("ADCAST_INFER_BIN", _wrapper(tmp_path, "infer"))
    create_topics(settings)
    env = to_env(settings)
    workers = [start_worker("stream", env, tmp_path / "stream.log"), start_worker("infer", env, tmp_path / "infer.log")]
    try:
        for w in workers:
            w.wait_ready()
        delivered = produce(settings, values + bad)
        expected: dict[str, int] = {}
        for (key, _), (_, offset) in zip(values, delivered, strict=False):
            expected[key] = max(expected.get(key, -1), offset)
        client = AffinityClient(settings.redis)
        try:
            done = wait_for_versions(client, expected, timeout_s=120)
        finally:
            client.close()
        letters = topic_reader(
            settings.kafka.bootstrap_servers, settings.topics.name("dead_letters"), lambda out: len(out) >= 3, 60
        )
        requests = topic_reader(
            settings.kafka.bootstrap_servers, settings.topics.name("requests"), lambda out: len(out) > 0, 30
        )
        for w in workers:
            assert w.proc.poll() is None, w.tail()
    finally:
        for w in workers:
            w.stop()
    logs = "\n".join(w.tail() for w in workers)
    assert set(done) == set(expected), logs
    assert all(done[user].version == version for user, version in expected.items())
    reasons = [serde.decode(serde.DEAD_LETTER, m.value())["reason"] for m in letters]
    assert len(reasons) == 3 and all(r.startswith("incompatible_schema") for r in reasons), reasons
    assert all("event_type" in r for r in reasons)
    # adcast wrote its requests under the id the registry gave its subject, not the file's.
    request_id = dict(zip((name for name, _ in own), own_ids, strict=True))[serde.REQUEST]
    assert {m.value()[:5] for m in requests} == {struct.pack(">bI", 0, request_id)}
