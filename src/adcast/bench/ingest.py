"""`adcast bench ingest`: stream-tier throughput against the framework's and the client's ceilings.

Fills a fresh events topic with a synthetic stream (live-stamped, so every event is valid and
folds), then lets each contender read the whole topic from the start, one after another, in the
same run on the same topic:

- `raw aiokafka`: a bare consumer that only counts messages (the client's ceiling);
- `faust no-op`: `adcast stream --count-only`, a Faust agent that only counts, in the stream
  tier's own batches (the framework's ceiling);
- `adcast stream`: the real stream tier (decode, validate, dedupe, fold, changelogged RocksDB
  table, triggers, requests), with 1 worker process and then with 2 in one consumer group.

The no-op agent and the one-worker tier take turns for `--rounds` rounds and the ratio reported
is the median round's: on a shared machine the ceiling itself moves by a fifth between two
readings minutes apart, and one pair of readings can land anywhere in that spread.

Faust workers report progress on their Prometheus endpoint (`adcast_events_in_total`); the rate
is measured from the moment every worker of the run has counted its first event to the moment
they have counted all, so start-up and the group's first rebalance are left out. The workers'
CPU seconds over the same window (process trees, from /proc) give events per CPU-second too: on a
shared machine the contenders, run one after another, can see different neighbours, which moves
events/s far more than the CPU each event costs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from adcast.bench._harness import delete_run_topics, scrape, start_local_services, tree_cpu_seconds
from adcast.config import Settings, override, to_env
from adcast.core.clock import now_ms
from adcast.errors import ServiceError
from adcast.wire import serde

EVENT_TYPES = ("impression",) * 6 + ("view",) * 3 + ("click",) * 2 + ("save", "add_to_cart", "search")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=200_000, help="events in the topic (default: 200000)")
    p.add_argument("--users", type=int, default=5_000, help="distinct users (default: 5000)")
    p.add_argument(
        "--workers", default="1,2", help="stream-tier worker counts to measure, comma-separated (default: 1,2)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="times the no-op agent and the tier's first worker count take turns; the median round's ratio "
        "is reported (default: 3)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds each contender may take (default: 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def synthetic_events(n: int, users: int, seed: int, now_ms: int) -> list[tuple[bytes, bytes]]:
    """`n` encoded events of `users` users in sessions (a user acts several times in a row), the
    newest stamped `now_ms`, 1 ms apart: (key, value) pairs in production order."""
    rng = random.Random(seed)
    out: list[tuple[bytes, bytes]] = []
    while len(out) < n:
        user = f"u{rng.randrange(users):07d}"
        advertiser = f"a{rng.randrange(200):04d}"
        for _ in range(min(n - len(out), rng.randint(1, 8))):
            kind = rng.choice(EVENT_TYPES)
            record = {
                "event_id": f"e{len(out):09d}",
                "user_id": user,
                "event_time": now_ms - n + len(out),
                "event_type": kind,
                "advertiser_id": None if kind == "search" else advertiser,
                "item_id": f"i{rng.randrange(10_000)}",
                "category": "shoes",
                "brand": None,
                "text": "running shoes" if kind == "search" else None,
            }
            out.append((user.encode(), serde.encode(serde.EVENT, record)))
    return out


def fill_topic(settings: Settings, events: list[tuple[bytes, bytes]]) -> None:
    from adcast.replay import event_producer

    producer = event_producer(settings)
    topic = settings.topics.name("events")
    for key, value in events:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60) > 0:
        raise ServiceError(f"the broker did not take all {len(events)} events within 60 s")


async def _raw_rate(settings: Settings, n: int, timeout_s: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from adcast.kafka import aiokafka_config

    topic = settings.topics.name("events")
    consumer = AIOKafkaConsumer(**aiokafka_config(settings), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        # Timed from the first fetch (the connection is made and the partitions are assigned by
        # then): a small topic can arrive in one fetch, which leaves no later batch to time.
        count, started = 0, time.monotonic()
        deadline = started + timeout_s
        while count < n:
            if time.monotonic() > deadline:
                raise ServiceError(f"the raw consumer read {count} of {n} events in {timeout_s:.0f}s")
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            count += sum(len(b) for b in batches.values())
        seconds = time.monotonic() - started
    finally:
        await consumer.stop()
    return {"events": count, "seconds": round(seconds, 3), "events_per_s": round(count / seconds, 1)}


def _faust_rate(
    settings: Settings, label: str, workers: int, n: int, run_dir: Path, timeout_s: float, count_only: bool
) -> dict[str, Any]:
    from adcast.local.services import free_port
    from adcast.local.workers import start_worker

    s = override(settings, stream={"app_id": f"{settings.stream.app_id}-{label}"})
    procs, ports = [], []
    try:
        for i in range(workers):
            port = free_port()
            env = {
                **to_env(s),
                "ADCAST_METRICS_PORT": str(port),
                "ADCAST_STREAM__DATA_DIR": str(run_dir / f"{label}-{i}"),
            }
            args = ("--count-only",) if count_only else ()
            procs.append(start_worker("stream", env, run_dir / f"{label}-{i}.log", args))
            ports.append(port)
        for w in procs:
            w.wait_ready()
        deadline = time.monotonic() + timeout_s
        started, at_start, cpu_at_start = 0.0, 0.0, 0.0
        while True:
            counts = [scrape(port).total("adcast_events_in_total") for port in ports]
            now = time.monotonic()
            if not started and all(c > 0 for c in counts):
                started, at_start = now, sum(counts)
                cpu_at_start = sum(tree_cpu_seconds(w.proc.pid) for w in procs)
            if sum(counts) >= n:
                break
            for w in procs:
                if w.proc.poll() is not None:
                    raise ServiceError(f"a {label} worker exited with {w.proc.returncode}:\n{w.tail()}")
            if now > deadline:
                raise ServiceError(f"{label}: {sum(counts):.0f} of {n} events in {timeout_s:.0f}s; see {run_dir}")
            time.sleep(0.25)  # each scrape costs the worker CPU: poll gently
        seconds = now - started
        cpu_seconds = sum(tree_cpu_seconds(w.proc.pid) for w in procs) - cpu_at_start
        metrics = [scrape(port) for port in ports]
        batches = sum(m.total("adcast_ingest_batch_size_count") for m in metrics)
        return {
            "workers": workers,
            "events_measured": int(sum(counts) - at_start),
            "seconds": round(seconds, 3),
            "events_per_s": round((sum(counts) - at_start) / seconds, 1) if seconds > 0 else float("nan"),
            "per_worker_events": [int(c) for c in counts],
            # Per CPU-second of the workers: on a shared machine this moves far less than events/s.
            "cpu_seconds": round(cpu_seconds, 2),
            "events_per_cpu_s": round((sum(counts) - at_start) / cpu_seconds, 1) if cpu_seconds > 0 else None,
            # How much work each event caused: batches the agent took, histories written (each one a
            # changelog record and a RocksDB put; 0 for the no-op agent).
            "mean_batch_events": round(sum(counts) / batches, 1) if batches else None,
            "histories_written_per_event": round(
                sum(m.total("adcast_histories_written_total") for m in metrics) / sum(counts), 3
            ),
        }
    finally:
        for w in procs:
            w.stop()


def bench_ingest(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from adcast.kafka import create_topics
    from adcast.local.demo import isolated_settings

    worker_counts = sorted({int(x) for x in args.workers.split(",")})
    if args.rounds < 1 or worker_counts[0] < 1:
        raise ValueError("--rounds and every --workers count must be at least 1")
    first = worker_counts[0]  # takes turns with the no-op agent
    started_services = start_local_services(settings)
    run_dir = Path(tempfile.mkdtemp(prefix="adcast-bench-ingest-"))
    s = isolated_settings(settings, f"bench-ingest-{int(time.time())}", run_dir)
    say = (lambda text: None) if args.quiet else (lambda text: print(text, flush=True))

    def measure(label: str, workers: int, count_only: bool) -> dict[str, Any]:
        return _faust_rate(s, label, workers, args.events, run_dir, args.timeout, count_only=count_only)

    try:
        create_topics(s)
        say(f"producing {args.events:,} events of {args.users:,} users to {s.topics.name('events')}")
        fill_topic(s, synthetic_events(args.events, args.users, args.seed, now_ms()))
        say("raw aiokafka consumer ...")
        raw = asyncio.run(_raw_rate(s, args.events, args.timeout))
        rounds = []
        for r in range(args.rounds):
            say(f"round {r + 1}/{args.rounds}: faust no-op agent ...")
            noop = measure(f"noop{r}", 1, True)
            say(f"round {r + 1}/{args.rounds}: adcast stream tier, {first} worker(s) ...")
            tier = measure(f"tier{first}-{r}", first, False)
            rounds.append(_round(noop, tier))
            say(f"  ratio {rounds[-1]['ratio']:.3f}")
        by_ratio = sorted(range(len(rounds)), key=lambda i: rounds[i]["ratio"])
        median = by_ratio[(len(rounds) - 1) // 2]  # the lower middle one of an even count
        tiers = {str(first): rounds[median]["adcast_stream"]}
        for k in worker_counts[1:]:
            say(f"adcast stream tier, {k} worker(s) ...")
            tiers[str(k)] = measure(f"tier{k}", k, False)
        one = tiers[str(first)]
        report: dict[str, Any] = {
            "events": args.events,
            "users": args.users,
            "partitions": s.topics.partitions,
            "batch_max_events": s.stream.batch_max_events,
            "raw_aiokafka": raw,
            "rounds": rounds,
            "median_round": median,
            # The median round's rows, so each ratio below is theirs.
            "faust_noop": rounds[median]["faust_noop"],
            "adcast_stream": tiers,
            "ratio_to_faust_noop": rounds[median]["ratio"],
            "ratio_range": [min(x["ratio"] for x in rounds), max(x["ratio"] for x in rounds)],
            "ratio_to_raw_aiokafka": round(one["events_per_s"] / raw["events_per_s"], 4),
            "cpu_ratio_to_faust_noop": rounds[median]["cpu_ratio"],
        }
        if "1" in tiers and "2" in tiers:
            report["two_workers_speedup"] = round(tiers["2"]["events_per_s"] / tiers["1"]["events_per_s"], 3)
        return report
    finally:
        delete_run_topics(s)
        shutil.rmtree(run_dir, ignore_errors=True)
        for service in started_services:
            service.stop()


def _round(noop: dict[str, Any], tier: dict[str, Any]) -> dict[str, Any]:
    cpu = tier["events_per_cpu_s"] and noop["events_per_cpu_s"]
    return {
        "faust_noop": noop,
        "adcast_stream": tier,
        "ratio": round(tier["events_per_s"] / noop["events_per_s"], 3),
        "cpu_ratio": round(tier["events_per_cpu_s"] / noop["events_per_cpu_s"], 3) if cpu else None,
    }


def format_report(r: dict[str, Any]) -> str:
    first = next(iter(r["adcast_stream"]))
    n = len(r["rounds"])
    lines = [
        f"{r['events']:,} events of {r['users']:,} users, {r['partitions']} partitions, same topic for every row",
        f"  {'raw aiokafka consumer':<30} {r['raw_aiokafka']['events_per_s']:>10,.0f} events/s",
    ]
    for i, x in enumerate(r["rounds"]):
        mark = "  <- median" if i == r["median_round"] and n > 1 else ""
        lines.append(
            f"  round {i + 1}: faust no-op agent {x['faust_noop']['events_per_s']:>8,.0f}, adcast stream, "
            f"{first} worker(s) {x['adcast_stream']['events_per_s']:>8,.0f}, ratio {x['ratio']:.3f}{mark}"
        )
    for k, t in list(r["adcast_stream"].items())[1:]:
        lines.append(f"  {f'adcast stream, {k} worker(s)':<30} {t['events_per_s']:>10,.0f} events/s")
    low, high = r["ratio_range"]
    spread = f" (rounds {low:.2f}-{high:.2f})" if n > 1 else ""
    lines.append(
        f"  {first} worker(s) / faust no-op {r['ratio_to_faust_noop']:.2f}{spread}, "
        f"/ raw aiokafka {r['ratio_to_raw_aiokafka']:.4f}"
    )
    if r.get("cpu_ratio_to_faust_noop"):
        lines.append(f"  {first} worker(s) / faust no-op per CPU-second {r['cpu_ratio_to_faust_noop']:.2f}")
    if "two_workers_speedup" in r:
        lines.append(f"  2 workers / 1 worker {r['two_workers_speedup']:.2f}")
    return "\n".join(lines)
