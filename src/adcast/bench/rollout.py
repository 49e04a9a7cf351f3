"""`adcast bench rollout`: live freshness before and while a rollout re-scores everyone into a new slot.

Sets up as `adcast bench e2e` does (local services unless they run; topics, groups, table
directory and Redis keys of its own; the demo world and model unless --data/--model), then:

1. state: replays the world's first --state-events events as fast as it can (their own event
   times) to a stream worker and the live slot's inference worker (slot ga), and waits until the
   live slot holds every user's newest version;
2. load: starts a shadow inference worker (slot gb, its own consumer group, start_at latest), then
   replays the next --rate x --seconds events live (stamped when produced) at --rate; after
   --rollout-after seconds of it, runs the rollout of slot gb (`adcast rollout --rate
   --rollout-rate`) beside the live load;
3. reports the live slot's freshness (newest event -> Redis write, from the affinities topic,
   records of slot ga) for the live events before the rollout and for those during it, side by
   side in one run, the rollout's duration and requests, and slot gb's coverage at the end.

Both inference workers score with the same model: the figure is what a rollout costs live traffic
on this machine, not a model comparison (`adcast compare` is that).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adcast.bench._harness import delete_run_topics, start_local_services
from adcast.config import Settings, override, to_env
from adcast.core.clock import now_ms
from adcast.core.ranking import percentile
from adcast.core.slots import SLOT_HEADER
from adcast.errors import ConfigError
from adcast.local.workers import WorkerProcess, start_worker
from adcast.wire import serde

if TYPE_CHECKING:
    from adcast.lifecycle.rollout import Coverage, RolloutSummary
    from adcast.replay import ReplaySummary


def add_arguments(p: argparse.ArgumentParser) -> None:
    from adcast.local.demo import DEMO_USERS

    p.add_argument("--rate", type=float, default=500.0, help="live events per second (default: 500)")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of live replay (default: 60)")
    p.add_argument("--rollout-after", type=float, default=15.0, help="seconds of live load before the rollout")
    p.add_argument("--rollout-rate", type=float, default=100.0, help="rollout requests per second (default: 100)")
    p.add_argument("--state-events", type=int, default=40_000, help="events replayed first, unpaced (default: 40000)")
    p.add_argument("--users", type=int, default=DEMO_USERS, help=f"users of the synthetic world ({DEMO_USERS})")
    p.add_argument("--data", default=None, help="replay this data directory instead of the synthetic world")
    p.add_argument("--model", default=None, help="model directory (default: the demo model)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _split(data: Path, first: int, second: int, out: Path) -> tuple[Path, Path]:
    """The data directory's first `first` events (by time) and the `second` after them."""
    from adcast.data.files import read_records, write_records

    events = sorted(read_records(data, "events"), key=lambda e: e["event_time"])
    if len(events) < first + second:
        raise ConfigError(f"{data} holds {len(events):,} events, the run needs {first + second:,}: pass more --users")
    parts = []
    for name, chunk in (("state", events[:first]), ("live", events[first : first + second])):
        d = out / name
        write_records(d, "events", chunk)
        write_records(d, "profiles", read_records(data, "profiles"))
        write_records(d, "advertisers", read_records(data, "advertisers"))
        parts.append(d)
    return parts[0], parts[1]


def _live_slot_freshness(settings: Settings, slot: str) -> list[tuple[int, float]]:
    """(newest event time, seconds to the Redis write) of every newer-version record of `slot`."""
    from adcast.lifecycle.state import partition_ends, read_messages, state_consumer

    topic = settings.topics.name("affinities")
    consumer = state_consumer(settings, f"{settings.infer.group_id}-bench-reader")
    best: dict[str, int] = {}
    out: list[tuple[int, float]] = []
    try:
        for m in read_messages(consumer, topic, dict(partition_ends(consumer, topic))):
            if (SLOT_HEADER, slot.encode()) not in (m.headers() or []):
                continue
            a = serde.decode(serde.AFFINITY, m.value())
            if a["version"] > best.get(a["user_id"], -1):
                best[a["user_id"]] = a["version"]
                out.append((a["newest_event_time"], (a["computed_at"] - a["newest_event_time"]) / 1000))
    finally:
        consumer.close()
    return out


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3) if values else float("nan"),
    }


def _prepare_data(args: argparse.Namespace, home: Path, run_dir: Path) -> tuple[str, Path, Path]:
    """The model's folder (the demo's, made when missing, unless --model) and the state and live
    parts of the data (the demo's world unless --data)."""
    from adcast.local.demo import DEMO_USERS, ensure_model, ensure_world

    # The helpers shared with the demo talk on stdout, which --json keeps for the report.
    with contextlib.redirect_stdout(sys.stderr):
        data = Path(args.data) if args.data else ensure_world(home, args.users)
        model_dir = args.model or str(ensure_model(home, ensure_world(home, DEMO_USERS)))
    return model_dir, *_split(data, args.state_events, round(args.rate * args.seconds), run_dir)


