import pytest

from adcast.core.affinities import FIELDS, Affinities, decode_top
from adcast.core.events import Event
from adcast.core.examples import cutoff_time, iter_examples, target_kind
from adcast.core.history import HistoryLimits
from adcast.data.synthetic import WorldSpec, generate


def test_cutoff_is_the_time_quantile():
    assert cutoff_time([5, 1, 3, 2, 4], 0.8) == 5
    assert cutoff_time([5, 1, 3, 2, 4], 0.0) == 1


def test_examples_use_only_strictly_earlier_events_of_the_same_user():
    world = generate(WorldSpec(users=30, advertisers=40, seed=3))
    advs = {a["advertiser_id"] for a in world["advertisers"]}
    profiles = {p["user_id"]: p["attributes"] for p in world["profiles"]}
    examples = list(iter_examples(world["events"], profiles, advs, HistoryLimits()))
    assert examples
    for ex in examples:
        assert ex.target in advs
        assert all(e.event_time <= ex.event_time for e in ex.events)
        assert ex.profile == profiles[ex.user_id]


def test_window_selects_targets_by_time():
    world = generate(WorldSpec(users=30, advertisers=40, seed=3))
    advs = {a["advertiser_id"] for a in world["advertisers"]}
    cut = cutoff_time((e["event_time"] for e in world["events"]), 0.5)
    before = list(iter_examples(world["events"], {}, advs, HistoryLimits(), end=cut))
    after = list(iter_examples(world["events"], {}, advs, HistoryLimits(), start=cut))
    assert before and after
    assert max(e.event_time for e in before) < cut <= min(e.event_time for e in after)


def test_targets_are_repeats_returns_or_new_advertisers():
    events = [
        Event("e1", "u", 1, "click", "a"),
        Event("e2", "u", 2, "view", "b"),
        Event("e3", "u", 3, "save", "b"),  # repeat: b is the last event's advertiser
        Event("e4", "u", 4, "click", "a"),  # return: a is known, but the last event was b's
        Event("e5", "u", 5, "search", None, text="red shoes"),
        Event("e6", "u", 6, "click", "c"),  # new
    ]
    records = [e.to_record() for e in events]
    examples = list(iter_examples(records, {}, {"a", "b", "c"}, HistoryLimits()))
    assert [(ex.target, target_kind(ex)) for ex in examples] == [("b", "repeat"), ("a", "return"), ("c", "new")]


def test_generator_is_deterministic_for_a_seed():
    assert generate(WorldSpec(users=20, seed=1)) == generate(WorldSpec(users=20, seed=1))
    assert generate(WorldSpec(users=20, seed=1))["events"] != generate(WorldSpec(users=20, seed=2))["events"]


def test_redis_hash_encoding_round_trips():
    a = Affinities("u1", 17, "m-1", 1000, 900, (("a:1", 0.5), ("a,2", 0.25)))
    assert Affinities.from_hash("u1", a.to_hash()) == a
    assert a.to_hash()["top"] == '[["a:1",0.5],["a,2",0.25]]'
    # The sync client reads the values as UTF-8 bytes, the rest of adcast as str.
    h = {**a.to_hash(), "mv": "m-ü"}
    assert Affinities.from_values("u1", [h[f].encode() for f in FIELDS]) == Affinities.from_hash("u1", h)
    with pytest.raises(ValueError):
        Affinities.from_values("u1", [b"1", b"\xff", b"2", b"3", b"[]"])


@pytest.mark.parametrize(
    "top",
    ['{"a": 1}', '[["a"]]', '[["a", 0.5, 1]]', "[[1, 0.5]]", '[["a", "0.5"]]', '[["a", 0.5]', "", "null"],
)
def test_a_malformed_top_is_a_value_error_not_garbage(top):
    with pytest.raises(ValueError, match="top is not"):
        decode_top(top)


def test_top_decodes_integer_probabilities_as_floats():
    assert decode_top('[["a",1],["b",0]]') == (("a", 1.0), ("b", 0.0))
    assert all(type(p) is float for _, p in decode_top('[["a",1],["b",0]]'))
    assert decode_top("[]") == ()
