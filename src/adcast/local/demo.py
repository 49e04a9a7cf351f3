"""`adcast demo` (what `make demo` runs): the whole path once, on local services.

Starts the broker and redis-server (unless running), generates the synthetic world and trains
the demo model (both cached under <home>), starts a stream worker, an inference worker and `adcast
serve` (the inspector) as subprocesses, replays a slice of the world live, waits until every
user's prediction in Redis has caught up with their newest event, prints what it read back and the
inspector's address, and stops what it started (`--keep` leaves it all running).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

from adcast.config import Settings, override, to_env
from adcast.core.prompt import PROMPT_FORMAT_VERSION
from adcast.core.ranking import percentile
from adcast.data.files import read_records, write_records
from adcast.errors import ServiceError
from adcast.local.services import LOCAL_BROKER_TIMINGS, free_port, local_services
from adcast.local.workers import WorkerProcess, start_worker
from adcast.model_meta import META_FILE
from adcast.store import AffinityClient, StoredAffinities

log = logging.getLogger(__name__)
DEMO_SEED = 7
DEMO_EPOCHS = 3
DEMO_USERS = 2000
DEMO_TRAIN_USERS = 600  # the demo model's training sample (ensure_model)
DEMO_EVAL_USERS = 300  # other users, held out to measure it
DEMO_QUALITY_FILE = "demo-quality.json"


def ensure_world(home: Path, users: int) -> Path:
    from adcast.data.synthetic import WORLD_VERSION, WorldSpec, generate

    world = home / f"demo-world-v{WORLD_VERSION}-{users}u-s{DEMO_SEED}"
    if not (world / "events.jsonl").is_file():
        print(f"generating the synthetic world ({users} users) in {world}")
        for kind, records in generate(WorldSpec(users=users, seed=DEMO_SEED)).items():
            write_records(world, kind, records)
    return world


def ensure_model(home: Path, world: Path) -> Path:
    """The demo model, trained once per world (cached in <home>/models/demo with its quality
    report). It trains on a sample of the world's users (DEMO_TRAIN_USERS), so that it takes well
    under a minute on two cores, and its quality is measured by `adcast eval`'s protocol on
    DEMO_EVAL_USERS other users, none of whose events it saw. The default `adcast train` on the
    whole world learns more; docs/model-quality.md has those figures."""
    from adcast.data.files import write_user_slice
    from adcast.train.shards import data_fingerprint
    from adcast.train.trainer import TrainConfig, train

    model = home / "models" / "demo"
    meta, quality = model / META_FILE, model / DEMO_QUALITY_FILE
    fingerprint = data_fingerprint(world)
    doc = json.loads(meta.read_text()) if meta.is_file() else {}
    if (
        doc.get("demo_world_fingerprint") == fingerprint
        and doc.get("prompt_format_version") == PROMPT_FORMAT_VERSION
        and quality.is_file()
    ):
        print(f"using the cached demo model in {model}")
        _print_quality(json.loads(quality.read_text()))
        return model
    users = sorted(p["user_id"] for p in read_records(world, "profiles"))
    sample = home / "demo-sample"
    n_train = min(DEMO_TRAIN_USERS, len(users) * 2 // 3)  # a small world keeps a third held out
    train_dir = write_user_slice(world, sample / "train", users[:n_train])
    held_out = users[n_train:][-DEMO_EVAL_USERS:]
    eval_dir = write_user_slice(world, sample / "held-out", held_out)
    print(
        f"training the demo model (tiny Llama from scratch, {DEMO_EPOCHS} epochs on {n_train} of the "
        f"world's {len(users)} users) into {model}"
    )
    report = train(train_dir, model, TrainConfig(epochs=DEMO_EPOCHS, seed=0))
    print(
        f"trained on {report.examples} examples in {report.seconds:.0f}s (loss {report.first_loss:.2f} -> "
        f"{report.last_loss:.2f})"
    )
    print(f"measuring it on {len(held_out)} users it never saw (adcast eval's protocol)")
    figures = demo_quality(eval_dir, model)
    quality.write_text(json.dumps(figures, indent=1))
    doc = json.loads(meta.read_text())
    meta.write_text(json.dumps(doc | {"demo_world_fingerprint": fingerprint}, indent=1))
    _print_quality(figures)
    return model


def demo_quality(eval_dir: Path, model: Path) -> dict[str, object]:
    """Recall@10 of the model, the best baseline and each kind of target, from `adcast eval`."""
    from adcast.evaluate import evaluate

    report = evaluate(eval_dir, model, ks=(10,), progress=False)
    union = report["union"]
    return {
        "targets": report["targets"],
        "model": report["model"]["recall@10"],
        "best_baseline": union["best_baseline@10"],
        "best_baseline_recall": union["best_baseline_recall@10"],
        "by_kind": {
            kind: {"targets": row["targets"], "model": row["model"]["recall@10"]}
            for kind, row in report["by_kind"].items()
        },
    }


def _print_quality(q: dict[str, Any]) -> None:
    kinds = ", ".join(f"{k} {v['model']:.3f} ({v['targets']})" for k, v in q["by_kind"].items())
    print(
        f"demo model, held-out users: recall@10 {q['model']:.3f} against {q['best_baseline_recall']:.3f} for the "
        f"best baseline ({q['best_baseline']}), {q['targets']} targets; by kind: {kinds}"
    )


def isolated_settings(settings: Settings, name: str, run_dir: Path) -> Settings:
    """A copy of `settings` with topics, consumer groups, table directory and Redis keys of its
    own, so that an earlier run's data never leaks into this one (and this one's into the next),
    the local broker's group timings, and no history page (a benchmark runs several stream
    workers on this machine, which would all claim its port)."""
    return override(
        settings,
        kafka=LOCAL_BROKER_TIMINGS,
        topics={"prefix": f"adcast.{name}."},
        stream={"app_id": f"adcast-{name}", "data_dir": str(run_dir / "stream-data"), "web_port": 0},
        infer={"group_id": f"adcast-{name}-infer"},
        redis={"key_prefix": f"adcast:{name}:aff:", "ttl_seconds": 3600},
    )


def with_inspector(settings: Settings) -> tuple[Settings, dict[str, int]]:
    """The settings with the stream worker's history page on a free port and `adcast serve` (on
    serve.port when it is free) reading it and both workers' metrics; returns the workers' metrics
    ports too. The inspector then shows everything the demo runs."""
    metrics = {"stream": free_port(), "infer": free_port()}
    web = free_port()
    with socket.socket() as s:
        port = settings.serve.port if s.connect_ex(("127.0.0.1", settings.serve.port)) else free_port()
    urls = ",".join(f"http://127.0.0.1:{p}/metrics" for p in metrics.values())
    settings = override(
        settings,
        stream={"web_port": web, "web_host": "127.0.0.1", "web_bind": "127.0.0.1"},
        serve={"port": port, "history_url": f"http://127.0.0.1:{web}", "worker_metrics_urls": urls},
    )
    return settings, metrics


def start_pipeline(settings: Settings, metrics: dict[str, int], logs: Path, workers: list[WorkerProcess]) -> None:
    """Both tiers' workers and `adcast serve`, into `workers` as they start (the caller stops
    them), then ready; a serve that does not start is reported and left out."""
    env = to_env(settings)
    for tier, port in metrics.items():
        workers.append(start_worker(tier, {**env, "ADCAST_METRICS_PORT": str(port)}, logs / f"{tier}.log"))
    serve = start_worker("serve", env, logs / "serve.log")
    workers.append(serve)
    for w in workers[:-1]:
        w.wait_ready()
    try:
        serve.wait_ready(30)
    except ServiceError as exc:
        print(f"the inspector did not start, the demo goes on without it: {exc}")
        serve.stop()
        workers.remove(serve)


def _print_inspector(settings: Settings, user: str, workers: list[WorkerProcess], keep_running: bool) -> None:
    if not any(w.tier == "serve" for w in workers):
        return
    host = "127.0.0.1" if settings.serve.host in ("0.0.0.0", "::") else settings.serve.host
    url = f"http://{host}:{settings.serve.port}/ui"
    print(f"inspector: {url}?user_id={user}  (fleet view: {url}?view=fleet)")
    if settings.serve.token is not None:
        print("  serve.token is set: add &token=<serve.token> to the address once")
    if keep_running:
        pids = " ".join(str(w.proc.pid) for w in workers)
        print(f"left running (--keep): stop the workers and the inspector with `kill {pids}`; services: `adcast down`")
    else:
        print("  it stops with the demo; `adcast demo --keep` (make demo DEMO_ARGS=--keep) leaves it running")


def _replay_slice(world: Path, out: Path, max_events: int) -> Path:
    """The world's newest `max_events` events, with their users' profiles."""
    events = sorted(read_records(world, "events"), key=lambda e: e["event_time"])[-max_events:]
    users = {e["user_id"] for e in events}
    write_records(out, "events", events)
    write_records(out, "profiles", [p for p in read_records(world, "profiles") if p["user_id"] in users])
    write_records(out, "advertisers", read_records(world, "advertisers"))
    return out


def wait_for_versions(
    client: AffinityClient, expected: dict[str, int], timeout_s: float
) -> dict[str, StoredAffinities]:
    """Poll Redis until every user's stored version reached the expected one (or time runs out)."""
    deadline = time.monotonic() + timeout_s
    users = sorted(expected)
    while True:
        found = client.get_many(users)
        done = {u: a for u, a in found.items() if a is not None and a.version >= expected[u]}
        if len(done) == len(users) or time.monotonic() > deadline:
            return done
        time.sleep(0.5)


