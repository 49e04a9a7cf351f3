"""Impressions reach the prompt, yet a version's prompt is fixed by the topic: two stream workers
reading the same topic under different timing (one live, in small batches with short triggers;
one catching up on the whole topic with long ones) end every user on byte-identical prompts, and
those are the prompts training renders from the same events."""

from __future__ import annotations

import random
import time

import pytest
from kafka_reading import read_to_end
from produce import produce

from adcast.config import override, to_env
from adcast.core.examples import iter_examples
from adcast.core.history import HistoryLimits
from adcast.core.prompt import render
from adcast.core.requests import PredictionRequest
from adcast.kafka import create_topics
from adcast.local.workers import start_worker
from adcast.wire import serde

pytestmark = pytest.mark.integration
NOW = int(time.time() * 1000) - 600_000
USERS = [f"user-{i}" for i in range(8)]


def _events() -> list[dict]:
    """Per user: bursts of impressions (more than the history keeps after a version) between
    salient events, and for some users impressions after their last salient event. Users are
    interleaved in the topic; each user's events keep their time order."""
    rng = random.Random(3)
    per_user: dict[str, list[tuple[str, str, str | None]]] = {}
    for user in USERS:
        mine = per_user[user] = []
        for _ in range(rng.randint(2, 4)):
            for _ in range(rng.randint(1, 20)):
                adv = rng.randrange(40)
                mine.append(("impression", f"a{adv}", f"c{adv % 5}"))
            mine.append((rng.choice(["click", "view", "add_to_cart"]), f"a{rng.randrange(40)}", "c1"))
        if rng.random() < 0.5:
            mine += [("impression", f"a{rng.randrange(40)}", None) for _ in range(rng.randint(1, 12))]
    records: list[dict] = []
    while per_user:
        user = rng.choice(sorted(per_user))
        kind, adv, cat = per_user[user].pop(0)
        if not per_user[user]:
            del per_user[user]
        n = len(records)
        records.append(
            {
                "event_id": f"e{n}",
                "user_id": user,
                "event_time": NOW + n * 10,
                "event_type": kind,
                "advertiser_id": adv,
                "item_id": None,
                "category": cat,
                "brand": None,
                "text": None,
            }
        )
    return records


def _final_prompts(messages, expected: dict[str, int]) -> dict[str, str]:
    prompts = {}
    for m in messages:
        r = PredictionRequest.from_record(serde.decode(serde.REQUEST, m.value()))
        if r.version == expected.get(r.user_id):
            prompts[r.user_id] = render(r)
    return prompts


def _wait_for_final_prompts(settings, expected, after: dict[int, int], timeout_s: float = 90.0):
    deadline = time.monotonic() + timeout_s
    topic = settings.topics.name("requests")
    while True:
        fresh = [
            m for m in read_to_end(settings.kafka.bootstrap_servers, topic) if m.offset() >= after.get(m.partition(), 0)
        ]
        prompts = _final_prompts(fresh, expected)
        if set(prompts) == set(expected) or time.monotonic() > deadline:
            return prompts, fresh
        time.sleep(0.5)


def test_two_runs_under_different_timing_end_on_byte_identical_prompts(settings, broker, tmp_path):
    create_topics(settings)
    records = _events()
    values = [(r["user_id"], serde.encode(serde.EVENT, r)) for r in records]

    live = start_worker("stream", to_env(settings), tmp_path / "live.log")
    try:
        live.wait_ready()
        delivered = []
        for start in range(0, len(values), 40):  # live: small pieces, triggers firing in between
            delivered += produce(settings, values[start : start + 40])
            time.sleep(0.4)
        expected: dict[str, int] = {}  # every event here changes the prompt, an impression included
        for (_, offset), r in zip(delivered, records, strict=True):
            expected[r["user_id"]] = max(expected.get(r["user_id"], -1), offset)
        first, messages = _wait_for_final_prompts(settings, expected, {})
        assert live.proc.poll() is None, live.tail()
    finally:
        live.stop()
    assert set(first) == set(USERS), live.tail()
    ends = {}
    for m in messages:
        ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)

    # A second application over the same, complete topic: fresh state, long triggers.
    catch_up = override(
        settings,
        stream={
            "app_id": settings.stream.app_id + "-again",
            "data_dir": str(tmp_path / "again"),
            "quiet_ms": 2_000,
            "max_delay_ms": 4_000,
        },
    )
    again = start_worker("stream", to_env(catch_up), tmp_path / "again.log")
    try:
        again.wait_ready()
        second, _ = _wait_for_final_prompts(catch_up, expected, ends)
    finally:
        again.stop()
    assert second == first, again.tail()

    # The prompts show the newest impressions and equal training's (a skipped last change is
    # scored once the user settles).
    limits = HistoryLimits()
    for user, prompt in first.items():
        assert " ; shown <adv_" in prompt or " ; shown now <adv_" in prompt, prompt
        mine = [r for r in records if r["user_id"] == user]
        probe = dict(mine[-1], event_id="probe", event_time=mine[-1]["event_time"] + 1, event_type="click")
        probe["advertiser_id"] = "probe-adv"
        (example,) = iter_examples(mine + [probe], {}, {"probe-adv"}, limits)
        assert render(example) == prompt, user
        assert 0 < len(example.shown) <= limits.shown
