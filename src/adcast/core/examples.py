"""Training and evaluation examples: (history before an engagement -> the advertiser engaged).

Histories are folded by the same code the stream tier runs (adcast.core.history), and prompts
rendered by the same renderer the inference tier uses, so train and serve see the same text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
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
    shown: tuple[ShownAd, ...] = ()  # the ads shown before the version, as a request carries them
    # The user's events up to the version the prediction was made at (every salient event before
    # the target, and the impressions before the newest of them), when asked for (baselines).
    prior: tuple[Event, ...] = ()


TARGET_KINDS = ("repeat", "return", "new")


def target_kind(example: Example) -> str:
    """What the engagement is to the user: `repeat`, the advertiser of their last event (a save
    after a click); `return`, another of their own advertisers; `new`, one they had not engaged
    with (or whose counter was dropped)."""
    if example.events and example.events[-1].advertiser_id == example.target:
        return "repeat"
    return "return" if example.target in example.own else "new"


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


def iter_examples(
    events: Iterable[Mapping[str, Any]],
    profiles: Mapping[str, Mapping[str, str]],
    advertisers: set[str],
    limits: HistoryLimits,
    start: int = 0,
    end: int = _FAR_FUTURE_MS,
    with_prior: bool = False,
) -> Iterator[Example]:
    """Examples whose target time lies in [start, end); histories use every earlier event."""
    by_user: dict[str, list[Event]] = defaultdict(list)
    for r in events:
        by_user[r["user_id"]].append(to_event(r))
    for user_id in sorted(by_user):
        history = UserHistory(user_id=user_id, profile=dict(profiles.get(user_id, {})))
        ordered = sorted(by_user[user_id], key=lambda e: (e.event_time, e.event_id))
        for offset, e in enumerate(ordered):
            if e.event_time >= end:
                break
            if (
                start <= e.event_time
                and e.event_type in ENGAGEMENTS
                and e.advertiser_id in advertisers
                and history.events
            ):
                yield Example(
                    user_id,
                    e.event_time,
                    dict(history.profile),
                    tuple(history.events),
                    e.advertiser_id,
                    ranked_advertisers(history, limits),
                    shown_ads(history, limits),
                    tuple(ordered[: history.version + 1]) if with_prior else (),
                )
            fold_event(history, e, offset, e.event_time, limits)
