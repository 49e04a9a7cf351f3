"""`adcast bench …`: commands that measure and print figures (and one JSON object with --json).

Each benchmark is a module here with add_arguments(parser), bench_<name>(args, settings) and
format_report(report); the command line imports a benchmark's module only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from adcast.config import Settings
from adcast.errors import require

# name -> (help, module the benchmark needs beyond the base install, or None)
BENCHMARKS: dict[str, tuple[str, str | None]] = {
    "predict": ("engine throughput: predictions/s, prefill tokens/s, batch latency", "torch"),
    "prefix-cache": ("vLLM with and without prefix caching on users' successive prompts", "vllm"),
    "ingest": ("stream-tier events/s beside Faust's and aiokafka's ceilings, same topic", None),
    "e2e": ("the whole pipeline under a live load: freshness, predictions/event, batches, lag", "torch"),
    "rollout": ("live freshness before and during a rollout that re-scores everyone into a new slot", "torch"),
    "lookup": ("read latency p50/p99: raw redis-py, sync and async clients, HTTP service", None),
    "state-size": ("serialized bytes of the stream tier's per-user history vs its bound", None),
}


def _bench_module(name: str) -> Any:

    return importlib.import_module(f"adcast.bench.{name.replace('-', '_')}")


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Each benchmark module has add_arguments, bench_<name>(args, settings) and format_report."""
    needs = BENCHMARKS[args.benchmark][1]
    if needs:
        require(needs, "infer-cpu")
    module = _bench_module(args.benchmark)
    report = getattr(module, f"bench_{args.benchmark.replace('-', '_')}")(args, settings)
    print(json.dumps(report) if args.json else module.format_report(report))
    return int(getattr(module, "exit_code", lambda r: 0)(report))


def add_bench_commands(sub: Any, wanted: str | None) -> None:
    """`adcast bench …`: one subcommand per benchmark; each prints figures, and JSON with --json.
    Only the benchmark being run (`wanted`) is imported, to add its arguments and description: a
    benchmark module may import a tier's engine."""
    for name, (help, _) in BENCHMARKS.items():
        module = _bench_module(name) if name == wanted else None
        p = sub.add_parser(
            name,
            help=help,
            description=module.__doc__ if module else help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if module is not None:
            module.add_arguments(p)
        p.set_defaults(fn=cmd_bench)


def benchmark_in(argv: list[str]) -> str | None:
    """The benchmark `adcast bench NAME …` names in argv, if any."""
    if "bench" in argv:
        rest = argv[argv.index("bench") + 1 :]
        return next((a for a in rest if not a.startswith("-")), None)
    return None
