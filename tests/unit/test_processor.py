"""The stream tier's logic with a dict for a table (the Faust wiring is tested in tests/stream)."""

from folding import MappingStore, batch_commit, load_history, on_event, on_profile, on_tick
from hypothesis import given, settings
from hypothesis import strategies as st

from adcast.core.history import HistoryLimits
from adcast.core.triggers import TriggerPolicy
from adcast.wire import serde
from stream.processor import EVENT, TICK, Input, StreamProcessor

NOW = 1_767_225_600_000
POLICY = TriggerPolicy(quiet_ms=500, max_delay_ms=2000, min_interval_ms=0)


def event(n: int, user: str = "u1", kind: str = "click") -> bytes:
    return serde.encode(
        serde.EVENT,
        {
            "event_id": f"e{n}",
            "user_id": user,
            "event_time": NOW + n,
            "event_type": kind,
            "advertiser_id": "a1",
            "item_id": None,
            "category": None,
            "brand": None,
            "text": None,
        },
    )


def test_garbage_and_invalid_events_become_dead_letters_and_touch_no_state():
    p, table = StreamProcessor(HistoryLimits(), POLICY), MappingStore()
    out = on_event(p, table, b"\x00\x00\x00\x00\x01\xff\xff", 0, 1, NOW)
    assert [why.stage for _, why in out.dead_letters] == ["decode"]
    bad = serde.encode(
        serde.EVENT,
        {
            "event_id": "e",
            "user_id": "u1",
            "event_time": NOW,
            "event_type": "poke",
            "advertiser_id": None,
            "item_id": None,
            "category": None,
            "brand": None,
            "text": None,
        },
    )
    out = on_event(p, table, bad, 0, 2, NOW)
    assert [why.reason for _, why in out.dead_letters] == ["unknown_event_type"]
    assert table.data == {}


def test_tick_emits_once_after_quiet_period_with_deterministic_version():
    p, table = StreamProcessor(HistoryLimits(), POLICY), MappingStore()
    on_event(p, table, event(1), 0, 100, NOW)
    on_event(p, table, event(2, kind="impression"), 0, 101, NOW + 100)
    on_event(p, table, event(3, kind="view"), 0, 102, NOW + 200)
    assert on_tick(p, table, 0, NOW + 600).requests == []  # 400 ms quiet only
    requests = on_tick(p, table, 0, NOW + 700).requests
    assert [(r.user_id, r.version, r.reason) for r in requests] == [("u1", 102, "quiet")]
    assert [e.event_type for e in requests[0].events] == ["click", "view"]
    assert on_tick(p, table, 0, NOW + 5000).requests == []


def test_duplicates_are_flagged_and_do_not_retrigger():
    p, table = StreamProcessor(HistoryLimits(), POLICY), MappingStore()
    on_event(p, table, event(1), 0, 100, NOW)
    assert len(on_tick(p, table, 0, NOW + 1000).requests) == 1
    assert on_event(p, table, event(1), 0, 150, NOW + 1100).duplicates == 1
    assert on_tick(p, table, 0, NOW + 5000).requests == []


def test_pending_triggers_survive_a_restart_through_the_table():
    table = MappingStore()
    before = StreamProcessor(HistoryLimits(), POLICY)
    on_event(before, table, event(1, user="u1"), 1, 10, NOW)
    on_event(before, table, event(2, user="u2"), 1, 11, NOW)
    on_tick(before, table, 1, NOW + 100)  # not yet due
    after = StreamProcessor(HistoryLimits(), POLICY)  # new process, same (recovered) table
    assert after.reindex(list(table.data.items())) == 2
    emitted = on_tick(after, table, 1, NOW + 1000).requests
    assert sorted(r.user_id for r in emitted) == ["u1", "u2"]
    assert not load_history(table, "u1").pending


def test_profile_updates_land_in_the_history():
    p, table = StreamProcessor(HistoryLimits(), POLICY), MappingStore()
    raw = serde.encode(serde.PROFILE, {"user_id": "u1", "attributes": {"age": "25-34"}, "updated_at": NOW})
    assert on_profile(p, table, raw, 0).dead_letters == []
    on_event(p, table, event(1), 0, 5, NOW)
    (request,) = on_tick(p, table, 0, NOW + 1000).requests
    assert request.profile == {"age": "25-34"}