def _start_workers(settings: Settings, run: str, run_dir: Path, workers: list[WorkerProcess]) -> Settings:
    """Create the run's topics and start the stream worker and slot ga's inference worker into
    `workers` (so the caller stops those that started); returns slot gb's settings."""
    from adcast.kafka import create_topics

    create_topics(settings)
    env = to_env(settings)
    shadow = override(settings, infer={"slot": "gb", "start_at": "latest", "group_id": f"{run}-infer-gb"})
    workers += [start_worker(t, env, run_dir / f"{t}.log") for t in ("stream", "infer")]
    for w in workers:
        w.wait_ready()
    return shadow


def _replay_live_with_rollout(
    args: argparse.Namespace, settings: Settings, shadow: Settings, live: Path, progress: bool
) -> tuple[ReplaySummary, dict[str, Any]]:
    """Replay the live part at --rate while, --rollout-after seconds in, slot gb's rollout runs;
    returns the replay's summary and the timeline (live_start_ms, start_ms, end_ms: epoch ms) with
    the rollout's summary."""
    from adcast.lifecycle.rollout import rollout
    from adcast.replay import replay

    window: dict[str, Any] = {}

    def roll() -> None:
        time.sleep(args.rollout_after)
        window["start_ms"] = now_ms()
        window["summary"] = rollout(shadow, "gb", rate=args.rollout_rate, progress=False)
        window["end_ms"] = now_ms()

    roller = threading.Thread(target=roll, daemon=True)
    window["live_start_ms"] = now_ms()
    roller.start()
    second = replay(settings, live, rate=args.rate, live=True, collect=True, progress=progress)
    roller.join()
    return second, window


def bench_rollout(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from adcast.lifecycle.rollout import coverage
    from adcast.local.demo import isolated_settings, wait_for_versions
    from adcast.replay import expected_versions, replay
    from adcast.store import AffinityClient

    progress = not args.no_progress
    home = Path(settings.home).resolve()
    run = f"bench-rollout-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir = home / "runs" / run
    settings = override(isolated_settings(settings, run, run_dir), infer={"slot": "ga"})
    workers: list[WorkerProcess] = []
    started: list[Any] = []
    try:
        started = start_local_services(settings)
        model_dir, state, live = _prepare_data(args, home, run_dir)
        settings = override(settings, infer={"model_dir": model_dir})
        shadow = _start_workers(settings, run, run_dir, workers)
        first = replay(settings, state, collect=True, progress=progress)
        with AffinityClient(settings.redis) as client:
            wait_for_versions(client, expected_versions(first.delivered), timeout_s=600)
        workers.append(start_worker("infer", to_env(shadow), run_dir / "infer-gb.log"))
        workers[-1].wait_ready()
        second, window = _replay_live_with_rollout(args, settings, shadow, live, progress)
        expected = expected_versions(first.delivered + second.delivered)
        with AffinityClient(settings.redis) as client:
            caught_up = len(wait_for_versions(client, expected, timeout_s=300))
        with AffinityClient(settings.redis, slot="gb") as client:
            wait_for_versions(client, expected, timeout_s=300)
        cov = coverage(shadow, "gb")
        fresh = _live_slot_freshness(settings, "ga")
    finally:
        codes = [w.stop() for w in workers]
        for service in started:
            service.stop()
        if not started and workers:
            delete_run_topics(settings)
        shutil.rmtree(settings.stream.data_dir, ignore_errors=True)
    live_start, start, end = window["live_start_ms"], window["start_ms"], window["end_ms"]
    return {
        "run": run,
        "rate": args.rate,
        "seconds": args.seconds,
        "users": len(expected),
        "users_caught_up": caught_up,
        "rollout": _rollout_figures(args.rollout_rate, window["summary"], cov),
        "freshness_s": {
            "before_rollout": _summary([s for t, s in fresh if live_start <= t < start]),
            "during_rollout": _summary([s for t, s in fresh if start <= t <= end]),
        },
        "worker_exit_codes": codes,
        "cpu_count": os.cpu_count(),
    }


def _rollout_figures(rate: float, rolled: RolloutSummary, cov: Coverage) -> dict[str, Any]:
    return {
        "rate": rate,
        "requests": rolled.requested,
        "seconds": round(rolled.seconds, 1),
        "coverage": round(cov.ratio, 6),
        "current": cov.current,
        "known": cov.known,
    }


def exit_code(r: dict[str, Any]) -> int:
    return 0 if r["users_caught_up"] == r["users"] and r["rollout"]["current"] == r["rollout"]["known"] else 1


def format_report(r: dict[str, Any]) -> str:
    b, d, ro = r["freshness_s"]["before_rollout"], r["freshness_s"]["during_rollout"], r["rollout"]
    return "\n".join(
        [
            f"live load {r['rate']:g} events/s for {r['seconds']:g} s, {r['users']:,} users "
            f"({r['users_caught_up']:,} caught up); {r['cpu_count']} CPUs",
            f"rollout of slot gb: {ro['requests']:,} requests at {ro['rate']:g}/s in {ro['seconds']:.1f} s; "
            f"coverage {ro['coverage']:.2%} ({ro['current']:,}/{ro['known']:,} current)",
            "live slot freshness      p50      p99      max   writes",
            f"  before the rollout  {b['p50']:>6.2f}s  {b['p99']:>6.2f}s  {b['max']:>6.2f}s  {b['count']:>7,}",
            f"  during the rollout  {d['p50']:>6.2f}s  {d['p99']:>6.2f}s  {d['max']:>6.2f}s  {d['count']:>7,}",
        ]
    )
