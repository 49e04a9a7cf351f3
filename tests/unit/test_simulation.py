"""The online replay: which calls each trigger policy makes on the events' clock, and which
prediction each engagement meets."""

from collections import defaultdict

import pytest

from adcast.core.events import Event
from adcast.core.examples import to_event
from adcast.core.history import HistoryLimits, UserHistory, fold_event
from adcast.core.prompt import render
from adcast.core.requests import PredictionRequest
from adcast.core.simulation import replay_user
from adcast.core.triggers import POLICIES, TriggerPolicy
from adcast.data.synthetic import WorldSpec, generate

LIMITS = HistoryLimits()
T0 = 1_767_225_600_000
DELAY = 1000


@pytest.fixture(scope="module")
def world():
    w = generate(WorldSpec(users=40, advertisers=30, seed=3))
    by_user = defaultdict(list)
    for r in w["events"]:
        by_user[r["user_id"]].append(to_event(r))
    for seq in by_user.values():
        seq.sort(key=lambda e: (e.event_time, e.event_id))
    times = sorted(e.event_time for seq in by_user.values() for e in seq)
    advertisers = {a["advertiser_id"] for a in w["advertisers"]}
    return by_user, advertisers, times[len(times) // 2], times[-1]


def run(ordered, policy, advertisers, start, end, delay=DELAY):
    return replay_user(ordered, {}, policy, LIMITS, advertisers, start, end, delay)


def folded_prompt(ordered: list[Event], upto: int, at: int) -> str:
    h = UserHistory(ordered[0].user_id)
    for offset, e in enumerate(ordered[:upto]):
        fold_event(h, e, offset, LIMITS)
    return render(PredictionRequest.from_history(h, "x", at, LIMITS))


def test_every_change_meets_each_engagement_with_everything_folded_a_serving_delay_before_it(world):
    by_user, advertisers, start, end = world
    judged = 0
    for ordered in by_user.values():
        result = run(ordered, TriggerPolicy(name="every_change"), advertisers, start, end)
        targets = [
            i
            for i, e in enumerate(ordered)
            if e.event_time >= start and e.event_type in ("click", "save", "add_to_cart", "checkout")
        ]
        targets = [
            i
            for i in targets
            if ordered[i].advertiser_id in advertisers and any(e.event_type != "impression" for e in ordered[:i])
        ]
        assert len(result.judged) == len(targets)
        for i, j in zip(targets, result.judged, strict=True):
            assert j.target == ordered[i].advertiser_id
            visible = [n for n in range(i) if ordered[n].event_time <= ordered[i].event_time - DELAY]
            if not visible:
                assert j.call is None
                continue
            call = result.calls[j.call]
            assert render(call.request) == folded_prompt(ordered, visible[-1] + 1, call.at)
            judged += 1
    assert judged > 100


def test_the_budgeted_policies_never_call_more_than_every_change_and_all_are_deterministic(world):
    by_user, advertisers, start, end = world
    totals = {}
    for name in POLICIES:
        policy = TriggerPolicy(name=name)
        runs = [run(seq, policy, advertisers, start, end) for seq in by_user.values()]
        again = [run(seq, policy, advertisers, start, end) for seq in by_user.values()]
        assert runs == again
        totals[name] = [r.counted_calls for r in runs]
        for r in runs:
            assert [c.at for c in r.calls] == sorted(c.at for c in r.calls)
            assert all(c.at >= start for c in r.calls[r.first_counted :])
            assert r.first_counted <= 1  # only the newest call before the period is kept
    for name in ("value", "engagements"):
        assert all(a <= b for a, b in zip(totals[name], totals["every_change"], strict=True))
        assert sum(totals[name]) < sum(totals["every_change"])


def test_a_prediction_is_met_only_once_visible_and_impressions_alone_only_settle():
    shown = [Event(f"i{n}", "u1", T0 + n * 100, "impression", f"a{n}") for n in range(5)]
    engagements = TriggerPolicy(name="engagements", settle_ms=30_000)
    only_shown = run(shown, engagements, {"a1"}, T0, T0 + 60_000)
    assert [c.reason for c in only_shown.calls] == ["settle"]
    assert only_shown.calls[0].request.version == 4

    clicks = [Event(f"c{n}", "u1", T0 + t, "click", "a1") for n, t in enumerate((0, 1200, 1500, 4000))]
    policy = TriggerPolicy(quiet_ms=500, min_interval_ms=0, name="engagements")
    result = run(clicks, policy, {"a1"}, T0, T0 + 10_000)
    # Calls at 500 (quiet after the first click), 2000 (after 1200 and 1500) and 4500; visible 1 s later.
    assert [c.at - T0 for c in result.calls] == [500, 2000, 4500]
    # The click at 1200 meets nothing yet (500 + 1000 > 1200); at 1500 the first call; at 4000 the second.
    assert [j.call for j in result.judged] == [None, 0, 1]
    # Under the value policy, more clicks on the user's strongest advertiser make no call.
    value = run(clicks, TriggerPolicy(quiet_ms=500, min_interval_ms=0), {"a1"}, T0, T0 + 10_000)
    assert [c.at - T0 for c in value.calls] == [500]
