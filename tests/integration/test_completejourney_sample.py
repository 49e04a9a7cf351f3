"""`adcast import-completejourney` on the real Complete Journey sample, when it is present:
COMPLETEJOURNEY_SAMPLE_DIR names its folder (.ci/run sets it where the sample sits beside the
checkout). Every figure is counted from the CSV files here, independently of the importer."""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adcast.core.clock import now_ms
from adcast.core.events import validate_event
from adcast.data.completejourney import SOURCES, ImportOptions, load

SAMPLE = Path(os.environ.get("COMPLETEJOURNEY_SAMPLE_DIR", "completejourney-sample-not-set"))
pytestmark = pytest.mark.skipif(
    not SAMPLE.is_dir(), reason="set COMPLETEJOURNEY_SAMPLE_DIR to the folder of the Complete Journey sample"
)


def rows(name: str) -> list[dict[str, str]]:
    with (SAMPLE / f"{name}.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def lines() -> list[tuple[str, str]]:
    """(household, manufacturer) of every purchase line whose product names a manufacturer."""
    maker = {p["product_id"]: p["manufacturer_id"] for p in rows("products") if p["manufacturer_id"] not in ("", "NA")}
    return [
        (t["household_id"], maker[t["product_id"]]) for t in rows("transactions_sample") if t["product_id"] in maker
    ]


def test_purchases_become_one_checkout_per_line_in_the_sample_year(lines):
    world = load(SAMPLE)
    events = world["events"]
    assert len(events) == len(lines) > 70_000
    assert Counter(e["event_type"] for e in events) == {"checkout": len(lines)}
    assert Counter((e["user_id"], e["advertiser_id"]) for e in events) == Counter((h, f"m{m}") for h, m in lines)
    assert {a["advertiser_id"] for a in world["advertisers"]} == {f"m{m}" for _, m in lines}
    assert len({e["user_id"] for e in events}) == len({h for h, _ in lines}) > 2_000
    assert len(world["profiles"]) == len(rows("demographics"))
    for e in events[:: len(events) // 500]:
        validate_event(e, now_ms())  # the stream tier takes every event
        year = dt.datetime.fromtimestamp(e["event_time"] / 1000, ZoneInfo("America/New_York")).year
        assert year == 2017


def test_every_exposure_source_adds_its_events_and_dropping_the_own_label_removes_all_of_it(lines):
    world = load(SAMPLE, ImportOptions(sources=frozenset(SOURCES), drop_manufacturers=frozenset({"69"})))
    kinds = Counter(e["event_type"] for e in world["events"])
    assert kinds["checkout"] == sum(m != "69" for _, m in lines)
    assert 0 < kinds["click"] <= len(rows("coupon_redemptions"))
    assert kinds["impression"] > kinds["click"]
    assert "m69" not in {e["advertiser_id"] for e in world["events"]}
    times = [e["event_time"] for e in world["events"]]
    assert times == sorted(times)
