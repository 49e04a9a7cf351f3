"""`adcast eval`: the model against the baselines offline (adcast.evaluate), or online under the
trigger policies (`--online`, adcast.online). Nothing here imports torch until the command runs."""

from __future__ import annotations

import argparse
import json

from adcast.commands import AddCommand
from adcast.config import Settings
from adcast.core.examples import DEFAULT_CUTOFF_FRACTION, DEFAULT_SERVING_DELAY_MS
from adcast.errors import ConfigError, require


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from adcast.evaluate import evaluate, format_table, plot

    if args.model is not None:
        require("torch", "infer-cpu")
    ks = sorted({int(k) for k in args.k.split(",")})
    limits = settings.stream.history_limits()
    delay_ms = round(args.serving_delay * 1000)
    if args.online:
        return _eval_online(args, settings, ks, delay_ms)
    report = evaluate(
        args.data,
        args.model,
        args.cutoff_fraction,
        ks,
        args.engine,
        args.device,
        limits,
        not args.json,
        serving_delay_ms=delay_ms,
    )
    if args.plot:
        plot(report, args.plot)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _milliseconds(text: str, option: str) -> list[int]:
    """A comma-separated list of whole milliseconds, 0 or more, or ConfigError naming the option."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not all(v.isdigit() for v in values):
        raise ConfigError(f"{option} takes whole milliseconds separated by commas, e.g. 2000,5000; got {text!r}")
    return [int(v) for v in values]


def _eval_online(args: argparse.Namespace, settings: Settings, ks: list[int], delay_ms: int) -> int:
    from adcast import online

    if args.model is None:
        raise ConfigError("--online scores the model's predictions: give it one with --model")
    report = online.evaluate_online(
        args.data,
        args.model,
        settings.stream.trigger(),
        args.cutoff_fraction,
        ks,
        args.engine,
        args.device,
        settings.stream.history_limits(),
        delay_ms,
        progress=not args.json,
        shown_intervals=_milliseconds(args.shown_intervals, "--shown-intervals"),
    )
    if args.plot:
        online.plot(report, args.plot)
    print(json.dumps(report, indent=2) if args.json else online.format_table(report))
    return 0


def add_eval_command(add: AddCommand) -> None:
    ev = add("eval", cmd_eval, "Recall@K, NDCG@10 and MRR of the model against popularity, recent and co-occurrence")
    ev.add_argument("--data", required=True, help="data directory in the interchange format")
    ev.add_argument("--model", default=None, help="model directory (omit to evaluate only the baselines)")
    ev.add_argument(
        "--cutoff-fraction",
        type=float,
        default=DEFAULT_CUTOFF_FRACTION,
        help="targets are engagements after this time quantile",
    )
    ev.add_argument("--k", default="1,5,10,50", help="comma-separated cut-offs (default: 1,5,10,50)")
    ev.add_argument("--engine", default="torch", help="scoring engine (default: torch)")
    ev.add_argument("--device", default="cpu", help="cpu or cuda")
    ev.add_argument(
        "--serving-delay",
        type=float,
        default=DEFAULT_SERVING_DELAY_MS / 1000,
        metavar="SECONDS",
        help="events less than this many seconds before an engagement are left out of its prompt; online, "
        "a call's prediction becomes visible this long after it (default: %(default)s)",
    )
    ev.add_argument(
        "--online",
        action="store_true",
        help="replay the evaluation period through the stream tier's fold and trigger policies on the events' "
        "clock and judge each engagement against the prediction visible then: hit@10 and LLM calls per "
        "event of the every_change, engagements and value policies (timings from the stream settings)",
    )
    ev.add_argument(
        "--shown-intervals",
        default="",
        metavar="MS,MS,...",
        help="with --online: also the value policy at each of these intervals for ads shown alone (ms), "
        "the points of the budget curve between the three policies",
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ev.add_argument(
        "--plot",
        default=None,
        metavar="FILE.png",
        help="write Recall@K curves to this PNG (with --online: hit@10 against calls per event, per policy)",
    )
