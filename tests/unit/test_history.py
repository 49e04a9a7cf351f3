import random

from hypothesis import given
from hypothesis import strategies as st

from adcast.core.events import EVENT_TYPES, Event
from adcast.core.examples import to_event
from adcast.core.history import HistoryLimits, ShownAd, UserHistory, fold_event, ranked_advertisers, shown_ads
from adcast.core.prompt import render_prompt
from adcast.data.synthetic import WorldSpec, generate
from adcast.wire import serde

LIMITS = HistoryLimits(min_events=4, dedupe_window=16, max_counters=5)
T0 = 1_767_225_600_000


def ev(n: int, kind: str = "click", t: int | None = None, adv: str | None = "a1") -> Event:
    return Event(f"e{n}", "u1", T0 + (n * 1000 if t is None else t), kind, adv)


def fold_all(events: list[tuple[int, Event]], limits: HistoryLimits = LIMITS) -> UserHistory:
    h = UserHistory("u1")
    for offset, e in events:
        fold_event(h, e, offset, limits)
    return h


def test_duplicate_event_ids_are_dropped():
    h = UserHistory("u1")
    assert fold_event(h, ev(1), 10, LIMITS).applied
    again = fold_event(h, ev(1), 11, LIMITS)
    assert not again.applied
    assert len(h.events) == 1 and h.version == 10


def prompt_of(h: UserHistory, limits: HistoryLimits = LIMITS) -> str:
    return render_prompt(h.profile, h.events, ranked_advertisers(h, limits), shown_ads(h, limits))


def test_an_impression_moves_the_version_and_reaches_the_prompt_at_once():
    h = UserHistory("u1")
    fold_event(h, ev(1), 5, LIMITS)
    result = fold_event(h, Event("e2", "u1", T0 + 2000, "impression", "a2", None, "shoes"), 6, LIMITS)
    assert result.applied and result.changed and result.impression and result.novel
    assert h.version == 6 and len(h.events) == 1 and h.newest_event_time == T0 + 2000
    assert shown_ads(h, LIMITS) == (ShownAd("a2", "shoes", after=True),)
    assert "; shown now <adv_a2> cat=shoes ; own <adv_a1>" in prompt_of(h)
    assert not fold_event(h, ev(2, "impression", adv="a2"), 7, LIMITS).applied  # still deduplicated
    again = fold_event(h, Event("e3", "u1", T0 + 3000, "impression", "a2", None, "shoes"), 8, LIMITS)
    assert again.changed and not again.novel  # the same ad shown again cannot move the top-K
    assert h.version == 8


def test_what_can_move_the_top_k_is_novel():
    h = UserHistory("u1")
    assert fold_event(h, ev(1, adv="a1"), 1, LIMITS).novel  # a first advertiser
    assert not fold_event(h, ev(2, adv="a1"), 2, LIMITS).novel  # the strongest advertiser again
    assert fold_event(h, ev(3, adv="a2"), 3, LIMITS).novel  # another advertiser
    assert fold_event(h, ev(4, "search", adv=None), 4, LIMITS).novel  # intent without an advertiser
    shown = Event("e5", "u1", T0 + 5000, "impression", "a3", None, "shoes")
    assert fold_event(h, shown, 5, LIMITS).novel
    same_cat = Event("e6", "u1", T0 + 6000, "impression", "a4", None, "shoes")
    assert fold_event(h, same_cat, 6, LIMITS).novel  # a new ad, though its category is shown
    repeat = Event("e7", "u1", T0 + 7000, "impression", "a3", None, "bags")
    assert fold_event(h, repeat, 7, LIMITS).novel  # a shown ad in a category new to the list
    assert not fold_event(h, Event("e8", "u1", T0 + 8000, "impression", "a4", None, "bags"), 8, LIMITS).novel
    blank = fold_event(h, Event("e9", "u1", T0 + 9000, "impression", None), 9, LIMITS)
    assert blank.applied and not blank.changed and h.version == 8  # nothing to show


@given(st.lists(st.sampled_from(["impression"] * 4 + ["click", "view"]), min_size=1, max_size=80), st.randoms())
def test_the_prompt_holds_every_change_up_to_the_version_and_the_newest_shown_ads(kinds, rnd):
    """Every event moves the version to its offset; the prompt then shows the newest `shown`
    impressions (and no more are kept), and its events are the non-impressions folded."""
    limits = HistoryLimits(min_events=4, dedupe_window=16, max_counters=5, shown=3)
    h = UserHistory("u1")
    shown_before: list[str] = []
    for offset, kind in enumerate(kinds):
        adv = f"a{rnd.randrange(6)}"
        fold_event(h, ev(offset, kind, adv=adv), offset, limits)
        assert h.version == offset
        assert len(h.impressions) <= limits.shown
        if kind == "impression":
            shown_before.append(adv)
        assert [ad.advertiser_id for ad in shown_ads(h, limits)] == shown_before[-limits.shown :]


def test_ads_shown_since_the_users_newest_event_are_marked_now():
    """The page the user browses after acting is told apart from the one they acted on: an ad is
    `after` until the user's next own event, whatever its event time."""
    h = UserHistory("u1")
    fold_event(h, ev(1, adv="a1"), 1, LIMITS)
    fold_event(h, Event("e2", "u1", T0 + 2000, "impression", "a2", None, "shoes"), 2, LIMITS)
    fold_event(h, ev(3, adv="a2"), 3, LIMITS)  # a click on the ad just shown
    fold_event(h, Event("e4", "u1", T0 + 4000, "impression", "a3", None, "bags"), 4, LIMITS)
    fold_event(h, Event("e5", "u1", T0 + 500, "impression", "a4"), 5, LIMITS)  # late, still read after
    assert [ad.after for ad in shown_ads(h, LIMITS)] == [False, True, True]
    assert "; shown <adv_a2> cat=shoes now <adv_a3> cat=bags <adv_a4> ; own " in prompt_of(h)
    fold_event(h, ev(6, "search", adv=None), 6, LIMITS)
    assert not any(ad.after for ad in shown_ads(h, LIMITS))
    assert " now " not in prompt_of(h)


