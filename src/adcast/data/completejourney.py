"""Loader for dunnhumby's "The Complete Journey" (CC0): a retailer's households, their purchases and
the marketing they saw, as a world in the interchange format.

- A household is a user (its id); its demographics, where it has any, become profile attributes.
- A manufacturer is an advertiser (`m<manufacturer_id>`). The data has no names, so each is named
  "manufacturer <id>"; its category is the product category most of its catalogue products have.
- A purchase line is a `checkout` of the product's manufacturer at the line's time, with the
  product category, the brand (National / Private) and "department product type" as text.
- The marketing becomes what the household was shown, each source behind its own switch (all
  off by default: on this sample none raised the model's recall; docs/model-quality.md):
  - `campaigns`: a campaign the household received is an impression, at the campaign's start, of
    each of the manufacturers its coupons cover most (the most-covered first, `per_campaign` at most);
  - `displays`: in-store display and weekly-mailer placements in the stores and weeks where the
    household shopped are impressions of the placed products' manufacturers (the most-placed first,
    `per_week` at most), a second before its first purchase line of that week;
  - `redemptions`: a redeemed coupon is a `click` on the manufacturer its products mostly belong
    to, at the end of the redemption's day. A redemption is the household acting on the ad
    itself, as a click is on a display ad; the purchase it came with is already a checkout, and
    the end of the day keeps the click from announcing that same day's purchases.

Times: the files hold local wall-clock times without a zone. They are read in `timezone`
(default America/New_York: the data comes from 84.51°, Kroger's analytics company in Cincinnati),
dates at midnight of that zone; every time of the world is epoch milliseconds from there.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adcast.errors import ConfigError

DEFAULT_TIMEZONE = "America/New_York"
SOURCES = ("campaigns", "displays", "redemptions")
DAY_MS = 86_400_000

# file -> the columns read from it (the sample's README lists them all).
COLUMNS = {
    "transactions": ("household_id", "store_id", "product_id", "week", "transaction_timestamp"),
    "products": ("product_id", "manufacturer_id", "department", "brand", "product_category", "product_type"),
    "demographics": ("household_id",),
    "campaigns": ("campaign_id", "household_id"),
    "campaign_descriptions": ("campaign_id", "campaign_type", "start_date"),
    "coupons": ("coupon_upc", "product_id", "campaign_id"),
    "coupon_redemptions": ("household_id", "coupon_upc", "redemption_date"),
    "promotions": ("product_id", "store_id", "display_location", "mailer_location", "week"),
}
NEEDS = {
    "campaigns": ("campaigns", "campaign_descriptions", "coupons"),
    "displays": ("promotions",),
    "redemptions": ("coupon_redemptions", "coupons"),
}


@dataclass(frozen=True)
class ImportOptions:
    sources: frozenset[str] = frozenset()
    drop_manufacturers: frozenset[str] = frozenset()
    per_campaign: int = 5
    per_week: int = 5
    timezone: str = DEFAULT_TIMEZONE

    def __post_init__(self) -> None:
        unknown = sorted(self.sources - set(SOURCES))
        if unknown:
            raise ConfigError(f"unknown exposure source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
        if self.per_campaign < 1 or self.per_week < 1:
            raise ConfigError("--per-campaign and --per-week must be 1 or more")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"--timezone {self.timezone!r} is not an IANA time zone (e.g. America/Chicago)") from exc


@dataclass
class _Catalog:
    manufacturer: dict[str, str] = field(default_factory=dict)  # product -> advertiser id
    product: dict[str, dict[str, str]] = field(default_factory=dict)  # product -> its row
    category: dict[str, str] = field(default_factory=dict)  # advertiser id -> main category


def find_file(folder: Path, name: str) -> Path:
    """`name`.csv, or the sample's `name`_sample.csv."""
    for candidate in (folder / f"{name}.csv", folder / f"{name}_sample.csv"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{folder}: no {name}.csv (or {name}_sample.csv); the Complete Journey files are transactions, products, "
        "demographics, campaigns, campaign_descriptions, coupons, coupon_redemptions and promotions "
        "(a source's files are needed only when it is on)"
    )


