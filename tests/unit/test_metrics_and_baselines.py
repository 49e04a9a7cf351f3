import math

from adcast.core.baselines import Cooccurrence, Popularity, engaged_sequence, recent, recent_shown
from adcast.core.events import Event
from adcast.core.ranking import merge_half_and_half, rank_of, summarize

DAY = 24 * 3600 * 1000


def test_metrics_match_a_hand_computed_example():
    ranked = [["a", "b", "c"], ["b", "a", "c"], ["c", "b", "a"], ["x", "y", "z"]]
    targets = ["a", "a", "a", "a"]
    ranks = [rank_of(t, r) for r, t in zip(ranked, targets, strict=True)]
    assert ranks == [1, 2, 3, None]
    m = summarize(ranks, ks=[1, 2, 3], ndcg_k=2)
    assert m["recall@1"] == 0.25 and m["recall@2"] == 0.5 and m["recall@3"] == 0.75
    assert math.isclose(m["ndcg@2"], (1 + 1 / math.log2(3)) / 4)
    assert math.isclose(m["mrr"], (1 + 1 / 2 + 1 / 3) / 4)


def test_union_takes_half_from_each_then_fills_alternately():
    assert merge_half_and_half(["a", "b", "c", "d"], ["c", "x", "y", "z"], 4) == ["a", "b", "c", "x"]
    assert merge_half_and_half(["a", "b", "c"], ["a", "b", "c"], 3) == ["a", "b", "c"]
    assert merge_half_and_half(["a", "b", "c", "d"], ["a", "b", "e", "f"], 4) == ["a", "b", "c", "e"]
    assert merge_half_and_half(["a"], ["b"], 5) == ["a", "b"]


def ev(t: int, kind: str, adv: str, user: str = "u") -> Event:
    return Event(f"{user}{t}{kind}{adv}", user, t, kind, adv)


def test_popularity_counts_engagements_only():
    pop = Popularity(
        [
            ev(1, "click", "a"),
            ev(2, "impression", "b"),
            ev(3, "impression", "b"),
            ev(4, "save", "a"),
            ev(5, "checkout", "c"),
        ]
    )
    assert pop.rank(5) == ["a", "c"]


def test_recent_prefers_recent_and_strong_engagements_and_fills_from_popularity():
    prior = [ev(0, "click", "old"), ev(10 * DAY, "view", "new"), ev(10 * DAY, "impression", "shown")]
    assert recent(prior, 10 * DAY, 3, ["p1", "new", "p2"]) == ["new", "old", "p1"]
    prior = [ev(DAY, "view", "viewed"), ev(DAY, "checkout", "bought")]
    assert recent(prior, DAY, 2, []) == ["bought", "viewed"]


def test_recent_shown_ranks_impressions_by_count_and_recency_only():
    prior = [
        ev(0, "impression", "old"),
        ev(0, "impression", "old"),
        ev(10 * DAY, "impression", "fresh"),
        ev(10 * DAY, "checkout", "bought"),  # engagements are `recent`'s, not this one's
    ]
    assert recent_shown(prior, 10 * DAY, 3, ["p1", "fresh"]) == ["fresh", "old", "p1"]
    thrice_a_day_ago = [ev(0, "impression", "old")] * 3  # 1.5 after a half-life, against 1.0
    assert recent_shown([*thrice_a_day_ago, ev(DAY, "impression", "once")], DAY, 2, []) == ["old", "once"]


def test_cooccurrence_predicts_what_followed_the_users_recent_advertisers():
    sequences = [["a", "b", "c"], ["a", "b"], ["a", "d"], ["x", "y"]]
    model = Cooccurrence(sequences, window=1)
    assert model.rank([ev(1, "click", "a")], 3, ["x", "y"]) == ["b", "d", "x"]
    assert engaged_sequence(
        [ev(1, "click", "a"), ev(2, "view", "a"), ev(3, "impression", "z"), ev(4, "save", "b")]
    ) == ["a", "b"]
