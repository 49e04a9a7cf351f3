"""The import commands: `adcast import-taobao` and `adcast import-completejourney`, each a public
data set converted to the interchange format."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from adcast.commands import AddCommand
from adcast.config import Settings

# The command line's add(name, fn, help) -> the subcommand's parser (adcast.cli).


def _write_world(out: str, world: dict[str, list[dict[str, Any]]]) -> None:
    from adcast.data.files import write_records

    for kind, records in world.items():
        print(f"{out}/{kind}.jsonl: {write_records(out, kind, records)} records")


def cmd_import_taobao(args: argparse.Namespace, settings: Settings) -> int:
    from adcast.data import taobao

    world = taobao.load(args.path, targets=args.targets)
    _write_world(args.out, world)
    return 0


def cmd_import_completejourney(args: argparse.Namespace, settings: Settings) -> int:
    from adcast.data import completejourney as cj

    options = cj.ImportOptions(
        sources=frozenset(s for s in cj.SOURCES if getattr(args, s)),
        drop_manufacturers=frozenset(m.strip() for m in (args.drop_manufacturer or "").split(",") if m.strip()),
        per_campaign=args.per_campaign,
        per_week=args.per_week,
        timezone=args.timezone,
    )
    world = cj.load(args.path, options, progress=not args.quiet)
    _write_world(args.out, world)
    kinds = Counter(e["event_type"] for e in world["events"])
    print("events by type: " + ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items())))
    return 0


def add_import_commands(add: AddCommand) -> None:
    tb = add(
        "import-taobao",
        cmd_import_taobao,
        "convert a Taobao display-ad sample (taobao_test_data or the alimama sample) to the interchange format",
    )
    tb.add_argument("path", help="the sample file (CSV; the format is detected from its width)")
    tb.add_argument("--out", required=True, help="output data directory")
    tb.add_argument(
        "--targets",
        choices=["shown", "clicked"],
        default="shown",
        help="which rows' advertisers are targets: every shown ad (default) or clicked ones only",
    )

    _add_completejourney_command(add)


def _add_completejourney_command(add: AddCommand) -> None:
    from adcast.data import completejourney as cj

    cj_help = (
        "convert dunnhumby's Complete Journey (households, purchases, the marketing they saw) to the interchange format"
    )
    c = add("import-completejourney", cmd_import_completejourney, cj_help)
    c.add_argument("path", help="the folder of its CSV files (transactions, products, campaigns, coupons, ...)")
    c.add_argument("--out", required=True, help="output data directory")
    d = cj.ImportOptions()
    helps = {
        "campaigns": "campaigns received, as impressions",
        "displays": "displays and mailers where the household shopped, as impressions",
        "redemptions": "coupon redemptions, as clicks",
    }
    for source in cj.SOURCES:
        on = source in d.sources
        c.add_argument(
            f"--{source}",
            action=argparse.BooleanOptionalAction,
            default=on,
            help=f"{helps[source]} (default: {'on' if on else 'off'})",
        )
    c.add_argument(
        "--drop-manufacturer", metavar="ID[,ID]", help="leave these manufacturers out (69 is the retailer's own label)"
    )
    c.add_argument(
        "--per-campaign",
        type=int,
        default=d.per_campaign,
        help="manufacturers shown per campaign received (default: %(default)s)",
    )
    c.add_argument(
        "--per-week",
        type=int,
        default=d.per_week,
        help="manufacturers shown per household and week (default: %(default)s)",
    )
    c.add_argument(
        "--timezone", default=d.timezone, help="the IANA zone of the files' local times (default: %(default)s)"
    )
    c.add_argument("--quiet", action="store_true", help="no progress bars")
