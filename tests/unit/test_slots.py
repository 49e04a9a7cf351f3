"""The pure side of model slots (adcast.core.slots): names, keys, the pointer, and the measures of
`adcast compare`."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adcast.core.slots import (
    DEFAULT_SLOT,
    Engagement,
    Prediction,
    SlotPointer,
    check_slot,
    online_hits,
    overlap_at_k,
    pointer_key,
    rank_correlation,
    slot_match,
    user_key,
)
from adcast.errors import ConfigError

# Names, keys, the pointer


@pytest.mark.parametrize("name", ["g42", "a.b_c-1", "G", "x" * 32])
def test_check_slot_accepts_and_returns_valid_names(name: str) -> None:
    assert check_slot(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a:b",  # the key separator
        "{x}",  # a Redis Cluster hash tag
        "a@b",  # the pointer's separator
        "x" * 33,
        "a b",
        "g1\n",  # `$` alone would let a trailing newline through
        "g\u00e9",  # ASCII only
    ],
)
def test_check_slot_rejects_invalid_names(name: str) -> None:
    with pytest.raises(ConfigError, match="slot name"):
        check_slot(name)


def test_user_key_and_pointer_key_layout() -> None:
    assert user_key("adcast:aff:", "g42", "u123") == "adcast:aff:g42:u123"
    assert pointer_key("adcast:aff:") == "adcast:aff:@slots"


def _redis_glob(pattern: str) -> re.Pattern[str]:
    """Redis MATCH semantics for the subset slot_match may produce: `\\x` is a literal x, `*` and
    `?` are wildcards. An unescaped `[` would be a character class, which a prefix must never make."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        assert c not in "[]", f"unescaped {c!r} in {pattern!r}"
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def test_slot_match_escapes_the_prefix_glob_characters() -> None:
    assert slot_match("adcast:aff:", "g1") == "adcast:aff:g1:*"
    assert slot_match("a*[b]:", "g1") == r"a\*\[b\]:g1:*"
    assert slot_match("x?\\:", "g.1") == r"x\?\\:g.1:*"


@pytest.mark.parametrize(
    ("prefix", "lookalikes"),
    [
        ("adcast:aff:", []),
        # Each would fit the prefix read as a glob ('*' any run, '[b]' a 'b', '?' any one character).
        ("a*[b]:", ["aXb:", "a*b:", "ab:"]),
        ("t?\\:", ["tX:", "t?:"]),
    ],
)
def test_slot_match_matches_only_that_slots_keys(prefix: str, lookalikes: list[str]) -> None:
    glob = _redis_glob(slot_match(prefix, "g1"))
    assert glob.fullmatch(user_key(prefix, "g1", "u1"))
    assert glob.fullmatch(user_key(prefix, "g1", "u:odd*"))
    assert not glob.fullmatch(user_key(prefix, "g10", "u1"))  # the ':' after the slot ends its name
    assert not glob.fullmatch(user_key(prefix, "g2", "u1"))
    assert not glob.fullmatch(pointer_key(prefix))
    for other in lookalikes:
        assert not glob.fullmatch(user_key(other, "g1", "u1")), other


def test_pointer_from_hash_parses_roles_time_and_writers() -> None:
    p = SlotPointer.from_hash(
        {
            "live": "g1",
            "candidate": "g2",
            "previous": "",
            "updated_at": "1700000000000",
            "writer:g1": "1700000001000",
            "writer:g2": "1700000002000",
        }
    )
    assert p == SlotPointer("g1", "g2", None, 1_700_000_000_000, {"g1": 1_700_000_001_000, "g2": 1_700_000_002_000})
    assert SlotPointer.from_hash({}) == SlotPointer(None, None, None, 0, {})


def test_read_slots() -> None:
    assert SlotPointer.from_hash({}).read_slots() == (DEFAULT_SLOT, None)
    assert SlotPointer(live="g2", previous="g1").read_slots() == ("g2", "g1")
    assert SlotPointer(live="g2", previous="g2").read_slots() == ("g2", None)
    assert SlotPointer(live="g2", candidate="g3").read_slots() == ("g2", None)  # a candidate is never read


# `adcast compare`: agreement of two top-k lists


def test_overlap_at_k() -> None:
    a, b = ["a", "b", "c", "d"], ["b", "a", "e", "c"]
    assert overlap_at_k(a, b, 2) == 1.0
    assert overlap_at_k(a, b, 3) == pytest.approx(2 / 3)
    assert overlap_at_k(a, b, 4) == 0.75
    assert overlap_at_k(["a"], ["a"], 2) == 0.5  # divided by k: a short list counts its gaps as misses
    assert overlap_at_k(a, b, 0) == 0.0


def test_rank_correlation_of_identical_and_reversed_lists() -> None:
    assert rank_correlation(["a", "b", "c", "d"], ["a", "b", "c", "d"], 4) == pytest.approx(1.0)
    assert rank_correlation(["a", "b", "c"], ["c", "b", "a"], 3) == pytest.approx(-1.0)
    assert rank_correlation(["a", "b", "c", "d"], ["d", "c", "b", "a"], 4) < 0