def read_csv(folder: Path, name: str, progress: bool = False) -> Iterator[dict[str, str]]:
    """The rows of one file, after checking that it has the columns this loader reads."""
    from tqdm import tqdm

    path = find_file(folder, name)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS[name] if c not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(f"{path}: no column {', '.join(missing)} (found: {', '.join(reader.fieldnames or ())})")
        yield from tqdm(reader, desc=path.name, unit=" rows", disable=not progress, mininterval=0.5, leave=False)


class _Clock:
    def __init__(self, timezone: str) -> None:
        self.zone = ZoneInfo(timezone)

    def at(self, local: str) -> int:
        """Epoch ms of a local 'YYYY-MM-DD[ HH:MM:SS]' in the zone."""
        when = dt.datetime.fromisoformat(local.strip()).replace(tzinfo=self.zone)
        return int(when.timestamp() * 1000)


def _catalog(folder: Path, options: ImportOptions, progress: bool) -> _Catalog:
    catalog = _Catalog()
    categories: dict[str, Counter[str]] = defaultdict(Counter)
    for row in read_csv(folder, "products", progress):
        if row["manufacturer_id"] in options.drop_manufacturers:
            continue
        advertiser = f"m{row['manufacturer_id']}"
        catalog.manufacturer[row["product_id"]] = advertiser
        catalog.product[row["product_id"]] = row
        if row["product_category"].strip():
            categories[advertiser][row["product_category"].strip()] += 1
    for advertiser, counts in categories.items():
        catalog.category[advertiser] = min(counts, key=lambda c: (-counts[c], c))  # ties: by name
    return catalog


def _event(
    event_id: str, user: str, at: int, kind: str, advertiser: str, catalog: _Catalog, **fields: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": user,
        "event_time": at,
        "event_type": kind,
        "advertiser_id": advertiser,
        "item_id": fields.get("item_id"),
        "category": fields.get("category", catalog.category.get(advertiser)),
        "brand": fields.get("brand"),
        "text": fields.get("text"),
    }


def _purchases(folder: Path, catalog: _Catalog, clock: _Clock, progress: bool) -> tuple[list[dict[str, Any]], Any]:
    """Checkout events, and per household the time of its first line in each (store, week)."""
    events: list[dict[str, Any]] = []
    visits: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    for n, row in enumerate(read_csv(folder, "transactions", progress)):
        product = catalog.product.get(row["product_id"])
        if product is None:
            continue  # a dropped manufacturer's product, or one the catalogue lacks
        user, at = row["household_id"], clock.at(row["transaction_timestamp"])
        text = " ".join(p for p in (product["department"].strip(), product["product_type"].strip()) if p).lower()
        events.append(
            _event(
                f"t{n}",
                user,
                at,
                "checkout",
                catalog.manufacturer[row["product_id"]],
                catalog,
                item_id=row["product_id"],
                category=product["product_category"].strip() or None,
                brand=product["brand"].strip() or None,
                text=text or None,
            )
        )
        week = visits[user]
        key = (row["store_id"], row["week"])
        week[key] = min(at, week.get(key, at))
    return events, visits


def _top(counts: Counter[str], n: int) -> list[str]:
    return sorted(counts, key=lambda a: (-counts[a], a))[:n]


