"""Both tiers as subprocesses, each from its own environment, on the real broker, Redis and a
real tiny model: events in, affinities in Redis."""

from __future__ import annotations

from collections import defaultdict

import pytest

from adcast.config import override, to_env
from adcast.core.examples import iter_examples
from adcast.core.history import HistoryLimits
from adcast.core.prompt import render
from adcast.core.requests import PredictionRequest
from adcast.data.files import read_records, write_records
from adcast.kafka import create_topics
from adcast.local.demo import wait_for_versions
from adcast.local.workers import start_worker
from adcast.model_meta import ModelMeta
from adcast.replay import expected_versions, replay
from adcast.store import AffinityClient
from adcast.wire import serde

pytestmark = pytest.mark.e2e
pytest.importorskip("torch")


def test_every_user_with_a_salient_event_gets_the_newest_prediction(
    settings, broker, redis_url, tiny_model, small_world, tmp_path, topic_reader
):
    users = sorted({p["user_id"] for p in read_records(small_world, "profiles")})[:50]
    data = tmp_path / "data"
    write_records(data, "events", (e for e in read_records(small_world, "events") if e["user_id"] in users))
    write_records(data, "profiles", (p for p in read_records(small_world, "profiles") if p["user_id"] in users))
    write_records(data, "advertisers", read_records(small_world, "advertisers"))

    settings = override(settings, infer={"model_dir": str(tiny_model)})
    create_topics(settings)
    env = to_env(settings)
    workers = [start_worker("stream", env, tmp_path / "stream.log"), start_worker("infer", env, tmp_path / "infer.log")]
    try:
        for w in workers:
            w.wait_ready()
        # Original event times (not --live): the prompts must match the offline ones byte for byte.
        summary = replay(settings, data, collect=True, progress=False)
        expected = expected_versions(summary.delivered)
        assert len(expected) == 50
        client = AffinityClient(settings.redis)
        try:
            done = wait_for_versions(client, expected, timeout_s=120)
            final = client.get_many(sorted(expected))
        finally:
            client.close()
        for w in workers:
            assert w.proc.poll() is None, w.tail()
    finally:
        codes = [w.stop() for w in workers]
    logs = "\n".join(w.tail() for w in workers)
    assert len(done) == len(expected), f"{len(expected) - len(done)} users never caught up\n{logs}"

    known = set(ModelMeta.load(tiny_model).advertiser_ids)
    for user, version in expected.items():
        a = final[user]
        assert a is not None and a.version == version, user
        ids = [x for x, _ in a.top]
        probs = [p for _, p in a.top]
        assert set(ids) <= known and len(set(ids)) == len(ids) == settings.infer.top_k
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert a.computed_at >= a.newest_event_time
    assert all(code in (0, -15) for code in codes), logs

    # Train/serve consistency: the prompt the running pipeline scored for each user's final
    # version equals the prompt training renders for that user after the same events.
    messages = topic_reader(settings.kafka.bootstrap_servers, settings.topics.name("requests"), lambda out: False, 5)
    served = {}
    for m in messages:
        r = PredictionRequest.from_record(serde.decode(serde.REQUEST, m.value()))
        if r.version == expected[r.user_id]:
            served[r.user_id] = render(r)
    assert set(served) == set(expected)
    profiles = {p["user_id"]: p["attributes"] for p in read_records(data, "profiles")}
    by_user = defaultdict(list)
    for e in read_records(data, "events"):
        by_user[e["user_id"]].append(e)
    for user, prompt in served.items():
        # a target after the user's last event sees the whole history
        last = max(e["event_time"] for e in by_user[user])
        probe = {
            "event_id": "probe",
            "user_id": user,
            "event_time": last + 1,
            "event_type": "click",
            "advertiser_id": "probe-adv",
            "item_id": None,
            "category": None,
            "brand": None,
            "text": None,
        }
        (example,) = iter_examples(by_user[user] + [probe], profiles, {"probe-adv"}, HistoryLimits())
        assert render(example) == prompt, user
