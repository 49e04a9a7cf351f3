"""The lifecycle commands: `adcast slots`, `rollout`, `promote`, `retire`, `compare`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from adcast.commands import AddCommand
from adcast.config import Settings
from adcast.core.clock import now_ms
from adcast.errors import ConfigError


def cmd_slots(args: argparse.Namespace, settings: Settings) -> int:
    from adcast.store import SlotAdmin

    with SlotAdmin(settings.redis) as admin:
        p = admin.pointer()
        now = now_ms()
        slots = sorted({*p.writers, *(s for s in (p.live, p.candidate, p.previous) if s)})
        out: dict[str, Any] = {"live": p.live, "candidate": p.candidate, "previous": p.previous, "slots": {}}
        for slot in slots:
            seen = p.writers.get(slot)
            out["slots"][slot] = {
                "keys": admin.count(slot) if args.count else None,
                "writer_seen_s_ago": None if seen is None else round((now - seen) / 1000, 1),
            }
    if args.coverage:
        from adcast.lifecycle.rollout import coverage

        for slot in slots:
            c = coverage(settings, slot)
            out["slots"][slot].update(known_users=c.known, held=c.held, current=c.current, coverage=round(c.ratio, 6))
    print(json.dumps(out, indent=2))
    return 0


def cmd_rollout(args: argparse.Namespace, settings: Settings) -> int:
    from adcast.lifecycle.rollout import rollout, wait_for_coverage

    s = rollout(settings, args.slot, rate=args.rate, restart=args.restart, progress=not args.quiet)
    how = "resumed" if s.resumed else "from the start"
    print(f"rollout {s.slot} ({how}): {s.records:,} state records, {s.requested:,} requests in {s.seconds:.1f} s")
    if args.wait > 0:
        print(wait_for_coverage(settings, args.slot, args.wait))
    return 0


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from adcast.lifecycle.rollout import coverage
    from adcast.store import SlotAdmin

    if not args.force:
        c = coverage(settings, args.slot)
        print(c)
        if c.ratio < args.min_coverage:
            raise ConfigError(
                f"slot {args.slot} covers {c.ratio:.3%} of the known users, under --min-coverage "
                f"{args.min_coverage:.3%}: finish `adcast rollout --slot {args.slot}`, or pass --force"
            )
    with SlotAdmin(settings.redis) as admin:
        was = admin.promote(args.slot)
    print(f"slot {args.slot} is live" + (f"; {was} stays readable as previous until retired" if was else ""))
    return 0


def cmd_retire(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from adcast.store import SlotAdmin

    with SlotAdmin(settings.redis) as admin, tqdm(unit="key", desc=f"retire {args.slot}", disable=args.quiet) as bar:
        deleted = admin.retire(args.slot, rate=args.rate, batch=args.batch, force=args.force, on_batch=bar.update)
    print(f"slot {args.slot} retired: {deleted:,} keys deleted")
    return 0


def cmd_compare(args: argparse.Namespace, settings: Settings) -> int:
    from adcast.lifecycle.compare import compare, format_report

    report = compare(settings, args.a, args.b, k=args.k, sample=args.sample, since_ms=args.since)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def add_lifecycle_commands(add: AddCommand, parse_time: Callable[[str], int]) -> None:
    sl = add("slots", cmd_slots, "the store's model slots: which is live, candidate, previous, and their writers")
    sl.add_argument("--count", action="store_true", help="count each slot's keys (SCAN: a pass over the store)")
    sl.add_argument("--coverage", action="store_true", help="each slot's coverage of the users the stream state knows")

    ro = add(
        "rollout",
        cmd_rollout,
        "re-score every user the stream tier knows into a slot: one request per user from the stream state "
        "(the history changelog) to the rollout topic, scored by that slot's inference workers",
    )
    ro.add_argument("--slot", required=True, help="the slot to fill (its workers run with ADCAST_INFER__SLOT=SLOT)")
    ro.add_argument("--rate", type=float, default=None, metavar="N", help="requests per second (default: unpaced)")
    ro.add_argument("--restart", action="store_true", help="start from the beginning, not the saved position")
    ro.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="S",
        help="then wait up to S seconds for the workers and print the coverage (default: 60; 0: don't)",
    )
    ro.add_argument("--quiet", action="store_true", help="no progress bar")

    pr = add("promote", cmd_promote, "make a slot live for every reader (atomic), once it covers the known users")
    pr.add_argument("slot")
    pr.add_argument(
        "--min-coverage",
        type=float,
        default=0.999,
        metavar="F",
        help="share of the known users the slot must hold (default: 0.999)",
    )
    pr.add_argument("--force", action="store_true", help="promote without checking coverage")

    rt = add("retire", cmd_retire, "delete a slot that is not live (SCAN + UNLINK, paced: Redis keeps serving)")
    rt.add_argument("slot")
    rt.add_argument("--rate", type=float, default=20_000, metavar="N", help="keys deleted per second (default: 20000)")
    rt.add_argument("--batch", type=int, default=500, help="keys per UNLINK (default: 500)")
    rt.add_argument("--force", action="store_true", help="even while a worker of the slot still runs")
    rt.add_argument("--quiet", action="store_true", help="no progress bar")

    cp = add(
        "compare",
        cmd_compare,
        "compare two slots online: top-K agreement, coverage, freshness, and the hit rate of each slot's "
        "predictions on the engagements that followed them",
    )
    cp.add_argument("a")
    cp.add_argument("b")
    cp.add_argument("-k", type=int, default=10, help="top-K cut-off (default: 10)")
    cp.add_argument("--sample", type=int, default=10_000, help="users of slot A compared (default: 10000)")
    cp.add_argument("--since", type=parse_time, default=None, metavar="TIME", help="topics from this time only")
    cp.add_argument("--json", action="store_true", help="print JSON")
