from adcast.core.events import Event
from adcast.core.history import HistoryLimits, UserHistory, fold_event
from adcast.core.triggers import CHANGE, HIGH_VALUE, MAX_DELAY, QUIET, SETTLE, SHOWN, TriggerPolicy, mark_emitted

POLICY = TriggerPolicy(quiet_ms=500, max_delay_ms=2000, min_interval_ms=1000, shown_interval_ms=5000, settle_ms=30_000)
T0 = 1_767_225_600_000


def fold(h: UserHistory, n: int, kind: str, now: int, policy: TriggerPolicy = POLICY, adv: str = "a1", cat=None):
    change = fold_event(h, Event(f"e{n}", "u1", T0 + n, kind, adv, None, cat), n, HistoryLimits())
    policy.note(h, change, now)


def folded(kinds_at: list[tuple[str, int]], policy: TriggerPolicy = POLICY) -> UserHistory:
    h = UserHistory("u1")
    for n, (kind, now) in enumerate(kinds_at):
        fold(h, n, kind, now, policy, adv=f"a{n}")
    return h


def test_nothing_pending_means_no_trigger():
    assert POLICY.decide(UserHistory("u1"), 10_000) is None


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
    fold(h, 9, "click", 1600, adv="b")
    assert POLICY.decide(h, 2200) is None  # quiet, but only 700 ms since the last emission
    assert POLICY.decide(h, 2500) == QUIET
    fold(h, 10, "checkout", 2300, adv="b")
    assert POLICY.decide(h, 2800) == HIGH_VALUE


def test_emission_clears_pending_and_next_check_is_never_early():
    h = folded([("click", 1000), ("view", 1300)])
    due = POLICY.next_check_ms(h)
    assert POLICY.decide(h, due - 1) is None and POLICY.decide(h, due) is not None
    mark_emitted(h, due)
    assert not h.pending and not h.unscored and POLICY.decide(h, due + 100_000) is None


def test_the_value_policy_skips_what_cannot_move_the_top_k_and_settles_it_later():
    h = folded([("click", 1000)])
    mark_emitted(h, 1500)
    fold(h, 5, "click", 2000, adv="a0")  # one more click on the strongest advertiser
    fold(h, 6, "impression", 2100, adv="s1", cat="shoes")
    mark_emitted(h, 2700)
    fold(h, 7, "impression", 3000, adv="s1", cat="shoes")  # the same ad shown again
    assert not h.pending and h.unscored  # skipped, but in the next prompt
    assert POLICY.decide(h, 3000 + 29_999) is None
    assert POLICY.next_check_ms(h) == 3000 + 30_000
    assert POLICY.decide(h, 3000 + 30_000) == SETTLE
    fold(h, 8, "impression", 4000, adv="s2", cat="shoes")  # a new ad: worth a call
    # Ads shown alone wait shown_interval_ms since the last call (ads arrive in streams).
    assert h.pending and POLICY.decide(h, 4500) is None
    assert POLICY.next_check_ms(h) == 2700 + 5000 and POLICY.decide(h, 7700) == SHOWN
    fold(h, 9, "click", 5000, adv="b")  # something the user did: the ordinary interval
    assert POLICY.decide(h, 5500) == QUIET


def test_the_engagements_policy_never_triggers_on_impressions():
    policy = TriggerPolicy(quiet_ms=500, max_delay_ms=2000, min_interval_ms=0, name="engagements")
    h = folded([("impression", 1000), ("impression", 1100)], policy)
    assert not h.pending and h.unscored
    fold(h, 5, "click", 1200, policy, adv="a0")
    assert policy.decide(h, 1700) == QUIET


def test_the_every_change_policy_calls_at_once_on_any_change():
    policy = TriggerPolicy(name="every_change")
    h = folded([("click", 1000)], policy)
    assert policy.next_check_ms(h) == 1000 and policy.decide(h, 1000) == CHANGE
    mark_emitted(h, 1000)
    fold(h, 5, "impression", 1001, policy, adv="a0")  # the same advertiser, shown
    assert policy.decide(h, 1001) == CHANGE
