"""`adcast bench state-size`: bytes of the stream tier's per-user state, against its bound.

Folds every user's events of a data directory (default: the default synthetic world, generated
in memory) with the stream tier's own code: `adcast.core.history.fold_event` under the configured
limits (stream.history_events, stream.dedupe_window), events in event-time order with their
order as offsets, the profile capped as the stream tier caps it, and the user left as after its
last prediction. Each history is then encoded as the table stores it (`serde.encode(serde.HISTORY,
...)`, byte for byte what the stream tier's own encoder, adcast.wire.history_encoder, writes: the RocksDB
value and each changelog record) and measured.

Two bounds come from the limits, each the size of a worst-case history (2N events, every counter,
twice the shown impressions, a full dedupe window, every long at its widest): `bound_by_design` fills every field to the
event contract's maximum (128-character ids and fields and 256-character texts, of 4-byte UTF-8
characters; 32 profile attributes of 64 characters), so no input can exceed it; `bound_for_data`
fills them only as long as the longest of each in this data.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from adcast.config import Settings
from adcast.core.events import EVENT_TYPES, MAX_FIELD_CHARS, MAX_ID_CHARS, MAX_TEXT_CHARS, Event, validate_event
from adcast.core.history import (
    MAX_PROFILE_ATTRIBUTES,
    MAX_PROFILE_TEXT,
    Counter,
    HistoryEvent,
    HistoryLimits,
    Impression,
    UserHistory,
    bounded_profile,
    fold_event,
)
from adcast.core.ranking import percentile
from adcast.core.triggers import mark_emitted
from adcast.errors import ConfigError, InvalidEvent
from adcast.wire import serde

UTF8_MAX_BYTES = 4  # the contract limits characters; a character takes up to 4 bytes in UTF-8
_WIDEST_LONG = 2**63 - 1  # a 10-byte varint
_WIDEST_INT = 2**31 - 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="data directory (default: the default synthetic world, in memory)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


@dataclass(frozen=True, slots=True)
class FieldBytes:
    """The longest value, in UTF-8 bytes, of each kind of field a history holds."""

    user_id: int = MAX_ID_CHARS * UTF8_MAX_BYTES
    field: int = MAX_FIELD_CHARS * UTF8_MAX_BYTES  # advertiser_id, category, brand
    text: int = MAX_TEXT_CHARS * UTF8_MAX_BYTES  # text as the history keeps it (lower-cased words)
    profile_attrs: int = MAX_PROFILE_ATTRIBUTES
    profile_key: int = MAX_PROFILE_TEXT * UTF8_MAX_BYTES
    profile_value: int = MAX_PROFILE_TEXT * UTF8_MAX_BYTES


def history_bytes(history: UserHistory) -> int:
    return len(serde.encode(serde.HISTORY, history.to_record()))


def worst_case_history(limits: HistoryLimits, sizes: FieldBytes) -> UserHistory:
    """A history as large as the limits allow for fields of these sizes. Avro writes strings as
    length + bytes and longs as varints, so longer strings and wider numbers never shrink it."""

    def s(n: int) -> str:
        return "x" * n

    digits = len(str(max(0, sizes.profile_attrs - 1)))
    width = max(sizes.profile_key, digits)
    profile = {str(i).rjust(width, "k"): s(sizes.profile_value) for i in range(sizes.profile_attrs)}
    widest_type = max(EVENT_TYPES, key=len)
    event = HistoryEvent(_WIDEST_LONG, widest_type, s(sizes.field), s(sizes.field), s(sizes.field), s(sizes.text))
    return UserHistory(
        user_id=s(sizes.user_id),
        version=_WIDEST_LONG,
        partition=_WIDEST_INT,
        profile=profile,
        events=[event] * limits.max_events,
        counters=[Counter(s(sizes.field), 1.0, _WIDEST_LONG) for _ in range(limits.max_counters)],
        impressions=[Impression(_WIDEST_LONG, s(sizes.field), s(sizes.field))] * limits.shown,
        seen_ids=b"\xff" * (limits.dedupe_window * 8),
        newest_event_time=_WIDEST_LONG,
        pending_since=_WIDEST_LONG,
        last_event_at=_WIDEST_LONG,
        pending_high_value=True,
        last_emit_at=_WIDEST_LONG,
        emitted_version=_WIDEST_LONG,
        pending_engaged=True,
        engaged_offset=_WIDEST_LONG,
    )


def bound_bytes(limits: HistoryLimits, sizes: FieldBytes | None = None) -> int:
    """Most bytes one user's serialized history can take under these limits and field sizes."""
    return history_bytes(worst_case_history(limits, sizes or FieldBytes()))


