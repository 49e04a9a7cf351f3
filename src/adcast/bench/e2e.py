"""`adcast bench e2e`: freshness and LLM cost of the whole pipeline under a live load.

Starts the local broker and redis-server unless they run (as `adcast demo` does), gives this run
topics, consumer groups, a table directory and Redis keys of its own, starts a stream worker and an
inference worker as subprocesses (each from its tier's environment, each serving its Prometheus
metrics on a free port), replays the first `--rate` x `--seconds` events of a synthetic world live
(each event stamped with the wall-clock time it is produced) at that fixed rate, waits until the
pipeline has drained, and reports:

  freshness            newest event time -> Redis write, p50/p95/p99/max over every prediction
                       that Redis took (the affinities topic carries each scored prediction with its
                       computed_at, stamped just before the Redis write, and the newest event time
                       of the scored history; a prediction that lost the version check is left out)
  predictions/event    LLM predictions (requests scored: the inference worker's Redis writes, stale
                       ones included) / events replayed; also requests emitted (by trigger reason),
                       requests superseded inside a micro-batch, and those dead-lettered
  micro-batch sizes    from the inference worker's adcast_batch_size histogram: the mean is exact,
                       p50 and max are bucket bounds (1, 2, 4, ... 512); beside them the engine
                       time per batch (adcast_inference_seconds) and the cores each tier kept busy
                       (CPU time of each worker process and its subprocesses, read from /proc, over
                       the replay and drain: with VLLM_ENABLE_V1_MULTIPROCESSING=1, vLLM on the
                       CPU scores in subprocesses of its own)
  consumer lag         end offset minus committed offset, summed over partitions, of the stream
                       tier on the events topic and the inference tier on the requests topic, read
                       with a consumer that never joins the groups; at the end of the replay and
                       after the drain (the stream tier commits every few seconds, so its committed
                       lag runs ahead of what it has processed: `stream_unprocessed` counts events
                       produced but not yet consumed, from its adcast_events_in_total)

The synthetic world spans 30 days; replayed at a fixed rate, each user's sessions (a few events
seconds to a minute apart) arrive as bursts within milliseconds, seconds apart: the load that the
stream tier's triggers (--quiet-ms, --max-delay-ms, --min-interval-ms; default from the config)
coalesce into predictions. The model is the demo model (`adcast demo` trains and caches it under
<home>/models/demo; this does the same when it is missing), unless --model. The workers are stopped
with SIGTERM at the end, the run's topics deleted, and services left running only if they already
were. Logs stay under <home>/runs/bench-e2e-<run>.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adcast.bench._harness import (
    Scrape,
    consumer_lag,
    delete_run_topics,
    read_topic,
    scrape,
    start_local_services,
    tree_cpu_seconds,
)
from adcast.config import Settings, override, to_env
from adcast.core.ranking import percentile
from adcast.errors import ConfigError, ServiceError
from adcast.local.workers import WorkerProcess, start_worker
from adcast.wire import serde

if TYPE_CHECKING:
    from adcast.replay import ReplaySummary

log = logging.getLogger(__name__)
POLL_S = 0.5


def add_arguments(p: argparse.ArgumentParser) -> None:
    from adcast.local.demo import DEMO_USERS

    p.add_argument("--rate", type=float, default=1000.0, help="events per second (default: 1000)")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of replay (default: 60)")
    p.add_argument(
        "--users",
        type=int,
        default=DEMO_USERS,
        help=f"users of the synthetic world, generated and cached like the demo's (default: {DEMO_USERS})",
    )
    p.add_argument("--data", default=None, help="replay this data directory instead of the synthetic world")
    p.add_argument("--model", default=None, help="model directory (default: the demo model, trained when missing)")
    p.add_argument(
        "--engine", choices=["torch", "vllm"], default=None, help="scoring engine (default: the infer.engine setting)"
    )
    p.add_argument("--quiet-ms", type=int, default=None, help="trigger: emit once a user is quiet this long")
    p.add_argument("--max-delay-ms", type=int, default=None, help="trigger: emit at the latest after this long")
    p.add_argument("--min-interval-ms", type=int, default=None, help="trigger: least time between two emissions")
    p.add_argument("--drain-timeout", type=float, default=180.0, help="seconds to wait for the drain (default: 180)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or status lines")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The upper bound of the histogram bucket that holds the q-quantile (nan when empty)."""
    count = buckets[-1][1] if buckets else 0.0
    if not count:
        return float("nan")
    return next(le for le, cum in buckets if cum >= q * count)