def test_own_advertisers_rank_by_decayed_engagement_weight():
    h = fold_all([(1, ev(1, "view", adv="viewed")), (2, ev(2, "checkout", adv="bought")), (3, ev(3, "click", adv="b"))])
    assert ranked_advertisers(h, LIMITS) == ("bought", "b", "viewed")


def test_history_is_trimmed_in_chunks_between_n_and_2n():
    h = UserHistory("u1")
    sizes = []
    for n in range(30):
        fold_event(h, ev(n), n, LIMITS)
        sizes.append(len(h.events))
    assert max(sizes) == LIMITS.max_events
    assert min(sizes[LIMITS.max_events :]) == LIMITS.min_events
    # the newest events survive a trim
    assert h.events[-1].event_time == T0 + 29_000


def test_out_of_order_events_are_kept_in_event_time_order():
    h = fold_all([(1, ev(1, t=5000)), (2, ev(2, t=1000)), (3, ev(3, t=3000))])
    assert [e.event_time for e in h.events] == [T0 + 1000, T0 + 3000, T0 + 5000]
    assert h.version == 3


def test_counters_are_bounded():
    h = fold_all([(n, ev(n, adv=f"a{n}")) for n in range(20)])
    assert len(h.counters) == LIMITS.max_counters


def test_state_size_is_bounded_however_long_the_history():
    limits = HistoryLimits()
    h = UserHistory("u" * 20, profile={"age": "25-34", "gender": "f", "city": "tier1"})
    rnd = random.Random(0)
    sizes = []
    for n in range(2000):
        e = Event(
            f"event-{n:012d}",
            h.user_id,
            T0 + n,
            rnd.choice(EVENT_TYPES),
            f"adv{n % 40}",
            f"item{n}",
            "category-name",
            "brand-name",
            " ".join(f"word{rnd.randrange(999)}" for _ in range(40)),
        )
        fold_event(h, e, n, limits)
        if n % 100 == 99:
            sizes.append(len(serde.encode(serde.HISTORY, h.to_record())))
    # it oscillates between N and 2N events (chunked trims) but never grows
    assert max(sizes[10:]) <= 1.1 * max(sizes[:10]), sizes


def test_synthetic_world_state_is_under_2kb_per_user():
    world = generate(WorldSpec(users=300, seed=5))
    histories: dict[str, UserHistory] = {}
    for offset, r in enumerate(world["events"]):
        e = to_event(r)
        fold_event(
            histories.setdefault(e.user_id, UserHistory(e.user_id, profile={"age": "25-34"})),
            e,
            offset,
            HistoryLimits(),
        )
    sizes = [len(serde.encode(serde.HISTORY, h.to_record())) for h in histories.values()]
    assert max(sizes) <= 2048, max(sizes)


def test_serialized_history_round_trips():
    h = fold_all([(n, ev(n, kind)) for n, kind in enumerate(["click", "view", "impression", "search"])])
    h.profile = {"age": "18-24"}
    back = UserHistory.from_record(serde.decode(serde.HISTORY, serde.encode(serde.HISTORY, h.to_record())))
    assert back.to_record() == UserHistory.from_record(h.to_record()).to_record()
    assert back.events == h.events and back.seen_ids == h.seen_ids


kinds = st.sampled_from(EVENT_TYPES)


@given(st.lists(st.tuples(kinds, st.integers(0, 50_000)), min_size=1, max_size=12), st.randoms())
def test_redelivered_duplicates_change_nothing(spec, rnd):
    events = [(n, ev(n, kind, t=t)) for n, (kind, t) in enumerate(spec)]
    clean = fold_all(events)
    # At-least-once delivery: some events arrive again later (at higher offsets).
    replayed = events + [(len(events) + i, e) for i, (_, e) in enumerate(rnd.sample(events, len(events) // 2))]
    assert fold_all(replayed).to_record() == clean.to_record()


@given(st.lists(st.tuples(kinds, st.integers(0, 50_000)), min_size=1, max_size=12), st.randoms())
def test_arrival_order_does_not_change_the_kept_events(spec, rnd):
    events = [(n, ev(n, kind, t=t)) for n, (kind, t) in enumerate(spec)]
    shuffled = events[:]
    rnd.shuffle(shuffled)
    a, b = fold_all(events, HistoryLimits(min_events=50)), fold_all(shuffled, HistoryLimits(min_events=50))
    key = lambda e: (e.event_time, e.event_type)  # noqa: E731
    assert sorted(a.events, key=key) == sorted(b.events, key=key)
    assert [e.event_time for e in b.events] == sorted(e.event_time for e in b.events)


def test_dedupe_matches_whole_digests_only():
    from adcast.core.history import _seen, event_id_hash

    a, b = event_id_hash("e1"), event_id_hash("e2")
    h = UserHistory(user_id="u1", seen_ids=a + b)
    assert _seen(h, a) and _seen(h, b)
    assert not _seen(h, a[4:] + b[:4])  # straddles two remembered digests
    assert not _seen(h, event_id_hash("e3"))
