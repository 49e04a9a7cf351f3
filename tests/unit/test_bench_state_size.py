"""`adcast bench state-size`: the per-user state it measures stays within the bound derived from the limits."""

import json
import random

from adcast.bench.state_size import FieldBytes, bound_bytes, fold_users, history_bytes
from adcast.cli import main
from adcast.core.events import EVENT_TYPES, MAX_FIELD_CHARS, MAX_TEXT_CHARS, validate_event
from adcast.core.history import MAX_PROFILE_ATTRIBUTES, HistoryLimits, UserHistory, bounded_profile, fold_event
from adcast.data.files import write_records
from adcast.data.synthetic import WorldSpec, generate

T0 = 1_767_225_600_000
WIDE = "\U0001d538"  # a letter of 4 bytes in UTF-8 that lower() keeps


def _events(n: int, rng: random.Random, adv: str, text: str, field: str) -> list[dict]:
    out = []
    for i in range(n):
        kind = rng.choice(EVENT_TYPES)
        out.append(
            {
                "event_id": f"e{i}",
                "user_id": "u1",
                "event_time": T0 + i * 1000,
                "event_type": kind,
                "advertiser_id": None if kind == "search" else f"{adv}{rng.randrange(300):03d}",
                "item_id": None,
                "category": field,
                "brand": field,
                "text": text if kind in ("search", "view") else None,
            }
        )
    return out


def test_report_orders_its_figures_and_stays_under_both_bounds(tmp_path, capsys):
    world = generate(WorldSpec(users=40, advertisers=30, seed=3))
    for kind, records in world.items():
        write_records(tmp_path, kind, records)
    assert main(["bench", "state-size", "--data", str(tmp_path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    b = r["bytes_per_user"]
    assert r["users"] == len(world["profiles"]) and r["invalid_events"] == 0
    assert 0 < b["p50"] <= b["p99"] <= b["max"] <= r["bound_for_data"] <= r["bound_by_design"]
    assert b["mean"] <= b["max"] and r["total_bytes"] >= b["max"]


def test_thousands_of_events_leave_the_state_bounded_by_the_limits():
    limits = HistoryLimits(min_events=6, dedupe_window=16, max_counters=8)
    events = _events(5000, random.Random(0), "adv-", "red running shoes for the trail", "running")
    attrs = {"age": "25-34", "city": "tier1"}
    histories, invalid, longest = fold_users(events, [{"user_id": "u1", "attributes": attrs}], limits)
    assert invalid == 0
    bound = bound_bytes(limits, longest)
    assert history_bytes(histories["u1"]) <= bound <= bound_bytes(limits)
    # the same fold, one event at a time: no intermediate state exceeds the bound either
    h = UserHistory("u1", profile=bounded_profile(attrs))
    largest = 0
    for offset, record in enumerate(events):
        fold_event(h, validate_event(record, record["event_time"]), offset, limits)
        assert len(h.events) <= limits.max_events and len(h.counters) <= limits.max_counters
        largest = max(largest, history_bytes(h))
    assert largest <= bound


def test_contract_maximum_input_stays_under_the_design_bound_which_it_nearly_reaches():
    limits = HistoryLimits()
    rng = random.Random(1)
    field = WIDE * MAX_FIELD_CHARS
    words = [WIDE * 20] * 12  # 12 words: all the history keeps of a text
    text = " ".join(words)[:MAX_TEXT_CHARS]
    events = _events(3000, rng, WIDE * (MAX_FIELD_CHARS - 3), text, field)
    attrs = {f"{i:03d}" + WIDE * 100: WIDE * 100 for i in range(MAX_PROFILE_ATTRIBUTES + 8)}
    histories, invalid, longest = fold_users(events, [{"user_id": "u1", "attributes": attrs}], limits)
    assert invalid == 0
    size = history_bytes(histories["u1"])
    bound = bound_bytes(limits)
    assert bound_bytes(limits, longest) <= bound == bound_bytes(limits, FieldBytes())
    # the bound holds, and it is not vacuous: adversarial input gets within a factor of two
    assert bound / 2 <= size <= bound


def test_it_measures_the_bytes_the_stream_tier_writes():
    from adcast.wire.history_encoder import encode_history

    world = generate(WorldSpec(users=15, advertisers=20, seed=5))
    histories, _, _ = fold_users(world["events"], world["profiles"], HistoryLimits())
    assert histories and all(len(encode_history(h)) == history_bytes(h) for h in histories.values())
