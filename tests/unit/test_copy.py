"""Copy slots are read from the rendered prompt: training and both engines get the same bonus."""

from hypothesis import given
from hypothesis import strategies as st

from adcast.core.copy import COPY_SLOTS, LAST_EVENT_SLOT, OWN_SLOTS, SHOWN_NOW_SLOTS, copy_bias, copy_slots
from adcast.core.history import HistoryEvent, ShownAd
from adcast.core.prompt import advertiser_token, render_prompt

T = 1_767_225_600_000


def test_own_ranks_shown_positions_newest_first_and_the_last_events_advertiser():
    events = [HistoryEvent(T, "click", "a1", "shoes"), HistoryEvent(T + 1, "view", "a2", "bags", None, "red; bag")]
    shown = [ShownAd("a3", "x"), ShownAd("a2", None), ShownAd("a3", "x", after=True)]
    prompt = render_prompt({"age": "25;34"}, events, ("a2", "a1"), shown)
    assert "; shown <adv_a3> cat=x <adv_a2> now <adv_a3> cat=x ; own " in prompt
    assert copy_slots(prompt) == [
        ("<adv_a2>", 0),
        ("<adv_a1>", 1),
        ("<adv_a3>", SHOWN_NOW_SLOTS + 0),
        ("<adv_a2>", OWN_SLOTS + 1),
        ("<adv_a3>", OWN_SLOTS + 2),
        ("<adv_a2>", LAST_EVENT_SLOT),
    ]
    weights = [float(i) for i in range(COPY_SLOTS)]
    index = {"<adv_a1>": 0, "<adv_a2>": 1, "<adv_a3>": 2}
    assert copy_bias(prompt, weights, index) == {
        1: 0 + OWN_SLOTS + 1 + LAST_EVENT_SLOT,
        0: 1,
        2: SHOWN_NOW_SLOTS + OWN_SLOTS + 2,
    }
    assert copy_bias(prompt, [], index) == {}


def test_a_prompt_without_own_or_shown_still_names_its_last_events_advertiser():
    prompt = render_prompt({}, [HistoryEvent(T, "search", None, None, None, "own shown"), HistoryEvent(T, "save", "b")])
    assert copy_slots(prompt) == [("<adv_b>", LAST_EVENT_SLOT)]
    assert copy_slots(render_prompt({}, [HistoryEvent(T, "search", None, None, None, "shoes")])) == []


ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=6)


@given(
    st.lists(ids, max_size=20),
    st.lists(st.tuples(ids, st.none() | ids), max_size=12),
    st.lists(st.tuples(ids, st.none() | ids), min_size=1, max_size=5),
    st.integers(0, 12),
)
def test_slots_match_the_lists_the_prompt_was_rendered_from(own, shown, events, now):
    """Whatever the ids and texts hold, the slots are the rendered lists' own; the newest `now`
    ads shown (those after the user's newest event) take the slots of their own."""
    history = [HistoryEvent(T, "click", adv, None, None, text) for adv, text in events]
    ads = [ShownAd(a, c, after=len(shown) - i <= now) for i, (a, c) in enumerate(shown)]
    prompt = render_prompt({"k": "v"}, history, own, ads)
    expected = [(advertiser_token(a), r) for r, a in enumerate(own[:OWN_SLOTS])]
    expected += [
        (advertiser_token(ad.advertiser_id), (SHOWN_NOW_SLOTS if ad.after else OWN_SLOTS) + p)
        for p, ad in enumerate(ads[::-1][:8])
    ]
    expected.append((advertiser_token(events[-1][0]), LAST_EVENT_SLOT))
    got = copy_slots(prompt)
    assert sorted(got, key=lambda x: x[1]) == sorted(expected, key=lambda x: x[1])
