"""The stream tier's logic with a dict for a table (the Faust wiring is tested in tests/stream)."""

from adcast import serde
from adcast.core.history import HistoryLimits
from adcast.core.triggers import TriggerPolicy
from stream.processor import StreamProcessor, load_history

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
    p, table = StreamProcessor(HistoryLimits(), POLICY), {}
    out = p.on_event(table, b"\x00\x00\x00\x00\x01\xff\xff", 0, 1, NOW)
    assert out.dead_letter is not None and out.dead_letter.stage == "decode"
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
    out = p.on_event(table, bad, 0, 2, NOW)
    assert out.dead_letter is not None and out.dead_letter.reason == "unknown_event_type"
    assert table == {}


def test_tick_emits_once_after_quiet_period_with_deterministic_version():
    p, table = StreamProcessor(HistoryLimits(), POLICY), {}
    p.on_event(table, event(1), 0, 100, NOW)
    p.on_event(table, event(2, kind="impression"), 0, 101, NOW + 100)
    p.on_event(table, event(3, kind="view"), 0, 102, NOW + 200)
    assert p.on_tick(table, 0, NOW + 600).requests == []  # 400 ms quiet only
    requests = p.on_tick(table, 0, NOW + 700).requests
    assert [(r.user_id, r.version, r.reason) for r in requests] == [("u1", 102, "quiet")]
    assert [e.event_type for e in requests[0].events] == ["click", "view"]
    assert p.on_tick(table, 0, NOW + 5000).requests == []


def test_duplicates_are_flagged_and_do_not_retrigger():
    p, table = StreamProcessor(HistoryLimits(), POLICY), {}
    p.on_event(table, event(1), 0, 100, NOW)
    assert len(p.on_tick(table, 0, NOW + 1000).requests) == 1
    assert p.on_event(table, event(1), 0, 150, NOW + 1100).duplicate
    assert p.on_tick(table, 0, NOW + 5000).requests == []


def test_pending_triggers_survive_a_restart_through_the_table():
    table: dict[bytes, bytes] = {}
    before = StreamProcessor(HistoryLimits(), POLICY)
    before.on_event(table, event(1, user="u1"), 1, 10, NOW)
    before.on_event(table, event(2, user="u2"), 1, 11, NOW)
    before.on_tick(table, 1, NOW + 100)  # not yet due
    after = StreamProcessor(HistoryLimits(), POLICY)  # new process, same (recovered) table
    assert after.reindex(list(table.items())) == 2
    emitted = after.on_tick(table, 1, NOW + 1000).requests
    assert sorted(r.user_id for r in emitted) == ["u1", "u2"]
    assert not load_history(table, "u1").pending


def test_profile_updates_land_in_the_history():
    p, table = StreamProcessor(HistoryLimits(), POLICY), {}
    raw = serde.encode(serde.PROFILE, {"user_id": "u1", "attributes": {"age": "25-34"}, "updated_at": NOW})
    assert p.on_profile(table, raw, 0).dead_letter is None
    p.on_event(table, event(1), 0, 5, NOW)
    (request,) = p.on_tick(table, 0, NOW + 1000).requests
    assert request.profile == {"age": "25-34"}
