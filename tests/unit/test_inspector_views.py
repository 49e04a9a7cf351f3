"""The inspector's pure parts (adcast.inspector.views, adcast.scrape, the token check of
adcast.inspector.routes): shaping the user view, the slots' differences, the fleet's figures."""

from __future__ import annotations

import asyncio
import math

import pytest
from aiohttp.test_utils import make_mocked_request

from adcast.core.affinities import Affinities
from adcast.core.slots import SlotPointer
from adcast.errors import BadRequest
from adcast.inspector import views
from adcast.inspector.routes import COOKIE, access, query_of, session_cookie
from adcast.inspector.sources import FleetSampler, _addresses
from adcast.inspector.views import EVENTS_IN
from adcast.kafka.advertiser_names import AdvertiserName
from adcast.scrape import Scrape, histogram_quantile, parse

NOW = 1_800_000_000_000
SCRIPT = "<img src=x onerror=alert(1)>"


def aff(user: str, version: int, top: list[tuple[str, float]], model: str = "m1") -> Affinities:
    return Affinities(user, version, model, NOW - 2_000, NOW - 4_500, tuple(top))


def test_rank_changes_mark_each_advertiser_against_the_base():
    base = ["a", "b", "c", "d"]
    other = ["b", "a", "c", "x"]
    assert views.rank_changes(base, other) == [
        {"change": "up", "base_rank": 2},
        {"change": "down", "base_rank": 1},
        {"change": "same", "base_rank": 3},
        {"change": "new", "base_rank": None},
    ]
    assert views.dropped(base, other) == ["d"]
    assert views.rank_changes(base, base) == [{"change": "same", "base_rank": i + 1} for i in range(4)]


def test_columns_mark_the_other_slots_against_the_one_readers_get():
    live = aff("u1", 7, [("a1", 0.5), ("a2", 0.2), ("a3", 0.1)])
    candidate = aff("u1", 7, [("a2", 0.4), ("a1", 0.3), ("a9", 0.1)], model="m2")
    shown = [("g1", "live"), ("g2", "candidate"), ("g0", "previous")]
    cols = views.columns(shown, {"g1": live, "g2": candidate, "g0": None}, NOW)

    assert [(c["slot"], c["role"], c["base"]) for c in cols] == [
        ("g1", "live", True),
        ("g2", "candidate", False),
        ("g0", "previous", False),
    ]
    base = cols[0]["record"]
    assert (base["version"], base["model_version"], base["age_seconds"], base["computed_seconds_ago"]) == (
        7,
        "m1",
        4.5,  # now - the newest event it reflects
        2.0,
    )
    assert [r["advertiser_id"] for r in base["top"]] == ["a1", "a2", "a3"] and "change" not in base["top"][0]
    other = cols[1]["record"]
    assert [(r["rank"], r["advertiser_id"], r["change"]) for r in other["top"]] == [
        (1, "a2", "up"),
        (2, "a1", "down"),
        (3, "a9", "new"),
    ]
    assert other["dropped"] == ["a3"] and cols[2]["record"] is None


def test_the_previous_slot_is_the_base_when_the_live_one_lacks_the_user():
    previous = aff("u1", 3, [("a1", 0.5)])
    candidate = aff("u1", 4, [("a2", 0.5)])
    shown = [("g2", "live"), ("g3", "candidate"), ("g1", "previous")]
    cols = views.columns(shown, {"g2": None, "g3": candidate, "g1": previous}, NOW)
    assert [c["base"] for c in cols] == [False, False, True]
    assert cols[1]["record"]["top"][0]["change"] == "new"


def test_slots_shown_follow_the_pointer_then_running_shadows():
    pointer = SlotPointer(live="g2", candidate="g3", previous="g1")
    assert views.slots_to_show(pointer, [], ["g3", "g4"]) == [
        ("g2", "live"),
        ("g3", "candidate"),
        ("g1", "previous"),
        ("g4", "shadow"),
    ]
    assert views.slots_to_show(SlotPointer(), [], []) == [("g0", "live")]  # before any pointer: the default slot
    assert views.slots_to_show(pointer, ["g1", "g9", "g1"], []) == [("g1", "previous"), ("g9", "other")]


