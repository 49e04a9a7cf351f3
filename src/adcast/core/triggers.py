"""When a user with new history needs an LLM re-prediction.

Not every event deserves an LLM call: bursts are coalesced. A pending user is emitted when it has
been quiet for `quiet_ms`, or when `max_delay_ms` has passed since its first pending event; and no
sooner than `min_interval_ms` after its previous emission unless a high-value event is pending.
"""

from __future__ import annotations

from dataclasses import dataclass

from adcast.core.history import UserHistory

QUIET = "quiet"
MAX_DELAY = "max_delay"
HIGH_VALUE = "high_value"


@dataclass(frozen=True, slots=True)
class TriggerPolicy:
    quiet_ms: int = 500
    max_delay_ms: int = 1500
    min_interval_ms: int = 1000

    def decide(self, history: UserHistory, now_ms: int) -> str | None:
        """The reason to emit now, or None to keep waiting (or when nothing is pending)."""
        if not history.pending:
            return None
        quiet = now_ms - history.last_event_at >= self.quiet_ms
        overdue = now_ms - history.pending_since >= self.max_delay_ms
        if not (quiet or overdue):
            return None
        if history.pending_high_value:
            return HIGH_VALUE
        if now_ms - history.last_emit_at < self.min_interval_ms:
            return None
        return QUIET if quiet else MAX_DELAY

    def next_check_ms(self, history: UserHistory) -> int:
        """The earliest wall time at which `decide` may say yes (for scheduling checks)."""
        due = min(history.last_event_at + self.quiet_ms, history.pending_since + self.max_delay_ms)
        if not history.pending_high_value:
            due = max(due, history.last_emit_at + self.min_interval_ms)
        return due


def mark_emitted(history: UserHistory, now_ms: int) -> None:
    history.emitted_version = history.version
    history.pending_since = 0
    history.pending_high_value = False
    history.last_emit_at = now_ms
