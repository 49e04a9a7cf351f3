"""`adcast bench ingest` on the real broker with real stream-tier workers (the stream environment's
`adcast`, as a subprocess): a small topic, every contender reads all of it, the figures agree."""

from __future__ import annotations

import json

import pytest

from adcast.bench.ingest import bench_ingest, format_report
from adcast.cli import build_parser

pytestmark = pytest.mark.e2e


def test_bench_ingest_reads_every_event_with_each_contender(settings, broker, redis_url):
    from confluent_kafka.admin import AdminClient

    # Enough events that every contender reads for seconds: a timing window of one or two polls
    # (0.25 s apart) can hold too little work for the CPU clock's 10 ms ticks to see any.
    argv = ["bench", "ingest", "--events", "20000", "--users", "1000", "--workers", "1", "--quiet", "--json"]
    r = bench_ingest(build_parser().parse_args(argv), settings)
    json.dumps(r)  # what --json prints
    assert format_report(r)

    assert r["raw_aiokafka"]["events"] == 20000
    noop, tier = r["faust_noop"], r["adcast_stream"]["1"]
    for row in (noop, tier):
        assert sum(row["per_worker_events"]) == 20000
        assert 0 < row["events_measured"] <= 20000
        assert row["events_per_s"] > 0 and row["events_per_cpu_s"] > 0 and row["cpu_seconds"] > 0
        assert 1 <= row["mean_batch_events"] <= r["batch_max_events"]
    # The no-op agent writes no state; the tier writes a history at most once per event, and
    # users act in sessions of several events, most of which share a batch.
    assert noop["histories_written_per_event"] == 0
    assert 0 < tier["histories_written_per_event"] < 1
    assert r["ratio_to_faust_noop"] == pytest.approx(tier["events_per_s"] / noop["events_per_s"], abs=1e-3)
    assert r["cpu_ratio_to_faust_noop"] == pytest.approx(tier["events_per_cpu_s"] / noop["events_per_cpu_s"], abs=1e-3)

    topics = AdminClient({"bootstrap.servers": broker}).list_topics(timeout=10).topics
    assert not [t for t in topics if "bench-ingest" in t]
