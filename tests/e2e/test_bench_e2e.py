"""`adcast bench e2e` on the real broker, Redis, both tiers and a real tiny model: a few seconds of
live replay, then a report whose figures agree with each other."""

from __future__ import annotations

import json
import os

import pytest

from adcast.bench.e2e import bench_e2e, format_report
from adcast.cli import build_parser

pytestmark = [pytest.mark.e2e, pytest.mark.bench]
pytest.importorskip("torch")


def test_bench_e2e_reports_consistent_figures_and_cleans_up(settings, broker, redis_url, tiny_model, small_world):
    from confluent_kafka.admin import AdminClient

    argv = ["bench", "e2e", "--data", str(small_world), "--model", str(tiny_model), "--rate", "100", "--seconds", "4"]
    argv += ["--quiet-ms", "150", "--max-delay-ms", "500", "--min-interval-ms", "250", "--no-progress", "--json"]
    r = bench_e2e(build_parser(argv).parse_args(argv), settings)
    json.dumps(r)  # what --json prints
    report = format_report(r)
    f = r["freshness_s"]
    assert f"p99 {f['p99']:.2f}s" in report and f"{r['events']:,} in" in report
    assert f"{r['predictions_per_event']:.3f} predictions ({r['predictions']:,}" in report
    assert f"{r['calls_per_event']:.3f} requests emitted" in report

    assert r["trigger"]["quiet_ms"] == 150 and r["trigger"]["max_delay_ms"] == 500
    assert r["trigger"]["min_interval_ms"] == 250
    assert r["trigger"]["policy"] == "value" and r["trigger"]["settle_ms"] == 3000  # the bench's short settle
    assert r["events"] == 400 and 0 < r["users"] == r["users_caught_up"]
    # every emitted request was either scored or replaced by a newer one in its micro-batch
    assert r["inference_dead_letters"] == 0 and r["stream_dead_letters"] == 0
    assert 0 < r["predictions"] <= r["requests_emitted"] <= r["events"]
    assert r["predictions"] + r["requests_superseded"] == r["requests_emitted"]
    assert r["redis_writes"] <= r["predictions"]
    assert r["predictions_per_event"] == pytest.approx(r["predictions"] / r["events"], abs=1e-4)
    assert sum(r["requests_by_reason"].values()) == r["requests_emitted"]
    assert r["calls_per_event"] == pytest.approx(r["requests_emitted"] / r["events"], abs=1e-4)
    settled = r["requests_by_reason"].get("settle", 0)
    assert r["calls_per_event_without_settle"] == pytest.approx(
        (r["requests_emitted"] - settled) / r["events"], abs=1e-4
    )

    f = r["freshness_s"]
    assert 0 < f["count"] <= r["redis_writes"]  # settle calls, late on purpose, are not timed
    by_reason = r["freshness_by_reason_s"]
    assert sum(x["count"] for x in by_reason.values()) == f["count"] and "settle" not in by_reason
    assert r["freshness_user_changes_s"]["count"] == f["count"] - by_reason.get("shown", {"count": 0})["count"]
    assert 0 <= f["p50"] <= f["p95"] <= f["p99"] <= f["max"]
    d = r["top10_drift"]  # one per taken prediction after each user's first
    assert 0 < d["count"] < r["redis_writes"] and 0 <= d["p50"] <= 1 and 0 <= d["mean"] <= 1
    assert f"over {d['count']:,} predictions after a user's first" in report

    b = r["batch_size"]
    assert 1 <= b["batches"] <= r["predictions"]
    assert 1 <= b["mean"] <= b["max_at_most"] and b["p50_at_most"] <= b["max_at_most"]

    assert r["lag_after_drain"]["inference_committed"] == 0
    cores = os.cpu_count() or 1
    assert 0 < r["cores_busy"]["stream"] <= cores and 0 < r["cores_busy"]["infer"] <= cores
    assert r["lag_at_replay_end"]["stream_unprocessed"] >= 0
    assert all(code in (0, -15) for code in r["worker_exit_codes"].values()), r["worker_exit_codes"]

    # the run's topics are gone from the broker it did not start (Faust's internal ones too)
    topics = AdminClient({"bootstrap.servers": broker}).list_topics(timeout=10).topics
    assert not [t for t in topics if r["run"] in t]
