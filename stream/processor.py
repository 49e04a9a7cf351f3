"""The stream tier's logic, free of Faust: decode, validate, dedupe, fold, decide, emit.

`on_batch` folds a batch's inputs, in order, into the users' histories, reached through
`Histories` (stream/commit.py's HeldBatch: each history read once per batch, the changed ones
written once at its end), and returns what the batch produced: requests to send, inputs to
dead-letter, counts. A handler refuses an input by raising `Rejected`; no state is touched then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from adcast.core.events import MAX_ID_CHARS, check_id, validate_event
from adcast.core.history import HistoryLimits, UserHistory, bounded_profile, fold_event
from adcast.core.partitioning import partition_for
from adcast.core.requests import PredictionRequest
from adcast.core.triggers import TriggerPolicy, mark_emitted
from adcast.errors import InvalidEvent, Rejected
from adcast.wire import serde
from adcast.wire.event_decoder import decode_event

log = logging.getLogger(__name__)

EVENT, PROFILE, TICK = "event", "profile", "tick"


class Histories(Protocol):
    """The users' histories for one batch. `ref` is the input the user was reached through: Faust
    routes table access to that input's partition."""

    def load(self, user_id: str, ref: Any) -> UserHistory: ...

    def changed(self, user_id: str) -> None: ...


class Input(NamedTuple):
    """One consumed message: which kind, its bytes, where it came from, its key, and the adapter's
    handle. A named tuple: one is built per message, and a frozen dataclass costs several times more."""

    kind: str  # EVENT, PROFILE or TICK
    value: bytes | None
    partition: int
    offset: int
    ref: Any = None
    key: bytes | None = None


@dataclass(slots=True)
class Outcome:
    """What a batch produced; the adapter sends it."""

    requests: list[PredictionRequest] = field(default_factory=list)
    dead_letters: list[tuple[Input, Rejected]] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0


def decode_history(raw: bytes) -> UserHistory:
    return UserHistory.from_record(serde.decode(serde.HISTORY, raw))


class StreamProcessor:
    """`partitions`: the input topics' partition count. When given, every event and profile must
    honour the partitioning contract (key = user id, on the partition murmur2 gives that key),
    or it is dead-lettered (`key_mismatch`, `wrong_partition`) and no state is touched: a user's
    versions are offsets of one partition, and a record on another would jump them. None (tools,
    unit tests of the folding) checks neither."""

    def __init__(self, limits: HistoryLimits, policy: TriggerPolicy, partitions: int | None = None) -> None:
        self.limits = limits
        self.policy = policy
        self.partitions = partitions
        # partition -> user -> earliest wall time a trigger may fire. In memory only: it is
        # rebuilt from the table (which holds the pending state) after every recovery.
        self.pending: dict[int, dict[str, int]] = {}
        self._handlers: dict[str, Callable[[Histories, Input, int, Outcome], None]] = {
            EVENT: self._event,
            PROFILE: self._profile,
            TICK: self._tick,
        }

    def on_batch(self, histories: Histories, inputs: list[Input], now_ms: int) -> Outcome:
        out = Outcome()
        for item in inputs:
            try:
                self._handlers[item.kind](histories, item, now_ms, out)
            except Rejected as exc:
                out.dead_letters.append((item, exc))
            except Exception as exc:
                # A bug must neither stop the worker (it would stop on the same input again after
                # a restart) nor lose the input: it goes to the DLQ, raw, with the reason.
                log.exception("unexpected error kind=%s partition=%s offset=%s", item.kind, item.partition, item.offset)
                if item.kind != TICK:
                    out.dead_letters.append((item, Rejected("unexpected_error", f"{type(exc).__name__}: {exc}")))
        return out

    def _event(self, histories: Histories, item: Input, now_ms: int, out: Outcome) -> None:
        out.events += 1
        event = validate_event(decode_event(item.value), now_ms)
        self._check_contract(item, event.user_id)
        history = histories.load(event.user_id, item.ref)
        if history.partition == item.partition and item.offset <= history.version:
            # Re-read after a crash: offsets are committed after the state is written, and the gap
            # can hold more of this user's events than the id window remembers. The user's events
            # up to `version` (an offset of this partition) are folded already, impressions included.
            out.duplicates += 1
            return
        history.partition = item.partition
        result = fold_event(history, event, item.offset, self.limits)
        if not result.applied:
            out.duplicates += 1
            return
        histories.changed(event.user_id)
        if self.policy.note(history, result, now_ms):
            self.pending.setdefault(item.partition, {})[event.user_id] = self.policy.next_check_ms(history)

    def _profile(self, histories: Histories, item: Input, now_ms: int, out: Outcome) -> None:
        record = serde.decode(serde.PROFILE, item.value)
        user_id = check_id("user_id", record["user_id"])  # the events' rule: a blank id is no id
        self._check_contract(item, user_id)
        history = histories.load(user_id, item.ref)
        history.partition = item.partition
        history.profile = bounded_profile(record["attributes"])
        histories.changed(user_id)

    def _check_contract(self, item: Input, user_id: str) -> None:
        """Raise InvalidEvent when this record breaks the partitioning contract."""
        if self.partitions is None:
            return
        expected_key = user_id.encode()
        if item.key != expected_key:
            shown = "none" if item.key is None else repr(item.key[:MAX_ID_CHARS])
            raise InvalidEvent("key_mismatch", f"key {shown} is not the user_id {user_id!r}")
        home = partition_for(expected_key, self.partitions)
        if item.partition != home:
            raise InvalidEvent(
                "wrong_partition",
                f"user {user_id!r} belongs on partition {home} of {self.partitions} (murmur2 of the key), "
                f"not {item.partition}: produce with the Java client's partitioner (librdkafka: "
                "partitioner=murmur2_random)",
            )

    def _tick(self, histories: Histories, item: Input, now_ms: int, out: Outcome) -> None:
        """Emit requests for the partition's pending users whose trigger is due."""
        users = self.pending.get(item.partition)
        if not users:
            return
        for user_id in [u for u, at in users.items() if at <= now_ms]:
            history = histories.load(user_id, item.ref)
            reason = self.policy.decide(history, now_ms)
            if reason is None:
                if self.policy.waiting(history):
                    users[user_id] = self.policy.next_check_ms(history)
                else:
                    del users[user_id]
                continue
            out.requests.append(PredictionRequest.from_history(history, reason, now_ms, self.limits))
            mark_emitted(history, now_ms)
            histories.changed(user_id)
            del users[user_id]

    def reindex(self, items: list[tuple[bytes, bytes]]) -> int:
        """Rebuild the pending index from the table after recovery; returns users pending."""
        self.pending.clear()
        count = 0
        for _, raw in items:
            history = decode_history(raw)
            if self.policy.waiting(history):
                self.pending.setdefault(history.partition, {})[history.user_id] = self.policy.next_check_ms(history)
                count += 1
        return count