def _event_at(n: int, user: str, kind: str, t: int) -> bytes:
    record = serde.decode(serde.EVENT, event(n, user, kind))
    return serde.encode(serde.EVENT, {**record, "event_time": t})


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.sampled_from(["click", "view", "impression", "save"])),
        min_size=1,
        max_size=40,
    ),
    st.lists(st.integers(1, 12), min_size=1, max_size=40),
    st.integers(0, 9),
)
def test_batching_changes_nothing_but_cost(events, cuts, replayed):
    """However inputs are cut into batches, the table and the requests equal one-at-a-time processing
    (ticks included, a re-delivered event included, the decoded-history cache in play)."""
    inputs = []
    for i, (user, kind) in enumerate(events):
        inputs.append(Input(EVENT, _event_at(i, user, kind, NOW + 100 * i), 0, i))
        if i % 5 == 4:
            inputs.append(Input(TICK, None, 0, -1))
    inputs.insert(min(replayed, len(inputs)), inputs[0])  # at-least-once: the first event again
    # The batch's clock is its last input's: the clock moves only after each tick, and batches
    # may be cut anywhere but must end at every tick, so each input sees the same clock either way.
    clock, ticks = [], 0
    for item in inputs:
        clock.append(NOW + 700 * ticks)
        ticks += item.kind == TICK

    def run(batches):
        table, requests, start = MappingStore(), [], 0
        commit = batch_commit(StreamProcessor(HistoryLimits(), POLICY), table, cache_users=2)
        for size in batches:
            chunk = inputs[start : start + size]
            if chunk:
                outcome, held = commit.fold(chunk, clock[start + len(chunk) - 1])
                held.release_now()
                requests += outcome.requests
            start += size
        return table.data, [(r.user_id, r.version, r.reason) for r in requests]

    one_by_one = run([1] * len(inputs))
    tick_cuts, size = [], 0
    for j, item in enumerate(inputs):
        size += 1
        if item.kind == TICK or size >= cuts[j % len(cuts)] or j == len(inputs) - 1:
            tick_cuts.append(size)
            size = 0
    assert run(tick_cuts) == one_by_one


def test_a_skipped_change_is_scored_in_the_next_call_or_once_the_user_settles():
    """Under the value policy the same ad shown again moves the version but makes no call; the
    next call carries it, and a user left on it is scored once quiet for settle_ms."""
    policy = TriggerPolicy(quiet_ms=500, max_delay_ms=2000, min_interval_ms=0, settle_ms=10_000)
    p, table = StreamProcessor(HistoryLimits(), policy), MappingStore()
    on_event(p, table, event(1, kind="impression"), 0, 100, NOW)
    (first,) = on_tick(p, table, 0, NOW + 500).requests  # a new ad shown: worth a call
    assert first.version == 100 and first.reason == "shown"  # ads shown alone
    on_event(p, table, event(2, kind="impression"), 0, 101, NOW + 600)  # the same ad again
    assert on_tick(p, table, 0, NOW + 5_000).requests == []
    (settled,) = on_tick(p, table, 0, NOW + 10_600).requests
    assert settled.version == 101 and settled.reason == "settle"
    assert on_tick(p, table, 0, NOW + 60_000).requests == []


def test_pending_users_survive_a_reindex_under_the_value_policy():
    policy = TriggerPolicy(quiet_ms=500, max_delay_ms=2000, min_interval_ms=0, settle_ms=10_000)
    p, table = StreamProcessor(HistoryLimits(), policy), MappingStore()
    on_event(p, table, event(1, kind="impression"), 0, 100, NOW)
    on_tick(p, table, 0, NOW + 500)
    on_event(p, table, event(2, kind="impression"), 0, 101, NOW + 600)  # skipped, unscored
    restarted = StreamProcessor(HistoryLimits(), policy)
    assert restarted.reindex(list(table.data.items())) == 1
    (settled,) = on_tick(restarted, table, 0, NOW + 10_600).requests
    assert settled.version == 101
