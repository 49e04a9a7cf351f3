"""When a change of a user's prompt is worth an LLM re-prediction, and when to make the call.

Every event that changes the prompt moves the user's version (adcast.core.history.fold_event);
the policy decides which of those changes make the user pending:

- `value` (the default): a change that can move the top-K — an ad or a category new to the
  prompt's shown list, a new advertiser, any search or view without one, a high-value event. The
  same ad shown again, or one more engagement with the user's strongest advertiser, is not.
- `engagements`: everything the user does; impressions never trigger.
- `every_change`: every change, scored at once (the most calls and the freshest; a yardstick).

A change the policy skips is still in the prompt of the next call, which renders the history; and
a user whose newest version was never scored is scored once quiet for `settle_ms`, so the newest
version of every user reaches Redis and a replay, or a restart, ends on the same prompts.
A pending user is emitted when it has been quiet for `quiet_ms`, or when `max_delay_ms` has passed
since its first pending change; and no sooner than `min_interval_ms` after its previous emission
unless a high-value event is pending (`shown_interval_ms` when only ads shown are pending, which
arrive in streams as the user scrolls: reason `shown`). Bursts are coalesced that way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adcast.core.history import FoldResult, UserHistory

QUIET = "quiet"
MAX_DELAY = "max_delay"
HIGH_VALUE = "high_value"
CHANGE = "change"  # the every_change policy's reason
SETTLE = "settle"  # the newest version, skipped so far, once the user is quiet
SHOWN = "shown"  # ads shown alone, held by the value policy's longer interval
# Kafka header of an affinity update: the reason its request was emitted. A settle call is late on
# purpose, so freshness (newest event to Redis) is measured on the other calls only.
REASON_HEADER = "adcast-reason"

PolicyName = Literal["value", "engagements", "every_change"]
POLICIES: tuple[PolicyName, ...] = ("value", "engagements", "every_change")


@dataclass(frozen=True, slots=True)
class TriggerPolicy:
    quiet_ms: int = 500
    max_delay_ms: int = 1500
    min_interval_ms: int = 1000
    shown_interval_ms: int = 10_000
    settle_ms: int | None = 300_000  # None: never (the simulator's engagement-only baseline)
    name: PolicyName = "value"

    def wants(self, change: FoldResult) -> bool:
        """Whether this change is worth a call under the policy."""
        if not change.changed:
            return False
        if self.name == "every_change":
            return True
        if self.name == "engagements":
            return not change.impression
        return change.novel or change.high_value

    def note(self, history: UserHistory, change: FoldResult, now_ms: int) -> bool:
        """Record a folded event in the history's trigger state; True when the prompt changed
        (the caller schedules a check at `next_check_ms`)."""
        if not change.changed:
            return False
        history.last_event_at = now_ms
        if self.wants(change):
            if history.pending_since == 0:
                history.pending_since = max(now_ms, 1)  # 0 means "not pending"
            history.pending_high_value = history.pending_high_value or change.high_value
            history.pending_engaged = history.pending_engaged or not change.impression
        return True

    def decide(self, history: UserHistory, now_ms: int) -> str | None:
        """The reason to emit now, or None to keep waiting (or when nothing is waiting)."""
        if not history.pending:
            if self.waiting(history) and now_ms - history.last_event_at >= (self.settle_ms or 0):
                return SETTLE
            return None
        if self.name == "every_change":
            return CHANGE
        quiet = now_ms - history.last_event_at >= self.quiet_ms
        overdue = now_ms - history.pending_since >= self.max_delay_ms
        if not (quiet or overdue):
            return None
        if history.pending_high_value:
            return HIGH_VALUE
        if now_ms - history.last_emit_at < self._interval(history):
            return None
        if not history.pending_engaged:  # only the value policy lets ads shown alone pend
            return SHOWN
        return QUIET if quiet else MAX_DELAY

    def next_check_ms(self, history: UserHistory) -> int:
        """The earliest wall time at which `decide` may say yes (for scheduling checks)."""
        if not history.pending:
            return history.last_event_at + (self.settle_ms or 0)
        if self.name == "every_change":
            return history.last_event_at
        due = min(history.last_event_at + self.quiet_ms, history.pending_since + self.max_delay_ms)
        if not history.pending_high_value:
            due = max(due, history.last_emit_at + self._interval(history))
        return due

    def waiting(self, history: UserHistory) -> bool:
        """Whether a check is still due for this user: a change pending, or one to settle."""
        return history.pending or (history.unscored and self.settle_ms is not None)

    def _interval(self, history: UserHistory) -> int:
        """The least time between two calls: ads shown arrive in streams as the user scrolls, so
        a change that only shows ads waits longer than one the user made."""
        return self.min_interval_ms if history.pending_engaged else max(self.min_interval_ms, self.shown_interval_ms)


def mark_emitted(history: UserHistory, now_ms: int) -> None:
    history.emitted_version = history.version
    history.pending_since = 0
    history.pending_high_value = False
    history.pending_engaged = False
    history.last_emit_at = now_ms
