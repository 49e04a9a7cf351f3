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
  top-10 drift         per taken prediction after a user's first, the share of its top 10 that the
                       one before did not hold: what an LLM call changed for a reader of the top 10
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
from pathlib import Path
from typing import Any

from adcast.bench._harness import (
    Scrape,
    consumer_lag,
    delete_run_topics,
    read_topic,
    scrape,
    start_local_services,
    tree_cpu_seconds,
)
from adcast.bench.e2e_report import Measured, reason_of, report, taken_predictions

# The command line reads a benchmark's table and exit code from its module (adcast.bench).
from adcast.bench.e2e_report import exit_code as exit_code
from adcast.bench.e2e_report import format_report as format_report
from adcast.config import Settings, override, to_env
from adcast.core.triggers import POLICIES
from adcast.errors import ConfigError, ServiceError
from adcast.local.workers import WorkerProcess, start_worker

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
    p.add_argument(
        "--trigger-policy",
        choices=POLICIES,
        default=None,
        help="which changes are worth a call (default: the stream.trigger_policy setting)",
    )
    p.add_argument(
        "--shown-interval-ms", type=int, default=None, help="trigger: least time between two calls for ads shown alone"
    )
    p.add_argument(
        "--settle-ms",
        type=int,
        default=BENCH_SETTLE_MS,
        help="trigger: a skipped last change is scored after this much quiet; the drain waits for it, so the "
        f"run keeps it short and reports settle calls apart (default: {BENCH_SETTLE_MS})",
    )
    p.add_argument("--drain-timeout", type=float, default=180.0, help="seconds to wait for the drain (default: 180)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or status lines")
    p.add_argument("--json", action="store_true", help="print one JSON object")


# The drain waits until every user's newest version is in Redis, settle calls included.
BENCH_SETTLE_MS = 3000

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
    """Wait until every user's prediction in Redis reached the version of the newest change and
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
        for name in ("quiet_ms", "max_delay_ms", "min_interval_ms", "trigger_policy", "shown_interval_ms", "settle_ms")
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


def _replay_and_drain(
    args: argparse.Namespace,
    settings: Settings,
    data: Path,
    wanted: int,
    workers: dict[str, WorkerProcess],
    ports: dict[str, int],
    progress: bool,
) -> Measured:
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
    messages = read_topic(settings, settings.topics.name("affinities"), published)
    fresh, drift = taken_predictions([(m.value(), reason_of(m.headers())) for m in messages])
    return Measured(
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
        drift=drift,
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
    return report(args, settings, run, m, codes)
