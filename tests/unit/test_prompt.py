from adcast.core.events import Event
from adcast.core.history import HistoryEvent, HistoryLimits, UserHistory, fold_event
from adcast.core.prompt import advertiser_token, render_prompt

T0 = 1_767_225_600_000


def test_layout_profile_first_then_events_oldest_first():
    events = [
        HistoryEvent(T0, "search", text="Red Running-Shoes!"),
        HistoryEvent(T0 + 1, "click", "a 1", "Shoes", "Run Fast"),
    ]
    prompt = render_prompt({"gender": "f", "age": "25-34"}, events)
    assert prompt == (
        "profile age=25-34 gender=f ; search red running shoes ; click <adv_a_1> cat=shoes brand=run_fast ; next"
    )


def test_advertiser_tokens_are_single_whitespace_free_tokens():
    for raw in ["a1", "brand with spaces", "x<y>;z=1", "\tt"]:
        token = advertiser_token(raw)
        assert token.startswith("<adv_") and token.endswith(">") and len(token.split()) == 1
        assert "<" not in token[1:-1] and ">" not in token[1:-1]


def test_prefix_is_byte_stable_between_predictions_until_a_trim():
    limits = HistoryLimits(min_events=4)
    h = UserHistory("u1", profile={"age": "18-24"})
    prompts = []
    for n in range(12):
        fold_event(h, Event(f"e{n}", "u1", T0 + n * 1000, "click", f"a{n % 3}"), n, limits)
        prompts.append(render_prompt(h.profile, h.events))
    stable = [p.removesuffix(" ; next") for p in prompts]
    grew = sum(1 for a, b in zip(stable, stable[1:], strict=False) if b.startswith(a))
    trimmed = sum(1 for a, b in zip(stable, stable[1:], strict=False) if not b.startswith(a))
    # N=4: the history grows to 8 events; the 9th event trims it back to 4, once in 12 events.
    assert (grew, trimmed) == (10, 1)
