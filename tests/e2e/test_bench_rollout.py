"""`adcast bench rollout` on the real broker, Redis, three workers and a real tiny model: a short
live load with a rollout beside it, then a report whose figures agree with each other."""

from __future__ import annotations

import json

import pytest

from adcast.bench.rollout import bench_rollout, exit_code, format_report
from adcast.cli import build_parser

pytestmark = [pytest.mark.e2e, pytest.mark.bench]
pytest.importorskip("torch")


def test_bench_rollout_fills_the_new_slot_and_reports_live_freshness(
    settings, broker, redis_url, tiny_model, small_world
):
    from confluent_kafka.admin import AdminClient

    argv = ["bench", "rollout", "--data", str(small_world), "--model", str(tiny_model), "--rate", "100"]
    argv += ["--seconds", "6", "--rollout-after", "2", "--rollout-rate", "200", "--state-events", "2000"]
    argv += ["--no-progress", "--json"]
    r = bench_rollout(build_parser(argv).parse_args(argv), settings)
    json.dumps(r)  # what --json prints
    ro, fresh = r["rollout"], r["freshness_s"]
    assert exit_code(r) == 0 and r["users"] == r["users_caught_up"] > 0
    assert ro["known"] == ro["current"] == r["users"] and ro["coverage"] == 1.0
    assert 0 < ro["requests"] <= ro["known"]  # one request per user known when it ran, at most
    assert fresh["before_rollout"]["count"] + fresh["during_rollout"]["count"] > 0
    for window in fresh.values():
        if window["count"]:
            assert 0 <= window["p50"] <= window["p99"] <= window["max"]
    assert f"{ro['requests']:,} requests at 200/s" in format_report(r)
    assert all(code in (0, -15) for code in r["worker_exit_codes"]), r["worker_exit_codes"]
    topics = AdminClient({"bootstrap.servers": broker}).list_topics(timeout=10).topics
    assert not [t for t in topics if r["run"] in t]
