"""`adcast bench ingest` on the real broker with real stream-tier workers (the stream environment's
`adcast`, as a subprocess): a small topic, every contender reads all of it, the figures agree."""

from __future__ import annotations

import json

import pytest

from adcast.bench.ingest import bench_ingest, format_report
from adcast.cli import build_parser

pytestmark = [pytest.mark.e2e, pytest.mark.bench]


def test_bench_ingest_reads_every_event_with_each_contender(settings, broker, redis_url):
    from confluent_kafka.admin import AdminClient

    # Enough events that every contender reads for seconds: a timing window of one or two polls
    # (0.25 s apart) can hold too little work for the CPU clock's 10 ms ticks to see any.
    argv = ["bench", "ingest", "--events", "20000", "--users", "1000", "--workers", "1", "--rounds", "2"]
    r = bench_ingest(build_parser(argv).parse_args([*argv, "--quiet", "--json"]), settings)
    json.dumps(r)  # what --json prints
    report = format_report(r)
    assert report.startswith("20,000 events of 1,000 users")
    assert f"/ faust no-op {r['ratio_to_faust_noop']:.2f}" in report and "<- median" in report

    assert r["raw_aiokafka"]["events"] == 20000
    assert len(r["rounds"]) == 2
    for x in r["rounds"]:
        noop, tier = x["faust_noop"], x["adcast_stream"]
        for row in (noop, tier):
            assert sum(row["per_worker_events"]) == 20000
            assert 0 < row["events_measured"] <= 20000
            assert row["events_per_s"] > 0 and row["events_per_cpu_s"] > 0 and row["cpu_seconds"] > 0
            assert 1 <= row["mean_batch_events"] <= r["batch_max_events"]
        # The no-op agent writes no state; the tier writes a history at most once per event, and
        # users act in sessions of several events, most of which share a batch.
        assert noop["histories_written_per_event"] == 0
        assert 0 < tier["histories_written_per_event"] < 1
        assert x["ratio"] == pytest.approx(tier["events_per_s"] / noop["events_per_s"], abs=1e-3)
        assert x["cpu_ratio"] == pytest.approx(tier["events_per_cpu_s"] / noop["events_per_cpu_s"], abs=1e-3)
    # The headline is the median round (of two, the lower), its rows shown beside it.
    ratios = [x["ratio"] for x in r["rounds"]]
    median = r["rounds"][r["median_round"]]
    assert r["ratio_to_faust_noop"] == median["ratio"] == min(ratios)
    assert r["ratio_range"] == [min(ratios), max(ratios)]
    assert r["faust_noop"] is median["faust_noop"] and r["adcast_stream"]["1"] is median["adcast_stream"]
    assert r["cpu_ratio_to_faust_noop"] == median["cpu_ratio"]

    topics = AdminClient({"bootstrap.servers": broker}).list_topics(timeout=10).topics
    assert not [t for t in topics if "bench-ingest" in t]
