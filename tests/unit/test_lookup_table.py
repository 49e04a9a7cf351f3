"""`adcast lookup`'s table: names, fallbacks, ages, and text from outside shown, not interpreted."""

import pytest

from adcast.core.affinities import Affinities
from adcast.kafka.advertiser_names import AdvertiserName
from adcast.lookup_table import age_text, lookup_table, percent, safe, utc_text

NOW = 1_780_000_000_000
NAMES = {"a0017": AdvertiserName("Velora", "running"), "a0044": AdvertiserName("Packwell", None)}


def aff(user="u1", top=(("a0017", 0.412304), ("a0102", 0.081221), ("a0044", 0.0002)), et_ago_ms=4_200, version=42):
    return Affinities(user, version, "demo-1", NOW - 1_000, NOW - et_ago_ms, top)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "0.0 s"),
        (0.42, "0.4 s"),
        (4.2, "4.2 s"),
        (42.9, "42 s"),
        (180, "3 min"),
        (7_300, "2 h"),
        (5 * 86400, "5 d"),
    ],
)
def test_age_text_picks_a_unit(seconds, text):
    assert age_text(seconds) == text


def test_names_categories_and_the_fallback_to_the_id():
    out = lookup_table({"u1": aff()}, NAMES, NOW)
    header, columns, first, second, third = out.splitlines()
    assert header == f"u1  version 42  model demo-1  computed {utc_text(NOW - 1_000)}  newest event 4.2 s ago"
    assert columns.split() == ["#", "advertiser", "category", "probability"]
    assert first.split() == ["1", "Velora", "(a0017)", "running", "41.2%"]
    assert second.split() == ["2", "a0102", "-", "8.1%"]  # unknown: the id, no category
    assert third.split() == ["3", "Packwell", "(a0044)", "-", "<0.1%"]
    assert utc_text(NOW) == "2026-05-28 20:26:40 UTC"


def test_users_in_order_one_without_a_prediction_in_one_line_and_k_and_backfill():
    out = lookup_table({"u1": aff(et_ago_ms=3 * 60_000, version=-5), "nobody": None}, NAMES, NOW, k=1)
    first, second = out.split("\n\n")
    assert "version -5 (backfill)" in first and "newest event 3 min ago" in first
    assert len(first.splitlines()) == 3  # header, columns, one row
    assert second == "nobody  no prediction (never scored, expired, or not in this slot)"
    assert lookup_table({}, NAMES, NOW) == ""
    assert lookup_table({"u1": aff(top=())}, {}, NOW).splitlines()[1] == "  no advertisers stored"


def test_percent():
    assert [percent(p) for p in (1.0, 0.0005, 0.0001, 0.0)] == ["100.0%", "0.1%", "<0.1%", "0.0%"]


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Evil\x1b[31mRed", "Evil\\x1b[31mRed"),
        ("two\nlines\r\tand", "two\\nlines\\r\\tand"),
        ("bell\x07\x9b", "bell\\x07\\x9b"),  # C0 and C1 (CSI) controls
        ("\u202eesrever", "\\u202eesrever"),  # a bidirectional override
        ("Café Ünïcode 東京", "Café Ünïcode 東京"),  # printable text stays as it is
    ],
)
def test_text_from_outside_is_escaped(name, shown):
    assert safe(name) == shown
    out = lookup_table({"u\x1b]0;x\x07": aff()}, {"a0017": AdvertiserName(name, "cat\x1b[2J")}, NOW)
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\u202e" not in out
    assert len(out.splitlines()) == 5  # a newline in a name adds no line
    assert shown in out or safe(name, 40) in out


def test_long_names_are_cut():
    assert safe("x" * 100, 40) == "x" * 39 + "…"
    out = lookup_table({"u1": aff()}, {"a0017": AdvertiserName("y" * 500, "z" * 500)}, NOW)
    assert max(len(line) for line in out.splitlines()) < 200
