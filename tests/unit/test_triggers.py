from adcast.core.events import Event
from adcast.core.history import HistoryLimits, UserHistory, fold_event
from adcast.core.triggers import HIGH_VALUE, MAX_DELAY, QUIET, TriggerPolicy, mark_emitted

POLICY = TriggerPolicy(quiet_ms=500, max_delay_ms=2000, min_interval_ms=1000)
T0 = 1_767_225_600_000


def folded(kinds_at: list[tuple[str, int]]) -> UserHistory:
    h = UserHistory("u1")
    for n, (kind, now) in enumerate(kinds_at):
        fold_event(h, Event(f"e{n}", "u1", T0 + n, kind, "a1"), n, now, HistoryLimits())
    return h


def test_nothing_pending_means_no_trigger():
    assert POLICY.decide(UserHistory("u1"), 10_000) is None
    assert POLICY.decide(folded([("impression", 0)]), 10_000) is None


def test_waits_for_the_quiet_period_then_fires():
    h = folded([("click", 1000)])
    assert POLICY.decide(h, 1400) is None
    assert POLICY.decide(h, 1500) == QUIET


def test_a_burst_is_coalesced_until_max_delay():
    h = folded([("click", 1000), ("view", 1400), ("click", 1800), ("view", 2200), ("click", 2600), ("view", 2990)])
    assert POLICY.decide(h, 2999) is None  # never quiet for 500 ms
    assert POLICY.decide(h, 3000) == MAX_DELAY


def test_min_interval_holds_back_ordinary_events_but_not_high_value_ones():
    h = folded([("click", 1000)])
    mark_emitted(h, 1500)
    fold_event(h, Event("e9", "u1", T0 + 9, "click", "a1"), 9, 1600, HistoryLimits())
    assert POLICY.decide(h, 2200) is None  # quiet, but only 700 ms since the last emission
    assert POLICY.decide(h, 2500) == QUIET
    fold_event(h, Event("e10", "u1", T0 + 10, "checkout", "a1"), 10, 2300, HistoryLimits())
    assert POLICY.decide(h, 2800) == HIGH_VALUE


def test_emission_clears_pending_and_next_check_is_never_early():
    h = folded([("click", 1000), ("view", 1300)])
    due = POLICY.next_check_ms(h)
    assert POLICY.decide(h, due - 1) is None and POLICY.decide(h, due) is not None
    mark_emitted(h, due)
    assert not h.pending and POLICY.decide(h, due + 10_000) is None
