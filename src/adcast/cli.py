"""The `adcast` command line. Each subcommand imports its tier's modules only when it runs, so
the stream tier's environment serves `adcast stream` and the inference tier's serves `adcast
infer`, `adcast train` and the demo; a missing extra is named with the command to install it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from adcast.bench import add_bench_commands, benchmark_in
from adcast.commands import AddCommand
from adcast.config import Settings, load_settings, masked
from adcast.data.cli import add_import_commands
from adcast.errors import AdcastError, ConfigError, require
from adcast.evaluate_cli import add_eval_command
from adcast.lifecycle.cli import add_lifecycle_commands
from adcast.train.cli import add_model_commands

log = logging.getLogger("adcast")


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(masked(settings), indent=2))
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from adcast.kafka import create_topics
    from adcast.local.services import local_services, write_local_settings

    broker, redis = local_services(settings)
    for service in (broker, redis):
        started = service.start()
        print(
            f"{service.name}: {'started' if started else 'already running'} on 127.0.0.1:{service.port} "
            f"(pid {service.pid()}, log {service.log_file})"
        )
    created = create_topics(settings)
    print(f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else " (all present)"))
    local = write_local_settings(Path(settings.home))
    print(f"settings: the local broker's consumer-group timings in {local}, read by every adcast command here")
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    from adcast.local.services import local_services, remove_local_settings

    for service in local_services(settings):
        print(f"{service.name}: {'stopped' if service.stop() else 'not running'}")
    remove_local_settings(Path(settings.home))
    return 0


def cmd_stream(args: argparse.Namespace, settings: Settings) -> int:
    require("faust", "stream")
    from stream.worker import run

    run(settings, loglevel=args.log_level, count_only=args.count_only)
    return 0


def cmd_infer(args: argparse.Namespace, settings: Settings) -> int:
    require("torch", "infer-cpu")
    from adcast.inference.worker import run

    run(settings)
    return 0


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from adcast.data.families import generate_family
    from adcast.data.files import write_records

    world = generate_family(args.family, args.users, args.advertisers, args.days, args.seed)
    for kind, records in world.items():
        n = write_records(args.out, kind, records)
        print(f"{args.out}/{kind}.jsonl: {n} records")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from adcast.replay import TopicRange, format_summary, replay, replay_topic

    if (args.data is None) == (args.from_topic is None):
        raise ConfigError("replay needs either a data directory or --from-topic TOPIC")
    bounds = (args.start_offset, args.end_offset, args.start_time, args.end_time)
    pacing = {"rate": args.rate, "speedup": args.speedup, "live": args.live, "limit": args.limit}
    if args.from_topic is None:
        if any(b is not None for b in bounds):
            raise ConfigError("--start-offset/--end-offset/--start-time/--end-time need --from-topic")
        s = replay(settings, args.data, progress=not args.quiet, to_topic=args.to_topic, **pacing)
    else:
        s = replay_topic(
            settings, args.from_topic, TopicRange(*bounds), to_topic=args.to_topic, progress=not args.quiet, **pacing
        )
    print(format_summary(s))
    return 0


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    require("torch", "infer-cpu")
    from adcast.backfill import backfill, format_summary

    s = backfill(
        settings, args.data, batch=args.batch, limit_users=args.limit_users, progress=not args.quiet, slot=args.slot
    )
    print(format_summary(s))
    return 0


def cmd_lookup(args: argparse.Namespace, settings: Settings) -> int:
    from collections.abc import Mapping

    from adcast.core.clock import now_ms
    from adcast.lookup_table import Label, lookup_table
    from adcast.store import AffinityClient

    client = AffinityClient(settings.redis, args.slot)
    try:
        found = client.get_many(args.user_ids)
    finally:
        client.close()
    if not args.json:
        names: Mapping[str, Label] = {}
        if not args.no_names:
            from adcast.kafka.advertiser_names import read_advertiser_names

            try:
                names = read_advertiser_names(settings, timeout_s=5.0)
            except AdcastError as exc:  # names are a convenience: the lookup itself goes on
                print(f"adcast: warning: no advertiser names, showing ids: {exc}; or pass --no-names", file=sys.stderr)
        print(lookup_table(found, names, now_ms(), args.k))
        return 0
    out = {
        u: (
            None
            if a is None
            else {
                "version": a.version,
                "model_version": a.model_version,
                "computed_at": a.computed_at,
                "newest_event_time": a.newest_event_time,
                "top": [list(x) for x in a.top[: args.k]],
            }
        )
        for u, a in found.items()
    }
    print(json.dumps(out, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from adcast.serve import run

    run(settings, host=args.host, port=args.port)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    require("torch", "infer-cpu")
    from adcast.local.demo import run_demo

    return run_demo(settings, users=args.users, replay_events=args.events, rate=args.rate, keep_running=args.keep)


def _time(text: str) -> int:
    from adcast.replay import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _rate(text: str) -> float:
    value = text.strip().removesuffix("/s")
    try:
        rate = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate; give events per second, e.g. 400 or 400/s") from exc
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"rate must be positive, got {text!r}")
    return rate


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line; `argv` (default: sys.argv) says which benchmark, if any, to load."""
    p = argparse.ArgumentParser(
        prog="adcast",
        description="Keep an LLM's forecast of which advertisers each user engages with next fresh in Redis. "
        "Settings come from ADCAST_* environment variables and adcast.toml (see `adcast config`).",
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("ADCAST_LOG_LEVEL", "info"),
        help="debug, info, warning or error (default: info)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace, Settings], int], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    # In this order: `adcast --help` lists the commands as they are added.
    _add_tier_commands(add)
    _add_data_commands(add)
    _add_replay_command(add)
    _add_backfill_command(add)
    add_model_commands(add)
    add_lifecycle_commands(add, _time)
    add_eval_command(add)
    _add_reading_commands(add)

    b = sub.add_parser("bench", help="benchmarks that print figures (and JSON with --json)")
    wanted = benchmark_in(sys.argv[1:] if argv is None else argv)
    add_bench_commands(b.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK"), wanted)

    d = add("demo", cmd_demo, "the whole path on local services: train (cached), both tiers, replay, read back")
    d.add_argument("--users", type=int, default=2000, help="users in the synthetic world")
    d.add_argument("--events", type=int, default=5000, help="events to replay live")
    d.add_argument("--rate", type=float, default=400.0, help="replay rate, events per second")
    d.add_argument("--keep", action="store_true", help="leave services and workers running")
    return p


def _add_tier_commands(add: AddCommand) -> None:
    add("config", cmd_config, "print the effective settings (secrets masked)")
    add("up", cmd_up, "start the local broker (Tansu) and redis-server, and create the topics")
    add("down", cmd_down, "stop the local broker and redis-server")
    st = add("stream", cmd_stream, "run a stream-tier worker (Faust; needs the 'stream' extra)")
    st.add_argument(
        "--count-only",
        action="store_true",
        help="only count the events topic's messages, in the same batches: Faust's ceiling (adcast bench ingest)",
    )
    add("infer", cmd_infer, "run an inference-tier worker (needs the 'infer-cpu' or 'infer-gpu' extra)")


def _add_data_commands(add: AddCommand) -> None:
    g = add("generate", cmd_generate, "write a synthetic world in the interchange format")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--users", type=int, default=2000, help="users in the world (default: 2000)")
    families = "sessions (default) or marketplace; README, 'Data', lists each family's assumptions"
    g.add_argument("--family", choices=("sessions", "marketplace"), default="sessions", help=families)
    g.add_argument("--advertisers", type=int, help="catalog size (default: 200 sessions, 1000 marketplace)")
    g.add_argument("--days", type=int, default=30, help="days the events span (default: 30)")
    g.add_argument(
        "--seed", type=int, default=7, help="random seed; the defaults give the world the README's figures use (7)"
    )
    add_import_commands(add)


def _add_replay_command(add: AddCommand) -> None:
    r = add(
        "replay",
        cmd_replay,
        "produce a data directory to the topics (profiles, advertisers, then events), or copy a range of a topic",
    )
    r.add_argument("data", nargs="?", help="data directory (events.jsonl, advertisers.jsonl, profiles.jsonl)")
    r.add_argument("--from-topic", metavar="TOPIC", help="copy events from this topic (full name) instead")
    r.add_argument("--to-topic", metavar="TOPIC", help="destination of the events (default: the events topic)")
    offsets = r.add_argument_group("topic range by offset, per partition: [start, end)")
    offsets.add_argument("--start-offset", type=int, metavar="N", help="first offset (default: the beginning)")
    offsets.add_argument("--end-offset", type=int, metavar="N", help="stop before this offset (default: the end)")
    times = r.add_argument_group(
        "topic range by Kafka record timestamp (not event_time): [start, end), ISO-8601 (UTC if no zone) or epoch ms"
    )
    times.add_argument("--start-time", type=_time, metavar="TIME", help="first record at or after this time")
    times.add_argument("--end-time", type=_time, metavar="TIME", help="stop at the first record at or after it")
    pace = r.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=_rate, metavar="N/s", help="events per second (default: as fast as possible)")
    pace.add_argument("--speedup", type=float, metavar="X", help="X times faster than the original event times")
    r.add_argument("--live", action="store_true", help="stamp events with the time they are produced")
    r.add_argument("--limit", type=int, default=None, help="replay only the first N events")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_backfill_command(add: AddCommand) -> None:
    bf = add(
        "backfill",
        cmd_backfill,
        "score every user once from history files with the serving engine and write Redis (versioned; "
        "live predictions always win)",
    )
    bf.add_argument("--data", required=True, help="data directory in the interchange format")
    bf.add_argument("--batch", type=int, default=256, help="prompts per engine call (default: 256)")
    bf.add_argument("--limit-users", type=int, default=None, metavar="N", help="only the first N users by user id")
    bf.add_argument("--slot", default=None, help="the store slot to fill (default: infer.slot)")
    bf.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_reading_commands(add: AddCommand) -> None:
    lk = add("lookup", cmd_lookup, "read users' affinities from Redis, as a table with advertiser names")
    lk.add_argument("user_ids", nargs="+", metavar="USER", help="user ids")
    lk.add_argument("-k", type=int, default=10, help="advertisers to show per user")
    lk.add_argument("--slot", default=None, help="read this model slot (default: the live one)")
    lk.add_argument("--json", action="store_true", help="print JSON: [advertiser_id, probability] pairs, no names")
    lk.add_argument("--no-names", action="store_true", help="show advertiser ids without reading the advertisers topic")

    sv = add("serve", cmd_serve, "HTTP lookup service: GET /v1/affinities, /healthz, /metrics, /openapi.json")
    sv.add_argument("--host", default=None, help="listen address (default: serve.host, 127.0.0.1)")
    sv.add_argument("--port", type=int, default=None, help="listen port (default: serve.port, 8080)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        settings = load_settings()
        return int(args.fn(args, settings) or 0)
    except AdcastError as exc:
        print(f"adcast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
