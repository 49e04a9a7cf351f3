"""Prediction requests: the snapshot of a history the inference tier scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adcast.core.history import HistoryEvent, HistoryLimits, ShownAd, UserHistory, ranked_advertisers, shown_ads

# The versions the store orders exactly: Redis's Lua compares numbers as doubles, which hold
# every integer of this range (live versions are offsets >= 0, backfilled ones are negative).
MIN_VERSION = -(2**53)
MAX_VERSION = 2**53 - 1


@dataclass(frozen=True, slots=True)
class PredictionRequest:
    user_id: str
    version: int
    reason: str
    newest_event_time: int
    enqueued_at: int
    profile: dict[str, str]
    events: tuple[HistoryEvent, ...]
    own: tuple[str, ...] = ()
    shown: tuple[ShownAd, ...] = ()

    @classmethod
    def from_history(cls, history: UserHistory, reason: str, now_ms: int, limits: HistoryLimits) -> PredictionRequest:
        return cls(
            history.user_id,
            history.version,
            reason,
            history.newest_event_time,
            now_ms,
            dict(history.profile),
            tuple(history.events),
            ranked_advertisers(history, limits),
            shown_ads(history, limits),
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "version": self.version,
            "reason": self.reason,
            "newest_event_time": self.newest_event_time,
            "enqueued_at": self.enqueued_at,
            "profile": self.profile,
            "events": [e.to_record() for e in self.events],
            "own": list(self.own),
            "shown": [ad._asdict() for ad in self.shown],
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> PredictionRequest:
        return cls(
            r["user_id"],
            r["version"],
            r["reason"],
            r["newest_event_time"],
            r["enqueued_at"],
            dict(r["profile"]),
            tuple(HistoryEvent.from_record(e) for e in r["events"]),
            tuple(r.get("own", ())),
            tuple(
                ShownAd(ad["advertiser_id"], ad.get("category"), ad.get("after", False)) for ad in r.get("shown", ())
            ),
        )