DEMO_SETTLE_MS = 3000


def run_demo(settings: Settings, users: int, replay_events: int, rate: float, keep_running: bool) -> int:
    from adcast.kafka import create_topics
    from adcast.replay import expected_versions, replay

    home = Path(settings.home).resolve()
    run_id = time.strftime("%Y%m%d-%H%M%S")
    settings = isolated_settings(settings, f"demo-{run_id}", home / "runs" / run_id)
    # The replay is short: its users' skipped last changes are scored seconds after it, not minutes.
    settings = override(settings, stream={"settle_ms": DEMO_SETTLE_MS})

    started_services = []
    workers: list[WorkerProcess] = []
    t0 = time.monotonic()
    try:
        for service in local_services(settings):
            if service.start():
                started_services.append(service)
        create_topics(settings)
        world = ensure_world(home, users)
        settings = override(settings, infer={"model_dir": str(ensure_model(home, world))})
        replay_dir = _replay_slice(world, home / "runs" / run_id / "replay", replay_events)

        settings, metrics_ports = with_inspector(settings)
        logs = home / "runs" / run_id
        print(f"starting the stream and inference workers and the inspector (logs in {logs})")
        start_pipeline(settings, metrics_ports, logs, workers)
        summary = replay(settings, replay_dir, rate=rate, live=True, collect=True)
        print(f"replayed {summary.events} events live at {rate:.0f}/s in {summary.seconds:.1f}s")
        expected = expected_versions(summary.delivered)
        client = AffinityClient(settings.redis)
        try:
            done = wait_for_versions(client, expected, timeout_s=120)
        finally:
            client.close()
        if len(done) < len(expected):
            raise ServiceError(
                f"only {len(done)} of {len(expected)} users caught up within 120s; see the logs in {logs}"
            )
        _print_report(replay_dir, done)
        print(f"demo finished in {time.monotonic() - t0:.0f}s")
        _print_inspector(settings, sorted(done)[0], workers, keep_running)
        return 0
    finally:
        if not keep_running:
            for w in workers:
                w.stop()
            for service in started_services:
                service.stop()