@dataclass
class _Longest:
    user_id: int = 0
    field: int = 0
    text: int = 0
    profile_attrs: int = 0
    profile_key: int = 0
    profile_value: int = 0

    def see_event(self, e: Event, kept: HistoryEvent) -> None:
        self.user_id = max(self.user_id, _nbytes(e.user_id))
        self.field = max(self.field, _nbytes(kept.advertiser_id), _nbytes(kept.category), _nbytes(kept.brand))
        self.text = max(self.text, _nbytes(kept.text))

    def see_profile(self, user_id: str, profile: dict[str, str]) -> None:
        self.user_id = max(self.user_id, _nbytes(user_id))
        self.profile_attrs = max(self.profile_attrs, len(profile))
        self.profile_key = max([self.profile_key, *(_nbytes(k) for k in profile)])
        self.profile_value = max([self.profile_value, *(_nbytes(v) for v in profile.values())])


def _nbytes(value: str | None) -> int:
    return len(value.encode()) if value else 0


def fold_users(
    events: Iterable[dict[str, Any]], profiles: Iterable[dict[str, Any]], limits: HistoryLimits
) -> tuple[dict[str, UserHistory], int, FieldBytes]:
    """Every user's history after all their events: (histories, invalid events, longest fields)."""
    longest = _Longest()
    histories: dict[str, UserHistory] = {}
    for p in profiles:
        h = histories.setdefault(p["user_id"], UserHistory(user_id=p["user_id"]))
        h.profile = bounded_profile(p.get("attributes") or {})
        longest.see_profile(h.user_id, h.profile)
    invalid = 0
    ordered = sorted(events, key=lambda e: e["event_time"])
    for offset, record in enumerate(ordered):
        try:
            event = validate_event(record, now_ms=record["event_time"])
        except InvalidEvent:
            invalid += 1  # the stream tier dead-letters it: it never reaches the state
            continue
        h = histories.setdefault(event.user_id, UserHistory(user_id=event.user_id))
        if fold_event(h, event, offset, limits).applied:
            # What the history keeps of it (of an impression, less: its advertiser and category).
            longest.see_event(event, HistoryEvent.from_event(event))
    for h in histories.values():
        mark_emitted(h, h.last_event_at)  # the state as stored once its last prediction went out
    return histories, invalid, FieldBytes(**asdict(longest))


def bench_state_size(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from adcast.data.files import read_records

    limits = settings.stream.history_limits()
    if args.data:
        source = str(args.data)
        events: Iterable[dict[str, Any]] = read_records(args.data, "events")
        profiles: Iterable[dict[str, Any]] = read_records(args.data, "profiles")
    else:
        from adcast.data.synthetic import WorldSpec, generate

        spec = WorldSpec()
        world = generate(spec)
        source = f"synthetic world ({spec.users} users, {spec.advertisers} advertisers, seed {spec.seed})"
        events, profiles = world["events"], world["profiles"]
    histories, invalid, longest = fold_users(events, profiles, limits)
    sizes = [history_bytes(h) for h in histories.values()]
    if not sizes:
        raise ConfigError(f"{source} has no users to measure (no profiles and no valid events)")
    return {
        "data": source,
        "users": len(sizes),
        "invalid_events": invalid,
        "limits": {
            "min_events": limits.min_events,
            "max_events": limits.max_events,
            "dedupe_window": limits.dedupe_window,
            "max_counters": limits.max_counters,
            "shown": limits.shown,
            "profile_attrs": MAX_PROFILE_ATTRIBUTES,
        },
        "bytes_per_user": {
            "mean": round(sum(sizes) / len(sizes), 1),
            "p50": round(percentile(sizes, 50), 1),
            "p99": round(percentile(sizes, 99), 1),
            "max": max(sizes),
        },
        "total_bytes": sum(sizes),
        "longest_fields_in_data": asdict(longest),
        "bound_for_data": bound_bytes(limits, longest),
        "bound_by_design": bound_bytes(limits),
    }


def format_report(r: dict[str, Any]) -> str:
    b, lim = r["bytes_per_user"], r["limits"]
    return "\n".join(
        [
            f"serialized history per user (UserHistory, Avro, as the table stores it) over {r['users']:,} users "
            f"of {r['data']}",
            f"  limits: {lim['min_events']}-{lim['max_events']} events, {lim['max_counters']} counters, "
            f"{lim['shown']} shown impressions, {lim['dedupe_window']} remembered ids, "
            f"{lim['profile_attrs']} profile attributes",
            f"  mean {b['mean']:,.0f} B   p50 {b['p50']:,.0f} B   p99 {b['p99']:,.0f} B   max {b['max']:,} B"
            f"   (all users: {r['total_bytes'] / 1e6:.2f} MB)",
            f"  bound for this data's longest fields  {r['bound_for_data']:>9,} B",
            f"  bound by design (contract maxima)     {r['bound_by_design']:>9,} B",
        ]
        + (
            [f"  {r['invalid_events']} invalid events skipped (dead-lettered by the stream tier)"]
            if r["invalid_events"]
            else []
        )
    )