def test_rank_correlation_is_nan_without_two_advertisers() -> None:
    assert math.isnan(rank_correlation(["a"], ["a"], 5))
    assert math.isnan(rank_correlation(["a", "b"], ["a", "c"], 1))  # only the top 1 counts: union {a}
    assert math.isnan(rank_correlation([], [], 3))


def test_rank_correlation_by_hand() -> None:
    # k = 3, a = [x, y, z], b = [y, x, w]; union {x, y, z, w}, a missing one ranked k = 3:
    #   ranks in a: x 0, y 1, z 2, w 3      ranks in b: x 1, y 0, z 3, w 2
    #   d = -1, 1, -1, 1, sum d^2 = 4, n = 4, no ties: rho = 1 - 6 * 4 / (4 * (16 - 1)) = 1 - 0.4 = 0.6
    assert rank_correlation(["x", "y", "z"], ["y", "x", "w"], 3) == pytest.approx(0.6)


top_lists = st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8)


@given(a=top_lists, b=top_lists, k=st.integers(1, 8))
def test_rank_correlation_is_symmetric_and_bounded(a: list[str], b: list[str], k: int) -> None:
    ab, ba = rank_correlation(a, b, k), rank_correlation(b, a, k)
    if math.isnan(ab):
        assert math.isnan(ba)
        return
    assert ab == pytest.approx(ba)  # the union's order, so the float sums' order, may differ
    assert -1 - 1e-12 <= ab <= 1 + 1e-12


# `adcast compare`: online hit rate


def _p(user: str, slot: str, at: int, *top: str) -> Prediction:
    return Prediction(user, slot, at, top)


def test_an_engagement_is_judged_only_after_a_prediction_computed_strictly_before_it() -> None:
    predictions = [_p("u1", "g1", 100, "a")]
    same_time = online_hits(predictions, [Engagement("u1", "a", 100)], ["g1"], 10)
    assert same_time.judged == {"g1": 0} and same_time.hits == {"g1": 0}
    earlier = online_hits(predictions, [Engagement("u1", "a", 99)], ["g1"], 10)
    assert earlier.judged == {"g1": 0}
    after = online_hits(predictions, [Engagement("u1", "a", 101)], ["g1"], 10)
    assert after.judged == {"g1": 1} and after.hits == {"g1": 1}


def test_the_newest_earlier_prediction_is_the_one_judged() -> None:
    # Given out of order: the function orders each user's predictions itself.
    predictions = [_p("u1", "g1", 300, "c"), _p("u1", "g1", 100, "a"), _p("u1", "g1", 200, "b")]
    assert online_hits(predictions, [Engagement("u1", "b", 250)], ["g1"], 10).hits == {"g1": 1}
    for older_or_newer in ("a", "c"):
        out = online_hits(predictions, [Engagement("u1", older_or_newer, 250)], ["g1"], 10)
        assert out.judged == {"g1": 1} and out.hits == {"g1": 0}


def test_only_the_top_k_of_a_prediction_counts() -> None:
    predictions = [_p("u1", "g1", 100, "a", "b", "c")]
    assert online_hits(predictions, [Engagement("u1", "c", 200)], ["g1"], 3).hits == {"g1": 1}
    assert online_hits(predictions, [Engagement("u1", "c", 200)], ["g1"], 2).hits == {"g1": 0}


def test_slots_are_counted_separately() -> None:
    predictions = [
        _p("u1", "g1", 100, "a"),
        _p("u1", "g2", 100, "b"),
        _p("u2", "g1", 100, "a"),
        _p("u2", "g2", 500, "a"),  # after u2's engagement: g2 does not judge it
        _p("u1", "g9", 100, "a"),  # a slot not compared
    ]
    engagements = [Engagement("u1", "a", 200), Engagement("u2", "a", 200)]
    out = online_hits(predictions, engagements, ["g1", "g2"], 10)
    assert out.judged == {"g1": 2, "g2": 1}
    assert out.hits == {"g1": 2, "g2": 0}
    assert out.rate("g1") == 1.0 and out.rate("g2") == 0.0
    assert "g9" not in out.judged


def test_users_without_an_earlier_prediction_are_not_judged() -> None:
    predictions = [_p("u1", "g1", 100, "a")]
    engagements = [Engagement("u2", "a", 200), Engagement("u1", "a", 200), Engagement("u1", "z", 300)]
    out = online_hits(predictions, engagements, ["g1"], 10)
    assert out.judged == {"g1": 2} and out.hits == {"g1": 1}
    assert out.rate("g1") == 0.5


def test_rate_is_nan_when_nothing_was_judged() -> None:
    out = online_hits([], [Engagement("u1", "a", 200)], ["g1", "g2"], 10)
    assert out.judged == {"g1": 0, "g2": 0}
    assert math.isnan(out.rate("g1")) and math.isnan(out.rate("g2"))
    assert math.isnan(out.rate("never-compared"))