def test_the_user_view_names_every_advertiser_it_shows_and_passes_text_on_as_data():
    live = aff("u1", 7, [("a1", 0.5), ("a2", 0.2)])
    history = {
        "events": [{"advertiser_id": "a3", "brand": SCRIPT}, {"advertiser_id": None, "text": "shoes"}],
        "shown": [{"advertiser_id": "a4", "category": "bags"}],
        "impressions": [],
        "counters": [{"advertiser_id": "a5", "weight": 1.0}],
        "own": ["a5", "a6"],
        "prompt": "next",
    }
    names = {a: AdvertiserName(f"name of {a}", SCRIPT) for a in ("a1", "a3", "a6", "zz")}
    cols = views.columns([("g0", "live")], {"g0": live}, NOW)
    view = views.user_view("u1", SlotPointer(live="g0"), cols, history, None, names, None, NOW)
    assert sorted(view["names"]) == ["a1", "a3", "a6"]  # those shown, of those known
    assert view["names"]["a3"] == {"name": "name of a3", "category": SCRIPT}
    assert view["history"]["events"][0]["brand"] == SCRIPT
    assert view["pointer"]["live"] == "g0" and view["history_error"] is None


def test_writers_are_running_while_their_heartbeat_is_recent():
    pointer = SlotPointer(live="g1", writers={"g1": NOW - 5_000, "g0": NOW - 600_000})
    view = views.pointer_view(pointer, NOW)
    assert [(w["slot"], w["seconds_ago"], w["running"]) for w in view["writers"]] == [
        ("g0", 600.0, False),
        ("g1", 5.0, True),
    ]