def _print_report(replay_dir: Path, done: dict[str, StoredAffinities]) -> None:
    names = {a["advertiser_id"]: a["name"] for a in read_records(replay_dir, "advertisers")}
    events: dict[str, list[dict[str, object]]] = {}
    for e in read_records(replay_dir, "events"):
        if e["event_type"] != "impression":
            events.setdefault(e["user_id"], []).append(e)
    print()
    print(f"{'user':<8} {'latest events (oldest first)':<58} top-5 advertisers read back from Redis")
    for user in sorted(done)[:5]:
        recent = events.get(user, [])[-5:]
        lines = [
            f"{e['event_type']} {names.get(str(e['advertiser_id']), '') or (e['text'] or '')}"[:56] for e in recent
        ]
        tops = [f"{names.get(a, a)} ({a}) {p:.3f}" for a, p in done[user].top[:5]]
        for i in range(max(len(lines), len(tops))):
            left = lines[i] if i < len(lines) else ""
            right = tops[i] if i < len(tops) else ""
            print(f"{user if i == 0 else '':<8} {left:<58} {right}")
        print()
    fresh = [(a.computed_at - a.newest_event_time) / 1000 for a in done.values()]
    print(
        f"freshness, newest event -> Redis write, over {len(fresh)} users: "
        f"p50 {percentile(fresh, 50):.2f}s  p99 {percentile(fresh, 99):.2f}s"
    )
