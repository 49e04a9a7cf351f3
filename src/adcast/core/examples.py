"""Training and evaluation examples: (history before an engagement -> the advertiser engaged).

Histories are folded by the same code the stream tier runs (adcast.core.history), and prompts
rendered by the same renderer the inference tier uses, so train and serve see the same text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adcast.core.events import ENGAGEMENTS, Event
from adcast.core.history import (
    HistoryEvent,
    HistoryLimits,
    ShownAd,
    UserHistory,
    fold_event,
    ranked_advertisers,
    shown_ads,
)

_FAR_FUTURE_MS = 2**62


@dataclass(frozen=True, slots=True)
class Example:
    user_id: str
    event_time: int
    profile: dict[str, str]
    events: tuple[HistoryEvent, ...]
    target: str  # advertiser id
    own: tuple[str, ...]  # the user's own advertisers, strongest first, as a request carries them
    shown: tuple[ShownAd, ...] = ()  # the newest ads shown, as a request carries them
    # The user's events folded into the prompt the prediction was made from, when asked for
    # (the baselines see exactly these).
    prior: tuple[Event, ...] = ()


TARGET_KINDS = ("repeat", "return", "new")


def target_kind(example: Example) -> str:
    """What the engagement is to the user: `repeat`, the advertiser of their last event (a save
    after a click); `return`, another of their own advertisers; `new`, one they had not engaged
    with (or whose counter was dropped)."""
    return target_kind_of(example.events, example.own, example.target)


def target_kind_of(events: Sequence[HistoryEvent], own: Sequence[str], target: str) -> str:
    """`target_kind` of an engagement with `target` after `events`, the user's own advertisers `own`."""
    if events and events[-1].advertiser_id == target:
        return "repeat"
    return "return" if target in own else "new"


# The time quantile that splits training from evaluation (adcast train, examples, eval).
DEFAULT_CUTOFF_FRACTION = 0.8


def cutoff_time(event_times: Iterable[int], fraction: float) -> int:
    """The event time at `fraction` of all events sorted by time (the evaluation protocol)."""
    times = sorted(event_times)
    if not times:
        raise ValueError("no events")
    return times[min(len(times) - 1, int(len(times) * fraction))]


def to_event(record: Mapping[str, Any]) -> Event:
    return Event(
        record["event_id"],
        record["user_id"],
        int(record["event_time"]),
        record["event_type"],
        record.get("advertiser_id"),
        record.get("item_id"),
        record.get("category"),
        record.get("brand"),
        record.get("text"),
    )


# Events newer than this before an engagement are left out of its prompt: a prediction cannot be
# fresher than the pipeline that makes it (about a second, event to Redis, at p99).
DEFAULT_SERVING_DELAY_MS = 1000


def iter_examples(
    events: Iterable[Mapping[str, Any]],
    profiles: Mapping[str, Mapping[str, str]],
    advertisers: set[str],
    limits: HistoryLimits,
    start: int = 0,
    end: int = _FAR_FUTURE_MS,
    with_prior: bool = False,
    serving_delay_ms: int = 0,
) -> Iterator[Example]:
    """Examples whose target time lies in [start, end). Each is predicted from the prompt of the
    user's newest version `serving_delay_ms` before it: every earlier event at least that old,
    impressions included, folded by the stream tier's code."""
    by_user: dict[str, list[Event]] = defaultdict(list)
    for r in events:
        by_user[r["user_id"]].append(to_event(r))
    for user_id in sorted(by_user):
        history = UserHistory(user_id=user_id, profile=dict(profiles.get(user_id, {})))
        ordered = sorted(by_user[user_id], key=lambda e: (e.event_time, e.event_id))
        folded = 0
        for i, e in enumerate(ordered):
            if e.event_time >= end:
                break
            if start > e.event_time or e.event_type not in ENGAGEMENTS or e.advertiser_id not in advertisers:
                continue
            while folded < i and ordered[folded].event_time <= e.event_time - serving_delay_ms:
                fold_event(history, ordered[folded], folded, limits)
                folded += 1
            if history.events:
                yield Example(
                    user_id,
                    e.event_time,
                    dict(history.profile),
                    tuple(history.events),
                    e.advertiser_id,
                    ranked_advertisers(history, limits),
                    shown_ads(history, limits),
                    tuple(ordered[:folded]) if with_prior else (),
                )
