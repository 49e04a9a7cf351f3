"""`adcast import-completejourney` on a hand-made folder in the Complete Journey's layout."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adcast.core.events import validate_event
from adcast.data.completejourney import SOURCES, ImportOptions, load
from adcast.errors import ConfigError

ZONE = ZoneInfo("America/New_York")


def ms(local: str) -> int:
    return int(dt.datetime.fromisoformat(local).replace(tzinfo=ZONE).timestamp() * 1000)


def write(folder: Path, name: str, header: str, *rows: str) -> None:
    with (folder / f"{name}.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header.split(","))
        for row in rows:
            writer.writerow(row.split(","))


@pytest.fixture
def journey(tmp_path: Path) -> Path:
    write(
        tmp_path,
        "products",
        "product_id,manufacturer_id,department,brand,product_category,product_type,package_size",
        "p1,7,GROCERY,National,SOUP,CANNED SOUP,10 OZ",
        "p2,7,GROCERY,National,SOUP,DRY SOUP,",
        "p3,7,GROCERY,National,CRACKERS,SALTINES,",
        "p4,69,GROCERY,Private,SOUP,CANNED SOUP,",
        "p5,9,PRODUCE,National,FRUIT,APPLES,",
        "p6,11,DRUG GM,National,VITAMINS,,",
    )
    write(
        tmp_path,
        "transactions_sample",
        "household_id,store_id,basket_id,product_id,quantity,sales_value,retail_disc,coupon_disc,coupon_match_disc,week,transaction_timestamp",
        "1,s1,b1,p1,1,1.0,0,0,0,5,2017-01-28 19:06:53",
        "1,s1,b1,p4,1,1.0,0,0,0,5,2017-01-28 19:06:53",
        "1,s1,b2,p5,1,1.0,0,0,0,5,2017-01-30 10:00:00",
        "2,s2,b3,p6,1,1.0,0,0,0,6,2017-02-04 09:00:00",
    )
    write(
        tmp_path,
        "demographics",
        "household_id,age,income,home_ownership,marital_status,household_size,household_comp,kids_count",
        "1,45-54,50-74K,Homeowner,,2,2 Adults No Kids,0",
        "3,65+,35-49K,Renter,Married,2,2 Adults No Kids,0",
    )
    write(
        tmp_path,
        "campaign_descriptions",
        "campaign_id,campaign_type,start_date,end_date",
        "c1,Type A,2017-01-20,2017-02-20",
    )
    write(tmp_path, "campaigns", "campaign_id,household_id", "c1,1", "c1,3")
    write(
        tmp_path,
        "coupons",
        "coupon_upc,product_id,campaign_id",
        "u1,p5,c1",
        "u1,p1,c1",
        "u1,p2,c1",
        "u2,p6,c1",
        "u3,p4,c1",
    )
    write(tmp_path, "coupon_redemptions", "household_id,coupon_upc,campaign_id,redemption_date", "1,u1,c1,2017-01-30")
    write(
        tmp_path,
        "promotions_sample",
        "product_id,store_id,display_location,mailer_location,week",
        "p6,s1,3,0,5",
        "p2,s1,0,A,5",
        "p3,s1,0,0,5",
        "p5,s2,3,0,5",
        "p1,s1,3,0,6",
    )
    return tmp_path


def by_type(world: dict, kind: str) -> list[dict]:
    return [e for e in world["events"] if e["event_type"] == kind]


def test_purchases_are_checkouts_of_the_manufacturer_at_local_time(journey):
    world = load(journey, ImportOptions(sources=frozenset()))
    first = by_type(world, "checkout")[0]
    assert first["event_time"] == ms("2017-01-28 19:06:53")  # 00:06:53 UTC the next day
    assert (first["user_id"], first["advertiser_id"], first["item_id"]) == ("1", "m7", "p1")
    assert (first["category"], first["brand"], first["text"]) == ("SOUP", "National", "grocery canned soup")
    assert [e["event_type"] for e in world["events"]] == ["checkout"] * 4
    ads = {a["advertiser_id"]: a for a in world["advertisers"]}
    assert ads["m7"] == {"advertiser_id": "m7", "name": "manufacturer 7", "category": "SOUP"}  # 2 of its 3 products
    assert ads["m11"]["category"] == "VITAMINS"
    now = max(e["event_time"] for e in world["events"])
    for e in world["events"]:
        validate_event(e, now)  # the stream tier takes every event


def test_campaigns_show_the_most_covered_manufacturers_at_the_start_to_buying_households(journey):
    world = load(journey, ImportOptions(sources=frozenset({"campaigns"}), per_campaign=2))
    shown = by_type(world, "impression")
    # c1's coupons cover m7 twice, m9 and m11 once, m69 once; ties by id; household 3 bought nothing.
    assert [(e["user_id"], e["advertiser_id"], e["event_time"]) for e in shown] == [
        ("1", "m7", ms("2017-01-20 00:00:00")),
        ("1", "m11", ms("2017-01-20 00:00:00")),
    ]


def test_displays_and_mailers_only_where_and_when_the_household_shopped(journey):
    world = load(journey, ImportOptions(sources=frozenset({"displays"})))
    shown = {(e["user_id"], e["advertiser_id"], e["event_time"]) for e in by_type(world, "impression")}
    week5 = ms("2017-01-28 19:06:53") - 1000  # a second before the household's first line that week
    # s1 in week 5: a display of p6 (m11) and a mailer of p2 (m7); p3 was placed nowhere; s2's
    # week-5 display and s1's week-6 one are in a store or week household 1 did not shop.
    assert shown == {("1", "m11", week5), ("1", "m7", week5)}


def test_a_redemption_is_a_click_on_the_coupons_manufacturer_at_the_end_of_its_day(journey):
    world = load(journey, ImportOptions(sources=frozenset({"redemptions"})))
    (click,) = by_type(world, "click")
    assert (click["user_id"], click["advertiser_id"]) == ("1", "m7")  # u1 covers m7 twice, m9 once
    assert click["event_time"] == ms("2017-01-30 23:59:59")


def test_a_dropped_manufacturer_leaves_no_line_exposure_or_record(journey):
    world = load(journey, ImportOptions(sources=frozenset(SOURCES), drop_manufacturers=frozenset({"69"})))
    assert all(e["advertiser_id"] != "m69" for e in world["events"])
    assert "m69" not in {a["advertiser_id"] for a in world["advertisers"]}
    assert len(by_type(world, "checkout")) == 3
    kept = load(journey, ImportOptions(sources=frozenset(SOURCES)))
    assert len(by_type(kept, "checkout")) == 4


def test_profiles_for_households_that_bought_events_in_time_order(journey):
    assert {e["event_type"] for e in load(journey)["events"]} == {"checkout"}  # exposures are opt-in
    world = load(journey, ImportOptions(sources=frozenset(SOURCES)))
    assert world["profiles"] == [
        {
            "user_id": "1",
            "attributes": {
                "age": "45-54",
                "income": "50-74K",
                "home_ownership": "Homeowner",
                "household_size": "2",
                "household_comp": "2 Adults No Kids",
                "kids_count": "0",
            },
            "updated_at": world["events"][0]["event_time"],
        }
    ]
    times = [e["event_time"] for e in world["events"]]
    assert times == sorted(times)
    assert len({e["event_id"] for e in world["events"]}) == len(world["events"])


def test_missing_files_and_columns_are_named(journey):
    (journey / "coupons.csv").unlink()
    with pytest.raises(ConfigError, match="coupons.csv"):
        load(journey, ImportOptions(sources=frozenset({"campaigns"})))
    load(journey, ImportOptions(sources=frozenset({"displays"})))  # not needed without campaigns and redemptions
    write(journey, "products", "product_id,department", "p1,GROCERY")
    with pytest.raises(ConfigError, match="no column manufacturer_id"):
        load(journey, ImportOptions(sources=frozenset()))
    with pytest.raises(ConfigError, match="not a folder"):
        load(journey / "absent")


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="tv"):
        ImportOptions(sources=frozenset({"tv"}))
    with pytest.raises(ConfigError, match="IANA"):
        ImportOptions(timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="per-week"):
        ImportOptions(per_week=0)


def test_the_command_writes_a_data_directory_and_says_what_is_missing(journey, tmp_path, capsys):
    from adcast.cli import main
    from adcast.data.files import read_records

    out = tmp_path / "world"
    assert main(["import-completejourney", str(journey), "--out", str(out), "--campaigns", "--quiet"]) == 0
    kinds = {e["event_type"] for e in read_records(out, "events")}
    assert kinds == {"checkout", "impression"}
    assert "events by type: checkout 4, impression 4" in capsys.readouterr().out
    assert main(["import-completejourney", str(journey), "--out", str(out), "--quiet"]) == 0
    assert {e["event_type"] for e in read_records(out, "events")} == {"checkout"}
    (journey / "promotions_sample.csv").unlink()
    assert main(["import-completejourney", str(journey), "--out", str(out), "--displays", "--quiet"]) == 2
    assert "promotions.csv" in capsys.readouterr().err
