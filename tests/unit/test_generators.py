"""The synthetic world families: deterministic per seed, and each holds the assumptions its
documentation states."""

from collections import Counter, defaultdict

import pytest

from adcast.core.events import ENGAGEMENTS
from adcast.data.families import FAMILIES, generate_family
from adcast.data.marketplace import MarketplaceSpec, generate_marketplace


@pytest.mark.parametrize("family", FAMILIES)
def test_a_seed_gives_one_world_and_another_seed_another(family):
    a = generate_family(family, 60, None, 10, seed=1)
    assert a == generate_family(family, 60, None, 10, seed=1)
    assert a["events"] != generate_family(family, 60, None, 10, seed=2)["events"]
    ids = [e["event_id"] for e in a["events"]]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    known = {x["advertiser_id"] for x in a["advertisers"]}
    assert {e["advertiser_id"] for e in a["events"] if e["advertiser_id"]} <= known


def test_unknown_family_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="sessions, marketplace"):
        generate_family("nope", 10, None, 10, seed=1)


@pytest.fixture(scope="module")
def marketplace():
    return generate_marketplace(MarketplaceSpec(users=600, seed=3))


def test_marketplace_clicks_follow_an_impression_of_the_same_ad(marketplace):
    by_user = defaultdict(list)
    for e in marketplace["events"]:
        by_user[e["user_id"]].append(e)
    clicks = 0
    for events in by_user.values():
        shown: set[str] = set()
        for e in events:
            if e["event_type"] == "impression":
                shown.add(e["advertiser_id"])
            elif e["event_type"] == "click":
                clicks += 1
                assert e["advertiser_id"] in shown
    assert clicks > 1000


def test_marketplace_has_short_histories_a_long_tail_sparse_text_and_repeat_purchases(marketplace):
    events = marketplace["events"]
    engaged = Counter(e["user_id"] for e in events if e["event_type"] in ENGAGEMENTS)
    users = len(marketplace["profiles"])
    assert sum(1 for u in range(users) if engaged.get(f"m{u:05d}", 0) <= 2) > users / 5  # short histories
    per_advertiser = Counter(e["advertiser_id"] for e in events if e["event_type"] in ENGAGEMENTS)
    rare = sum(1 for n in per_advertiser.values() if n <= 3)
    assert rare > len(per_advertiser) / 5  # a long tail seen a few times
    assert sum(1 for e in events if e["text"]) < len(events) / 10  # sparse text
    assert sum(1 for e in events if e["brand"]) < 0.6 * sum(1 for e in events if e["advertiser_id"])
    checkouts = Counter((e["user_id"], e["advertiser_id"]) for e in events if e["event_type"] == "checkout")
    assert sum(1 for n in checkouts.values() if n >= 3) > users / 10  # the same advertiser bought again