def _coverage(folder: Path, catalog: _Catalog, key: str, progress: bool) -> dict[str, Counter[str]]:
    """coupons.csv: per campaign (key="campaign_id") or coupon ("coupon_upc"), products per advertiser."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for row in read_csv(folder, "coupons", progress):
        advertiser = catalog.manufacturer.get(row["product_id"])
        if advertiser is not None:
            out[row[key]][advertiser] += 1
    return out


def _campaign_impressions(
    folder: Path, catalog: _Catalog, clock: _Clock, users: set[str], options: ImportOptions, progress: bool
) -> Iterator[dict[str, Any]]:
    starts = {r["campaign_id"]: clock.at(r["start_date"]) for r in read_csv(folder, "campaign_descriptions")}
    covered = {
        c: _top(counts, options.per_campaign)
        for c, counts in _coverage(folder, catalog, "campaign_id", progress).items()
    }
    for row in read_csv(folder, "campaigns", progress):
        user, campaign = row["household_id"], row["campaign_id"]
        if user not in users or campaign not in starts:
            continue
        for advertiser in covered.get(campaign, ()):
            yield _event(f"c{campaign}-{user}-{advertiser}", user, starts[campaign], "impression", advertiser, catalog)


def _display_impressions(
    folder: Path,
    catalog: _Catalog,
    visits: dict[str, dict[tuple[str, str], int]],
    options: ImportOptions,
    progress: bool,
) -> Iterator[dict[str, Any]]:
    shopped = {key for stores in visits.values() for key in stores}
    placed: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for row in read_csv(folder, "promotions", progress):
        key = (row["store_id"], row["week"])
        advertiser = catalog.manufacturer.get(row["product_id"])
        if (
            key in shopped
            and advertiser is not None
            and (row["display_location"] != "0" or row["mailer_location"] != "0")
        ):
            placed[key][advertiser] += 1
    for user, stores in visits.items():
        by_week: dict[str, Counter[str]] = defaultdict(Counter)
        first: dict[str, int] = {}
        for (store, week), at in stores.items():
            by_week[week].update(placed.get((store, week), Counter()))
            first[week] = min(at, first.get(week, at))
        for week, counts in by_week.items():
            for advertiser in _top(counts, options.per_week):
                yield _event(
                    f"d{week}-{user}-{advertiser}", user, first[week] - 1000, "impression", advertiser, catalog
                )


def _redemption_clicks(
    folder: Path, catalog: _Catalog, clock: _Clock, users: set[str], progress: bool
) -> Iterator[dict[str, Any]]:
    owners = {
        coupon: _top(counts, 1)[0] for coupon, counts in _coverage(folder, catalog, "coupon_upc", progress).items()
    }
    for n, row in enumerate(read_csv(folder, "coupon_redemptions", progress)):
        advertiser = owners.get(row["coupon_upc"])
        if row["household_id"] in users and advertiser is not None:
            at = clock.at(row["redemption_date"]) + DAY_MS - 1000  # the day's end
            yield _event(f"r{n}", row["household_id"], at, "click", advertiser, catalog, text="coupon redeemed")


def _profiles(folder: Path, users: set[str], at: int) -> list[dict[str, Any]]:
    try:
        rows = list(read_csv(folder, "demographics"))
    except ConfigError:
        return []  # households without demographics have no profile; a missing file means none do
    out = []
    for row in rows:
        if row["household_id"] in users:
            attributes = {k: v.strip() for k, v in row.items() if k != "household_id" and v and v.strip()}
            out.append({"user_id": row["household_id"], "attributes": attributes, "updated_at": at})
    return out


def load(
    folder: str | Path, options: ImportOptions | None = None, progress: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """The world: events (time order), profiles and the advertisers the events name."""
    folder, options = Path(folder), options or ImportOptions()
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; pass the folder that holds the Complete Journey CSV files")
    for source in sorted(options.sources):
        for name in NEEDS[source]:
            find_file(folder, name)  # a missing file is reported before any work
    clock = _Clock(options.timezone)
    catalog = _catalog(folder, options, progress)
    events, visits = _purchases(folder, catalog, clock, progress)
    users = set(visits)
    if "campaigns" in options.sources:
        events += _campaign_impressions(folder, catalog, clock, users, options, progress)
    if "displays" in options.sources:
        events += _display_impressions(folder, catalog, visits, options, progress)
    if "redemptions" in options.sources:
        events += _redemption_clicks(folder, catalog, clock, users, progress)
    # Time order; at one time, what was shown comes before what was done.
    events.sort(key=lambda e: (e["event_time"], e["event_type"] != "impression"))
    named = sorted({e["advertiser_id"] for e in events}, key=lambda a: int(a[1:]))
    advertisers = [
        {"advertiser_id": a, "name": f"manufacturer {a[1:]}", "category": catalog.category.get(a)} for a in named
    ]
    start = events[0]["event_time"] if events else 0
    return {"events": events, "profiles": _profiles(folder, users, start), "advertisers": advertisers}