# -- The run -----------------------------------------------------------------------------------


def _check_model(model_dir: str, data: Path) -> None:
    from adcast.data.files import read_records
    from adcast.model_meta import ModelMeta

    known = set(ModelMeta.load(model_dir).advertiser_ids)
    unknown = {a["advertiser_id"] for a in read_records(data, "advertisers")} - known
    if unknown:
        raise ConfigError(
            f"the model in {model_dir} does not know {len(unknown)} advertisers of {data} "
            f"(e.g. {sorted(unknown)[:3]}); train one on that data (`adcast train`) and pass --model"
        )


def _status(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def _wait_drained(
    settings: Settings,
    workers: dict[str, WorkerProcess],
    ports: dict[str, int],
    expected: dict[str, int],
    timeout_s: float,
    progress: bool,
) -> int:
    """Wait until every user's prediction in Redis reached the newest salient event's version and
    the inference worker has handled (scored and written, or superseded) every request the stream
    worker emitted; returns the number of users caught up (all of them unless the timeout struck)."""
    from adcast.store import AffinityClient

    client = AffinityClient(settings.redis)
    users = sorted(expected)
    deadline = time.monotonic() + timeout_s
    last_note = 0.0
    try:
        while True:
            for w in workers.values():
                if w.proc.poll() is not None:
                    raise ServiceError(f"{w.tier} worker exited with {w.proc.returncode} during the run:\n{w.tail()}")
            found = client.get_many(users)
            caught_up = sum(1 for u, a in found.items() if a is not None and a.version >= expected[u])
            s, i = scrape(ports["stream"]), scrape(ports["infer"])
            emitted = s.total("adcast_requests_emitted_total")
            batched = i.total("adcast_batch_size_sum")
            handled = (
                batched
                + i.total("adcast_requests_superseded_total")
                + i.total("adcast_dead_letters_total", stage="decode")
            )
            # adcast_batch_size is observed before scoring: a batch is done once each of its
            # requests is written (or found stale) or dead-lettered by the engine.
            finished = (
                i.total("adcast_store_writes_total") + i.total("adcast_dead_letters_total", stage="infer") >= batched
            )
            if caught_up == len(users) and handled >= emitted and finished:
                return caught_up
            if time.monotonic() > deadline:
                log.warning("drain timed out: %s of %s users caught up", caught_up, len(users))
                return caught_up
            if time.monotonic() - last_note >= 5:
                _status(
                    progress,
                    f"draining: {caught_up:,}/{len(users):,} users caught up, "
                    f"{handled:,.0f}/{emitted:,.0f} requests handled",
                )
                last_note = time.monotonic()
            time.sleep(POLL_S)
    finally:
        client.close()


def freshness(updates: list[bytes]) -> list[float]:
    """Seconds from newest event to Redis write for every published prediction that Redis took:
    per user (one partition, in write order) only versions above the ones before it."""
    best: dict[str, int] = {}
    out: list[float] = []
    for raw in updates:
        a = serde.decode(serde.AFFINITY, raw)
        if a["version"] > best.get(a["user_id"], -1):
            best[a["user_id"]] = a["version"]
            out.append((a["computed_at"] - a["newest_event_time"]) / 1000)
    return out


def _count_events(data: Path) -> int:
    from adcast.data.files import read_records

    return sum(1 for _ in read_records(data, "events"))


def _run_settings(args: argparse.Namespace, settings: Settings, home: Path) -> tuple[Settings, str, Path]:
    """This run's own settings (topics, groups, table directory, Redis keys), name and folder."""
    from adcast.local.demo import isolated_settings

    if args.rate <= 0 or args.seconds <= 0:
        raise ConfigError("--rate and --seconds must be positive")
    run = f"bench-e2e-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir = home / "runs" / run
    triggers = {
        name: getattr(args, name)
        for name in ("quiet_ms", "max_delay_ms", "min_interval_ms")
        if getattr(args, name) is not None
    }
    engine = {"engine": args.engine} if args.engine is not None else {}
    return override(isolated_settings(settings, run, run_dir), stream=triggers, infer=engine), run, run_dir


def _prepare_data(args: argparse.Namespace, home: Path, wanted: int) -> tuple[Path, str]:
    """The data to replay, with enough events, and the folder of a model that knows its
    advertisers; the demo's world and model are made when missing."""
    from adcast.local.demo import DEMO_USERS, ensure_model, ensure_world

    # The helpers shared with the demo talk on stdout, which --json keeps for the report.
    with contextlib.redirect_stdout(sys.stderr):
        data = Path(args.data) if args.data else ensure_world(home, args.users)
        model_dir = args.model or str(ensure_model(home, ensure_world(home, DEMO_USERS)))
    _check_model(model_dir, data)
    available = _count_events(data)
    if available < wanted:
        raise ConfigError(
            f"{data} holds {available:,} events; {args.rate:g}/s for {args.seconds:g}s needs {wanted:,}: "
            "pass more --users (about 53 events each), a lower --rate or fewer --seconds"
        )
    return data, model_dir


def _start_workers(
    settings: Settings, run_dir: Path, progress: bool, workers: dict[str, WorkerProcess]
) -> dict[str, int]:
    """Create the run's topics and start both workers into `workers` (filled as each starts, so the
    caller stops those that did); returns each tier's metrics port."""
    from adcast.kafka import create_topics
    from adcast.local.services import free_port

    create_topics(settings)
    ports = {tier: free_port() for tier in ("stream", "infer")}
    env = to_env(settings)
    _status(progress, f"starting the stream and inference workers (logs in {run_dir})")
    for tier, port in ports.items():
        workers[tier] = start_worker(tier, {**env, "ADCAST_METRICS_PORT": str(port)}, run_dir / f"{tier}.log")
    for w in workers.values():
        w.wait_ready()
    return ports


@dataclass
class _Measured:
    summary: ReplaySummary
    expected: dict[str, int]
    caught_up: int
    drain_s: float
    wall_s: float
    cpu: dict[str, float]
    stream_m: Scrape
    infer_m: Scrape
    lag_replay_end: dict[str, int]
    lag_drained: dict[str, int]
    fresh: list[float]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def _replay_and_drain(
    args: argparse.Namespace,
    settings: Settings,
    data: Path,
    wanted: int,
    workers: dict[str, WorkerProcess],
    ports: dict[str, int],
    progress: bool,
) -> _Measured:
    """Replay `wanted` events live, wait for the drain, and read every figure of the report."""
    from adcast.replay import expected_versions, replay

    load_before = os.getloadavg()
    cpu_before = {tier: tree_cpu_seconds(w.proc.pid) for tier, w in workers.items()}
    wall_before = time.monotonic()
    summary = replay(settings, data, rate=args.rate, live=True, limit=wanted, collect=True, progress=progress)
    replay_end = time.monotonic()
    lag_replay_end = _lag(settings, summary.events, scrape(ports["stream"]), unprocessed=True)
    expected = expected_versions(summary.delivered)
    caught_up = _wait_drained(settings, workers, ports, expected, args.drain_timeout, progress)
    drain_s = time.monotonic() - replay_end
    load_after = os.getloadavg()
    stream_m, infer_m = scrape(ports["stream"]), scrape(ports["infer"])
    wall_s = time.monotonic() - wall_before
    cpu = {tier: tree_cpu_seconds(w.proc.pid) - cpu_before[tier] for tier, w in workers.items()}
    lag_drained = _lag(settings, summary.events, stream_m, unprocessed=False)
    # Every scored prediction is written to Redis (or found stale there) and published.
    published = round(infer_m.total("adcast_store_writes_total"))
    fresh = freshness(read_topic(settings, settings.topics.name("affinities"), published))
    return _Measured(
        summary=summary,
        expected=expected,
        caught_up=caught_up,
        drain_s=drain_s,
        wall_s=wall_s,
        cpu=cpu,
        stream_m=stream_m,
        infer_m=infer_m,
        lag_replay_end=lag_replay_end,
        lag_drained=lag_drained,
        fresh=fresh,
        load_before=load_before,
        load_after=load_after,
    )


def _lag(settings: Settings, events: int, stream_m: Scrape, unprocessed: bool) -> dict[str, int]:
    """Each tier's committed consumer lag; with `unprocessed`, also the events produced that the
    stream tier has not consumed yet (its commits run ahead of its processing)."""
    t = settings.topics
    emitted = round(stream_m.total("adcast_requests_emitted_total"))
    lag = {"stream_committed": consumer_lag(settings, settings.stream.app_id, t.name("events"), events)}
    if unprocessed:
        lag["stream_unprocessed"] = events - round(stream_m.total("adcast_events_in_total"))
    lag["inference_committed"] = consumer_lag(settings, settings.infer.group_id, t.name("requests"), emitted)
    return lag


def bench_e2e(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    progress = not args.no_progress
    home = Path(settings.home).resolve()
    settings, run, run_dir = _run_settings(args, settings, home)
    wanted = round(args.rate * args.seconds)

    started: list[Any] = []
    workers: dict[str, WorkerProcess] = {}
    codes: dict[str, int] = {}
    try:
        started = start_local_services(settings)
        data, model_dir = _prepare_data(args, home, wanted)
        settings = override(settings, infer={"model_dir": model_dir})
        ports = _start_workers(settings, run_dir, progress, workers)
        m = _replay_and_drain(args, settings, data, wanted, workers, ports, progress)
    finally:
        for tier, w in workers.items():
            codes[tier] = w.stop()
        if started:
            for service in started:
                service.stop()
        elif workers:
            delete_run_topics(settings)
        shutil.rmtree(settings.stream.data_dir, ignore_errors=True)
    return _report(args, settings, run, m, codes)


def _report(
    args: argparse.Namespace, settings: Settings, run: str, m: _Measured, codes: dict[str, int]
) -> dict[str, Any]:
    summary, stream_m, infer_m = m.summary, m.stream_m, m.infer_m
    predictions = infer_m.total("adcast_store_writes_total")
    batches = infer_m.total("adcast_batch_size_count")
    s = settings.stream
    return {
        "run": run,
        "rate": args.rate,
        "seconds": args.seconds,
        "events": summary.events,
        "replay_seconds": round(summary.event_seconds, 2),  # producing the events, as paced
        "events_per_second": round(summary.events_per_second, 1),
        "users": len(m.expected),
        "users_caught_up": m.caught_up,
        "drain_seconds": round(m.drain_s, 2),
        "trigger": {
            "quiet_ms": s.quiet_ms,
            "max_delay_ms": s.max_delay_ms,
            "min_interval_ms": s.min_interval_ms,
            "tick_ms": s.tick_ms,
        },
        "infer": {
            "engine": settings.infer.engine,
            "max_batch": settings.infer.max_batch,
            "max_wait_ms": settings.infer.max_wait_ms,
            "cpu_threads": settings.infer.cpu_threads,
        },
        "freshness_s": _freshness_figures(m.fresh),
        "requests_emitted": round(stream_m.total("adcast_requests_emitted_total")),
        "requests_by_reason": {
            k: round(v) for k, v in stream_m.by_label("adcast_requests_emitted_total", "reason").items()
        },
        "requests_superseded": round(infer_m.total("adcast_requests_superseded_total")),
        "predictions": round(predictions),
        "redis_writes": round(infer_m.total("adcast_store_writes_total", outcome="written")),
        "stale_writes": round(infer_m.total("adcast_store_writes_total", outcome="stale")),
        "inference_dead_letters": round(infer_m.total("adcast_dead_letters_total")),
        "predictions_per_event": round(predictions / summary.events, 4) if summary.events else float("nan"),
        "batch_size": _batch_figures(infer_m),
        "engine_seconds_per_batch": round(infer_m.total("adcast_inference_seconds_sum") / batches, 4)
        if batches
        else float("nan"),
        # Cores each tier kept busy from the first replayed event to the end of the drain.
        "cores_busy": {tier: round(c / m.wall_s, 2) for tier, c in m.cpu.items()},
        "lag_at_replay_end": m.lag_replay_end,
        "lag_after_drain": m.lag_drained,
        "stream_dead_letters": round(stream_m.total("adcast_dead_letters_total")),
        "worker_exit_codes": codes,
        "load_average": {
            "before": [round(x, 2) for x in m.load_before],
            "after": [round(x, 2) for x in m.load_after],
        },
        "cpu_count": os.cpu_count(),
    }


def _freshness_figures(fresh: list[float]) -> dict[str, Any]:
    return {
        "count": len(fresh),
        "p50": round(percentile(fresh, 50), 3),
        "p95": round(percentile(fresh, 95), 3),
        "p99": round(percentile(fresh, 99), 3),
        "max": round(max(fresh), 3) if fresh else float("nan"),
    }


def _batch_figures(infer_m: Scrape) -> dict[str, Any]:
    batched = infer_m.total("adcast_batch_size_sum")
    batches = infer_m.total("adcast_batch_size_count")
    sizes = infer_m.buckets("adcast_batch_size")
    return {
        "batches": round(batches),
        "mean": round(batched / batches, 2) if batches else float("nan"),
        "p50_at_most": bucket_quantile(sizes, 0.5),
        "max_at_most": bucket_quantile(sizes, 1.0),
    }


def exit_code(r: dict[str, Any]) -> int:
    """Non-zero when some user never caught up: the figures then describe an unfinished run."""
    return 0 if r["users_caught_up"] == r["users"] else 1


def format_report(r: dict[str, Any]) -> str:
    f, b, tr = r["freshness_s"], r["batch_size"], r["trigger"]
    lr, ld = r["lag_at_replay_end"], r["lag_after_drain"]
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(r["requests_by_reason"].items()))
    rows = [
        (
            "events replayed",
            f"{r['events']:,} in {r['replay_seconds']:.1f}s ({r['events_per_second']:,.0f}/s), "
            f"{r['users']:,} users with a salient event",
        ),
        (
            "trigger",
            f"quiet {tr['quiet_ms']} ms, max delay {tr['max_delay_ms']} ms, "
            f"min interval {tr['min_interval_ms']} ms, tick {tr['tick_ms']} ms",
        ),
        (
            "freshness",
            f"p50 {f['p50']:.2f}s  p95 {f['p95']:.2f}s  p99 {f['p99']:.2f}s  max {f['max']:.2f}s "
            f"over {f['count']:,} Redis writes",
        ),
        ("LLM predictions / event", f"{r['predictions_per_event']:.3f} ({r['predictions']:,} predictions)"),
        (
            "requests emitted",
            f"{r['requests_emitted']:,} ({reasons}); {r['requests_superseded']:,} superseded in a micro-batch",
        ),
        ("Redis writes", f"{r['redis_writes']:,} ({r['stale_writes']:,} stale)"),
        (
            "micro-batches",
            f"{b['batches']:,}, mean {b['mean']:.1f}, p50 <= {b['p50_at_most']:g}, "
            f"max <= {b['max_at_most']:g} (histogram buckets)",
        ),
        (
            "CPU",
            f"stream tier {r['cores_busy']['stream']:.2f} cores, inference tier {r['cores_busy']['infer']:.2f} "
            f"cores busy; engine {r['engine_seconds_per_batch'] * 1000:.0f} ms per micro-batch",
        ),
        (
            "lag at replay end",
            f"stream {lr['stream_committed']:,} committed / {lr['stream_unprocessed']:,} "
            f"unprocessed events, inference {lr['inference_committed']:,} requests",
        ),
        (
            "lag after drain",
            f"stream {ld['stream_committed']:,}, inference {ld['inference_committed']:,} "
            f"(drained in {r['drain_seconds']:.1f}s, {r['users_caught_up']:,}/{r['users']:,} users)",
        ),
        (
            "load average",
            f"{' '.join(map(str, r['load_average']['before']))} before, "
            f"{' '.join(map(str, r['load_average']['after']))} after ({r['cpu_count']} CPUs)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
