"""The bounded per-user history and how one event folds into it.

Folding is pure and deterministic: the same events at the same input offsets give the same
history, whatever the timing. That is what makes versions deterministic under replay and lets
Redis converge after a crash (duplicates are dropped by event id inside the state itself).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple

from adcast.core.events import (
    ADD_TO_CART,
    CHECKOUT,
    CLICK,
    IMPRESSION,
    SAVE,
    SEARCH,
    VIEW,
    Event,
)
from adcast.core.text import text_words

# Engagement weight per event type for the decayed per-advertiser counters. Impressions count for
# nothing here: they reach the prompt through their own bounded list (`shown_ads`).
COUNTER_WEIGHTS = {IMPRESSION: 0.0, VIEW: 0.5, CLICK: 1.0, SEARCH: 0.0, SAVE: 2.0, ADD_TO_CART: 3.0, CHECKOUT: 5.0}
# Events that always deserve a prompt call: intent to buy.
HIGH_VALUE_TYPES = frozenset({ADD_TO_CART, CHECKOUT})
_HASH_BYTES = 8


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """Bounds of the per-user state (defaults keep it well under 2 KB serialized)."""

    min_events: int = 12  # N: after a trim the history keeps N events; it grows to 2N
    dedupe_window: int = 32  # event ids remembered for duplicate detection
    max_counters: int = 16  # advertisers with decayed counters
    shown: int = 8  # impressions the prompt shows: the newest ones
    counter_half_life_ms: int = 7 * 24 * 3600 * 1000

    @property
    def max_events(self) -> int:
        return 2 * self.min_events


class HistoryEvent(NamedTuple):
    """An event the user made (anything but an impression) as kept in the history and rendered
    into the prompt. Immutable (the state encoder reuses an event's bytes); a named tuple because
    one is built per event."""

    event_time: int
    event_type: str
    advertiser_id: str | None = None
    category: str | None = None
    brand: str | None = None
    text: str | None = None

    @classmethod
    def from_event(cls, e: Event) -> HistoryEvent:
        # Keep only the words the prompt shows: it bounds the state and changes no prompt.
        text = " ".join(text_words(e.text)) if e.text else None
        return cls(e.event_time, e.event_type, e.advertiser_id, e.category, e.brand, text or None)

    def to_record(self) -> dict[str, Any]:
        return {
            "event_time": self.event_time,
            "event_type": self.event_type,
            "advertiser_id": self.advertiser_id,
            "category": self.category,
            "brand": self.brand,
            "text": self.text,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> HistoryEvent:
        return cls(
            r["event_time"], r["event_type"], r.get("advertiser_id"), r.get("category"), r.get("brand"), r.get("text")
        )


class Impression(NamedTuple):
    """An ad shown to the user, at its input offset: the offset decides which prompts hold it."""

    offset: int
    advertiser_id: str
    category: str | None = None


class ShownAd(NamedTuple):
    """An impression as a prompt shows it."""

    advertiser_id: str
    category: str | None = None
    # Shown since the user's newest own event (the page they are on), not before it.
    after: bool = False


@dataclass(slots=True)
class Counter:
    advertiser_id: str
    weight: float
    updated_at: int


@dataclass(slots=True)
class UserHistory:
    user_id: str
    version: int = -1  # input offset of the newest event that changed the prompt
    partition: int = -1
    profile: dict[str, str] = field(default_factory=dict)
    events: list[HistoryEvent] = field(default_factory=list)  # oldest first, by event time
    counters: list[Counter] = field(default_factory=list)
    impressions: list[Impression] = field(default_factory=list)  # the newest `shown`, by offset
    seen_ids: bytes = b""
    newest_event_time: int = 0
    # Trigger state (wall-clock ms; 0 is "not pending"); it lives here so that it survives restarts.
    pending_since: int = 0
    last_event_at: int = 0
    pending_high_value: bool = False
    last_emit_at: int = 0
    emitted_version: int = -1
    pending_engaged: bool = False  # something the user did (not only ads shown) is pending
    engaged_offset: int = -1  # input offset of the newest event the user made (not an impression)

    @property
    def pending(self) -> bool:
        """A change the trigger policy wanted scored waits for its call. Changes it skipped are
        not pending, but they are in the prompt of the next call (it renders the history)."""
        return self.pending_since > 0

    @property
    def unscored(self) -> bool:
        """The newest version has not been emitted (pending, or skipped by the policy so far)."""
        return self.version > self.emitted_version

    def to_record(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "version": self.version,
            "partition": self.partition,
            "profile": self.profile,
            "events": [e.to_record() for e in self.events],
            "counters": [
                {"advertiser_id": c.advertiser_id, "weight": c.weight, "updated_at": c.updated_at}
                for c in self.counters
            ],
            "seen_ids": self.seen_ids,
            "newest_event_time": self.newest_event_time,
            "pending_since": self.pending_since,
            "last_event_at": self.last_event_at,
            "pending_high_value": self.pending_high_value,
            "last_emit_at": self.last_emit_at,
            "emitted_version": self.emitted_version,
            "impressions": [i._asdict() for i in self.impressions],
            "pending_engaged": self.pending_engaged,
            "engaged_offset": self.engaged_offset,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> UserHistory:
        return cls(
            user_id=r["user_id"],
            version=r["version"],
            partition=r["partition"],
            profile=dict(r["profile"]),
            events=[HistoryEvent.from_record(e) for e in r["events"]],
            counters=[Counter(c["advertiser_id"], c["weight"], c["updated_at"]) for c in r["counters"]],
            seen_ids=r["seen_ids"],
            newest_event_time=r["newest_event_time"],
            pending_since=r["pending_since"],
            last_event_at=r["last_event_at"],
            pending_high_value=r["pending_high_value"],
            last_emit_at=r["last_emit_at"],
            emitted_version=r["emitted_version"],
            impressions=[
                Impression(i["offset"], i["advertiser_id"], i.get("category")) for i in r.get("impressions", ())
            ],
            pending_engaged=r.get("pending_engaged", False),
            engaged_offset=r.get("engaged_offset", -1),
        )


MAX_PROFILE_ATTRIBUTES = 32  # attributes kept per user, in key order
MAX_PROFILE_TEXT = 64  # characters kept of each attribute key and value


def bounded_profile(attributes: Mapping[str, Any]) -> dict[str, str]:
    """A profile as the history keeps it: at most 32 attributes (by key), keys and values cut to 64
    characters. Bounds the state and the prompt whatever a profile producer sends."""
    items = sorted(attributes.items())[:MAX_PROFILE_ATTRIBUTES]
    return {str(k)[:MAX_PROFILE_TEXT]: str(v)[:MAX_PROFILE_TEXT] for k, v in items}


def event_id_hash(event_id: str) -> bytes:
    # A stable hash (not Python's salted hash()): the window must mean the same after restarts.
    return hashlib.blake2b(event_id.encode(), digest_size=_HASH_BYTES).digest()


def _seen(history: UserHistory, digest: bytes) -> bool:
    ids = history.seen_ids
    at = ids.find(digest)
    while at % _HASH_BYTES:  # a match must start on a digest boundary (-1 % 8 is 7: not found)
        if at < 0:
            return False
        at = ids.find(digest, at + 1)
    return True


def _remember(history: UserHistory, digest: bytes, limits: HistoryLimits) -> None:
    ids = history.seen_ids + digest
    keep = limits.dedupe_window * _HASH_BYTES
    history.seen_ids = ids[-keep:] if len(ids) > keep else ids


def _decay(weight: float, from_ms: int, to_ms: int, half_life_ms: int) -> float:
    if to_ms <= from_ms:
        return weight
    return weight * math.exp(-math.log(2) * (to_ms - from_ms) / half_life_ms)


def _count(history: UserHistory, event: Event, limits: HistoryLimits) -> None:
    gain = COUNTER_WEIGHTS[event.event_type]
    if not event.advertiser_id or gain <= 0:
        return
    t = event.event_time
    for c in history.counters:
        if c.advertiser_id == event.advertiser_id:
            # Decay to the later of the two times, so out-of-order events don't inflate weights.
            if t >= c.updated_at:
                c.weight = _decay(c.weight, c.updated_at, t, limits.counter_half_life_ms) + gain
                c.updated_at = t
            else:
                c.weight += _decay(gain, t, c.updated_at, limits.counter_half_life_ms)
            break
    else:
        history.counters.append(Counter(event.advertiser_id, gain, t))
    if len(history.counters) > limits.max_counters:
        history.counters.sort(key=_strength_order(history, limits))
        del history.counters[limits.max_counters :]


def _insert_event(history: UserHistory, event: HistoryEvent, limits: HistoryLimits) -> None:
    # Events are kept in event-time order; a late event lands in its place (ties keep arrival order).
    events = history.events
    if not events or events[-1].event_time <= event.event_time:
        events.append(event)  # the usual case, in order
    else:
        events.insert(bisect.bisect_right(events, event.event_time, key=attrgetter("event_time")), event)
    if len(history.events) > limits.max_events:
        # Drop old events in a chunk so the prompt's prefix stays byte-identical between
        # predictions most of the time (the engine's prefix cache can then skip it).
        del history.events[: len(history.events) - limits.min_events]


def _keep_impression(history: UserHistory, impression: Impression, limits: HistoryLimits) -> None:
    impressions = history.impressions
    if any(i.offset == impression.offset for i in impressions):
        return  # re-read after its id left the dedupe window
    if not impressions or impressions[-1].offset < impression.offset:
        impressions.append(impression)  # the usual case: offsets grow
    else:
        impressions.insert(bisect.bisect_right(impressions, impression.offset, key=attrgetter("offset")), impression)
    if len(impressions) > limits.shown:
        del impressions[: len(impressions) - limits.shown]


def shown_ads(history: UserHistory, limits: HistoryLimits) -> tuple[ShownAd, ...]:
    """The ads shown to the user that the prompt holds: the newest `limits.shown` impressions,
    oldest first, each marked `after` when it was read after the user's newest own event (the
    page they browse now, rather than the one they acted on). An impression is a change of the
    prompt like any other: it moves the version to its input offset, so the prompt of a version
    is fixed by the topic, whatever the timing."""
    since = history.engaged_offset
    return tuple(ShownAd(i.advertiser_id, i.category, i.offset > since) for i in history.impressions[-limits.shown :])


@dataclass(frozen=True, slots=True)
class FoldResult:
    """What one event did to a history; the trigger policy decides from it whether the change is
    worth an LLM call (adcast.core.triggers)."""

    applied: bool  # False when the event was a duplicate
    changed: bool = False  # the prompt changed: the version moved to the event's offset
    impression: bool = False  # the change is an ad shown, not something the user did
    novel: bool = False  # the change can move the top-K (see `_is_novel`)
    high_value: bool = False  # an event type that always deserves a prompt call


DUPLICATE = FoldResult(applied=False)
UNCHANGED = FoldResult(applied=True)


def _is_novel(history: UserHistory, event: Event, limits: HistoryLimits) -> bool:
    """Whether a change can move the user's top-K, judged before it is folded: an impression of
    an ad or a category the shown list lacks; anything the user does, except one more
    engagement with the advertiser they already engage with most."""
    if event.event_type == IMPRESSION:
        shown = history.impressions[-limits.shown :]
        return all(i.advertiser_id != event.advertiser_id for i in shown) or (
            event.category is not None and all(i.category != event.category for i in shown)
        )
    if not event.advertiser_id or not history.counters:
        return True
    return min(history.counters, key=_strength_order(history, limits)).advertiser_id != event.advertiser_id


def fold_event(history: UserHistory, event: Event, offset: int, limits: HistoryLimits) -> FoldResult:
    """Fold one validated event, read at input `offset`, into `history` in place."""
    digest = event_id_hash(event.event_id)
    if _seen(history, digest):
        return DUPLICATE
    _remember(history, digest, limits)
    shown = event.event_type == IMPRESSION
    if shown and not event.advertiser_id:
        return UNCHANGED  # nothing to show in the prompt
    novel = _is_novel(history, event, limits)
    _count(history, event, limits)
    if shown and event.advertiser_id:
        _keep_impression(history, Impression(offset, event.advertiser_id, event.category), limits)
    else:
        _insert_event(history, HistoryEvent.from_event(event), limits)
        history.engaged_offset = max(history.engaged_offset, offset)
    # Freshness is measured from the newest event that changed the prompt.
    history.newest_event_time = max(history.newest_event_time, event.event_time)
    history.version = max(history.version, offset)
    return FoldResult(
        applied=True,
        changed=True,
        impression=shown,
        novel=novel,
        high_value=event.event_type in HIGH_VALUE_TYPES,
    )


def ranked_advertisers(history: UserHistory, limits: HistoryLimits) -> tuple[str, ...]:
    """The user's own advertisers, strongest first, by counter weight decayed to the newest
    counter update (a time taken from the events, so the ranking is deterministic)."""
    if not history.counters:
        return ()
    return tuple(c.advertiser_id for c in sorted(history.counters, key=_strength_order(history, limits)))


def _strength_order(history: UserHistory, limits: HistoryLimits) -> Callable[[Counter], tuple[float, str]]:
    """The sort key of the user's counters, strongest first (the first is the strongest)."""
    ref = max(c.updated_at for c in history.counters)
    return lambda c: (-_decay(c.weight, c.updated_at, ref, limits.counter_half_life_ms), c.advertiser_id)