def test_histogram_quantile_interpolates_inside_the_bucket_as_prometheus_does():
    buckets = [(0.5, 10.0), (1.0, 90.0), (2.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.5 + 0.5 * 40 / 80)
    assert histogram_quantile(buckets, 0.99) == pytest.approx(1.0 + 1.0 * 9 / 10)
    assert histogram_quantile(buckets, 0.05) == pytest.approx(0.25)
    assert histogram_quantile([(1.0, 0.0), (math.inf, 3.0)], 0.5) == 1.0  # in +Inf: the highest finite bound
    assert math.isnan(histogram_quantile([(1.0, 0.0), (math.inf, 0.0)], 0.5))
    assert math.isnan(histogram_quantile([], 0.5))


def _worker(events: float, writes: float, fresh: dict[str, float], dead: float = 0.0) -> Scrape:
    lines = [f"adcast_events_in_total {events}", f'adcast_store_writes_total{{slot="g1",outcome="written"}} {writes}']
    for le, n in fresh.items():
        lines.append(f'adcast_freshness_seconds_bucket{{slot="g1",le="{le}"}} {n}')
    lines += [
        f'adcast_freshness_seconds_count{{slot="g1"}} {fresh["+Inf"]}',
        f'adcast_freshness_seconds_sum{{slot="g1"}} {fresh["+Inf"]}',
        f'adcast_dead_letters_total{{stage="validate",reason="bad_event_time"}} {dead}',
        'adcast_consumer_lag{tier="infer",topic="t",partition="0"} 5',  # a gauge: never diffed
    ]
    return parse("\n".join(lines) + "\n")


def test_fleet_figures_are_what_changed_over_the_window_across_workers():
    first = _worker(1000, 100, {"0.5": 50, "1.0": 90, "2.0": 100, "+Inf": 100}, dead=2)
    last = _worker(2000, 250, {"0.5": 50, "1.0": 190, "2.0": 200, "+Inf": 250}, dead=5)
    restarted = _worker(10, 1, {"0.5": 1, "1.0": 1, "2.0": 1, "+Inf": 1})  # its counters went down: from zero
    window = views.merged([views.counters_since(first, last), views.counters_since(first, restarted)])
    figures = views.fleet_figures(window)

    assert (figures["events"], figures["llm_calls"]) == (1010, 151)
    assert figures["llm_calls_per_event"] == round(151 / 1010, 4)
    (g1,) = figures["freshness"]
    assert (g1["slot"], g1["predictions"], g1["llm_calls"]) == ("g1", 151, 151)
    # over the window: 1 in <=0.5 s, 100 in (0.5, 1], none in (1, 2], 50 above 2 s
    assert g1["p50_seconds"] == pytest.approx(0.5 + 0.5 * (75.5 - 1) / 100, abs=1e-4)
    assert g1["p99_seconds"] == 2.0
    assert figures["dead_letters"] == [{"stage": "validate", "reason": "bad_event_time", "count": 3}]
    assert "adcast_consumer_lag" not in window.samples


def test_fleet_figures_of_nothing_say_so():
    figures = views.fleet_figures(Scrape({}))
    assert figures == {"events": 0, "llm_calls": 0, "llm_calls_per_event": None, "freshness": [], "dead_letters": []}


def _request(path: str, headers: dict[str, str] | None = None):
    return make_mocked_request("GET", path, headers=headers or {})


def test_the_token_opens_the_inspector_by_header_cookie_or_the_pages_query():
    token = "s3cret"
    cookie = session_cookie(token)
    assert cookie != token and token not in cookie
    assert access(_request("/ui/api/user"), None, page=False) == (True, False)  # no token set: open
    assert access(_request("/ui/api/user", {"Authorization": "Bearer s3cret"}), token, False) == (True, False)
    assert access(_request("/ui/api/user", {"Cookie": f"{COOKIE}={cookie}"}), token, False) == (True, False)
    assert access(_request("/ui?token=s3cret"), token, page=True) == (True, True)  # answer and set the cookie
    for denied, page in [
        (_request("/ui"), True),
        (_request("/ui?token=wrong"), True),
        (_request("/ui/api/user?token=s3cret"), False),  # the query opens the page only
        (_request("/ui/api/user", {"Authorization": "Bearer wrong"}), False),
        (_request("/ui/api/user", {"Cookie": f"{COOKIE}={token}"}), False),  # the token is not the cookie
        (_request("/ui/api/user", {"Authorization": f"Bearer {cookie}"}), False),  # nor the cookie a token
    ]:
        assert access(denied, token, page) == (False, False), denied.path_qs


def test_the_user_query_takes_one_valid_id_and_valid_slots():
    assert query_of(_request("/ui/api/user?user_id=u1&slots=g1,g2").query) == ("u1", ["g1", "g2"])
    for query, code in [
        ("", "missing_user_id"),
        ("user_id=a&user_id=b", "too_many_users"),
        ("user_id=%20", "empty_user_id"),
        ("user_id=" + "u" * 129, "oversized_user_id"),
        ("user_id=u1&slots=g1,{x}", "invalid_slot"),
    ]:
        with pytest.raises(BadRequest) as caught:
            query_of(_request(f"/ui/api/user?{query}").query)
        assert caught.value.code == code, query


def test_the_fleet_window_starts_at_the_oldest_scrape_it_holds_once_it_spans_half_a_minute():
    sampler = FleetSampler(["http://w1/metrics"], window_s=300)
    scrapes = [_worker(n * 100, n * 10, {"0.5": n, "1.0": n, "2.0": n, "+Inf": n}) for n in (1, 2, 9)]
    sampler.snapshots.extend([(0.0, {"w1": scrapes[0]}), (20.0, {"w1": scrapes[1]})])
    window, seconds = sampler.window()
    assert seconds is None and window.total(EVENTS_IN) == 200  # 20 s watched: totals since the start
    sampler.snapshots.append((320.0, {"w1": scrapes[2]}))  # the first scrape is now out of the window
    window, seconds = sampler.window()
    assert seconds == 300.0 and window.total(EVENTS_IN) == 700


def test_a_metrics_url_whose_name_resolves_to_several_pods_is_read_at_each(monkeypatch):
    async def resolve(host, port, type=0):
        return [
            (2, 1, 6, "", ("10.0.0.2", port)),
            (2, 1, 6, "", ("10.0.0.1", port)),
            (10, 1, 6, "", ("fd00::1", port, 0, 0)),
        ]

    async def go():
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
        return [await _addresses(u) for u in ("http://adcast-stream:9464/metrics", "http://10.1.1.1:9464/metrics")]

    many, literal = asyncio.run(go())
    assert many == ["http://10.0.0.1:9464/metrics", "http://10.0.0.2:9464/metrics", "http://[fd00::1]:9464/metrics"]
    assert literal == ["http://10.1.1.1:9464/metrics"]  # an address is read as it is
