"""The stream tier's logic, free of Faust: decode, validate, dedupe, fold, decide, emit.

The Faust agent (stream/app.py) owns the I/O: it hands each message here with the table as a
plain mapping and sends what comes back. That keeps this testable with a dict for a table.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field

from adcast import serde
from adcast.core.events import validate_event
from adcast.core.history import FoldResult, HistoryLimits, UserHistory, fold_event
from adcast.core.requests import PredictionRequest
from adcast.core.triggers import TriggerPolicy, mark_emitted
from adcast.errors import InvalidEvent, SerdeError

log = logging.getLogger(__name__)

Table = MutableMapping[bytes, bytes]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    stage: str
    reason: str
    detail: str


@dataclass(slots=True)
class Outcome:
    """What one message produced; the adapter sends it."""

    requests: list[PredictionRequest] = field(default_factory=list)
    dead_letter: DeadLetter | None = None
    duplicate: bool = False


def load_history(table: Table, user_id: str) -> UserHistory:
    raw = table.get(user_id.encode())
    if raw is None:
        return UserHistory(user_id=user_id)
    return UserHistory.from_record(serde.decode(serde.HISTORY, raw))


def store_history(table: Table, history: UserHistory) -> None:
    table[history.user_id.encode()] = serde.encode(serde.HISTORY, history.to_record())


class StreamProcessor:
    def __init__(self, limits: HistoryLimits, policy: TriggerPolicy) -> None:
        self.limits = limits
        self.policy = policy
        # partition -> user -> earliest wall time a trigger may fire. In memory only: it is
        # rebuilt from the table (which holds the pending state) after every recovery.
        self.pending: dict[int, dict[str, int]] = {}

    def on_event(self, table: Table, value: bytes | None, partition: int, offset: int, now_ms: int) -> Outcome:
        try:
            event = validate_event(serde.decode(serde.EVENT, value), now_ms)
        except SerdeError as exc:
            return Outcome(dead_letter=DeadLetter("decode", exc.reason, exc.detail))
        except InvalidEvent as exc:
            return Outcome(dead_letter=DeadLetter("validate", exc.reason, exc.detail))
        history = load_history(table, event.user_id)
        history.partition = partition
        result: FoldResult = fold_event(history, event, offset, now_ms, self.limits)
        if not result.applied:
            return Outcome(duplicate=True)
        store_history(table, history)
        if result.salient:
            self.pending.setdefault(partition, {})[event.user_id] = self.policy.next_check_ms(history)
        return Outcome()

    def on_profile(self, table: Table, value: bytes | None, partition: int) -> Outcome:
        try:
            record = serde.decode(serde.PROFILE, value)
        except SerdeError as exc:
            return Outcome(dead_letter=DeadLetter("decode", exc.reason, exc.detail))
        user_id = record["user_id"]
        if not user_id or len(user_id) > 128:
            return Outcome(dead_letter=DeadLetter("validate", "bad_user_id", "profile user_id empty or oversized"))
        history = load_history(table, user_id)
        history.partition = partition
        history.profile = {str(k)[:64]: str(v)[:64] for k, v in sorted(record["attributes"].items())[:32]}
        store_history(table, history)
        return Outcome()

    def on_tick(self, table: Table, partition: int, now_ms: int) -> Outcome:
        """Emit requests for the partition's pending users whose trigger is due."""
        out = Outcome()
        users = self.pending.get(partition)
        if not users:
            return out
        due = [u for u, at in users.items() if at <= now_ms]
        for user_id in due:
            history = load_history(table, user_id)
            reason = self.policy.decide(history, now_ms)
            if reason is None:
                if history.pending:
                    users[user_id] = self.policy.next_check_ms(history)
                else:
                    del users[user_id]
                continue
            out.requests.append(PredictionRequest.from_history(history, reason, now_ms, self.limits))
            mark_emitted(history, now_ms)
            store_history(table, history)
            del users[user_id]
        return out

    def reindex(self, items: list[tuple[bytes, bytes]]) -> int:
        """Rebuild the pending index from the table after recovery; returns users pending."""
        self.pending.clear()
        count = 0
        for _, raw in items:
            history = UserHistory.from_record(serde.decode(serde.HISTORY, raw))
            if history.pending:
                self.pending.setdefault(history.partition, {})[history.user_id] = self.policy.next_check_ms(history)
                count += 1
        return count
