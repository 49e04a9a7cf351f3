"""A backfilled user's prompt is the one the live tier renders after the same events: backfill
versions are negative, and every offset the history compares must order them as live offsets."""

from hypothesis import given, settings
from hypothesis import strategies as st

from adcast.backfill import fold_histories
from adcast.core.examples import to_event
from adcast.core.history import HistoryLimits, UserHistory, fold_event
from adcast.core.prompt import render
from adcast.core.requests import PredictionRequest

T0 = 1_767_225_600_000
LIMITS = HistoryLimits()


def record(i: int, kind: str, advertiser: str) -> dict:
    return {
        "event_id": f"e{i}",
        "user_id": "u1",
        "event_time": T0 + i * 1000,
        "event_type": kind,
        "advertiser_id": advertiser,
        "item_id": None,
        "category": "shoes",
        "brand": None,
        "text": None,
    }


def prompt_of(history: UserHistory) -> str:
    return render(PredictionRequest.from_history(history, "backfill", 0, LIMITS))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["impression", "impression", "click", "view"]), st.integers(0, 5)), min_size=1)
)
def test_a_backfilled_prompt_equals_the_live_one(kinds):
    records = [record(i, kind, f"a{adv}") for i, (kind, adv) in enumerate(kinds)]
    (backfilled,) = fold_histories(records, {}, LIMITS, now_ms=T0 + 10**9).values()
    live = UserHistory("u1")
    for offset, r in enumerate(records):
        fold_event(live, to_event(r), offset, LIMITS)
    assert prompt_of(backfilled) == prompt_of(live)
