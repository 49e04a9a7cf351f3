"""The stream tier's logic, free of Faust: decode, validate, dedupe, fold, decide, emit.

The Faust agent (stream/app.py) owns the I/O: it hands batches of consumed messages here, with
the table behind a two-method `HistoryStore`, and sends what comes back. A batch folds every
input in order into histories held in memory, then writes each changed history once, so a user
with ten events in a batch costs one state read, one encode and one changelog write, not ten.
Decoded histories are also kept between batches (a bounded cache the adapter clears whenever
partitions move), which spares the Avro decode of the user's state on the next batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from adcast.core.events import MAX_ID_CHARS, check_id, validate_event
from adcast.core.history import HistoryLimits, UserHistory, bounded_profile, fold_event
from adcast.core.partitioning import partition_for
from adcast.core.requests import PredictionRequest
from adcast.core.triggers import TriggerPolicy, mark_emitted
from adcast.errors import InvalidEvent, SerdeError
from adcast.wire import serde
from adcast.wire.event_decoder import decode_event
from adcast.wire.history_encoder import encode_history

log = logging.getLogger(__name__)

EVENT, PROFILE, TICK = "event", "profile", "tick"


class HistoryStore(Protocol):
    """The table. `ref` is the input the key was reached through: Faust routes table access to
    that input's partition, a plain mapping ignores it."""

    def get(self, key: bytes, ref: Any) -> bytes | None: ...

    def put(self, key: bytes, value: bytes, ref: Any) -> None: ...


class MappingStore:
    """A HistoryStore over a plain mapping (unit tests, tools)."""

    def __init__(self, data: MutableMapping[bytes, bytes] | None = None) -> None:
        self.data: MutableMapping[bytes, bytes] = {} if data is None else data

    def get(self, key: bytes, ref: Any = None) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes, ref: Any = None) -> None:
        self.data[key] = value


class Input(NamedTuple):
    """One consumed message: which kind, its bytes, where it came from, its key, and the adapter's
    handle. A named tuple: one is built per message, and a frozen dataclass costs several times more."""

    kind: str  # EVENT, PROFILE or TICK
    value: bytes | None
    partition: int
    offset: int
    ref: Any = None
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    stage: str
    reason: str
    detail: str


@dataclass(slots=True)
class Outcome:
    """What a batch produced; the adapter sends it."""

    requests: list[PredictionRequest] = field(default_factory=list)
    dead_letters: list[tuple[Input, DeadLetter]] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0

    @property
    def dead_letter(self) -> DeadLetter | None:
        """The first dead letter (for single-input calls)."""
        return self.dead_letters[0][1] if self.dead_letters else None

    @property
    def duplicate(self) -> bool:
        return self.duplicates > 0


def decode_history(raw: bytes) -> UserHistory:
    return UserHistory.from_record(serde.decode(serde.HISTORY, raw))


def load_history(store: HistoryStore, user_id: str) -> UserHistory:
    raw = store.get(user_id.encode(), None)
    return UserHistory(user_id=user_id) if raw is None else decode_history(raw)


class _Batch:
    """Histories touched by one batch: loaded once, written once at the end if changed."""

    def __init__(self, store: HistoryStore, cache: dict[str, UserHistory]) -> None:
        self.store = store
        self.cache = cache
        self.loaded: dict[str, tuple[UserHistory, Any]] = {}
        self.dirty: set[str] = set()

    def load(self, user_id: str, ref: Any) -> UserHistory:
        entry = self.loaded.get(user_id)
        if entry is not None:
            return entry[0]
        history = self.cache.pop(user_id, None)
        if history is None:
            raw = self.store.get(user_id.encode(), ref)
            history = UserHistory(user_id=user_id) if raw is None else decode_history(raw)
        self.loaded[user_id] = (history, ref)
        return history

    def flush(self) -> None:
        for user_id in self.dirty:
            history, ref = self.loaded[user_id]
            self.store.put(user_id.encode(), encode_history(history), ref)
        for user_id, (history, _) in self.loaded.items():
            self.cache[user_id] = history  # re-inserted last: the cache's order is least recently used first


class StreamProcessor:
    """`partitions`: the input topics' partition count. When given, every event and profile must
    honour the partitioning contract (key = user id, on the partition murmur2 gives that key),
    or it is dead-lettered (`key_mismatch`, `wrong_partition`) and no state is touched: a user's
    versions are offsets of one partition, and a record on another would jump them. None (tools,
    unit tests of the folding) checks neither."""

    def __init__(
        self, limits: HistoryLimits, policy: TriggerPolicy, cache_users: int = 50_000, partitions: int | None = None
    ) -> None:
        self.limits = limits
        self.policy = policy
        self.partitions = partitions
        # partition -> user -> earliest wall time a trigger may fire. In memory only: it is
        # rebuilt from the table (which holds the pending state) after every recovery.
        self.pending: dict[int, dict[str, int]] = {}
        self.cache: dict[str, UserHistory] = {}
        self.cache_users = cache_users

    def on_batch(self, store: HistoryStore, inputs: list[Input], now_ms: int) -> Outcome:
        out = Outcome()
        batch = _Batch(store, self.cache)
        handlers: dict[str, Callable[[_Batch, Input, int, Outcome], None]] = {
            EVENT: self._event,
            PROFILE: self._profile,
            TICK: self._tick,
        }
        for item in inputs:
            try:
                handlers[item.kind](batch, item, now_ms, out)
            except Exception as exc:
                # A bug must neither stop the worker (it would stop on the same input again after
                # a restart) nor lose the input: it goes to the DLQ, raw, with the reason.
                log.exception("unexpected error kind=%s partition=%s offset=%s", item.kind, item.partition, item.offset)
                if item.kind != TICK:
                    out.dead_letters.append(
                        (item, DeadLetter("process", "unexpected_error", f"{type(exc).__name__}: {exc}"))
                    )
        batch.flush()
        if len(self.cache) > self.cache_users:
            for user_id in list(self.cache)[: len(self.cache) - self.cache_users]:
                del self.cache[user_id]
        return out

    def forget_cached(self) -> None:
        """Drop the decoded-history cache: partitions moved, the table is the only truth now."""
        self.cache.clear()

    def _event(self, batch: _Batch, item: Input, now_ms: int, out: Outcome) -> None:
        out.events += 1
        try:
            event = validate_event(decode_event(item.value), now_ms)
        except SerdeError as exc:
            out.dead_letters.append((item, DeadLetter("decode", exc.reason, exc.detail)))
            return
        except InvalidEvent as exc:
            out.dead_letters.append((item, DeadLetter("validate", exc.reason, exc.detail)))
            return
        broken = self._contract_broken(item, event.user_id)
        if broken is not None:
            out.dead_letters.append((item, broken))
            return
        history = batch.load(event.user_id, item.ref)
        if history.partition == item.partition and item.offset <= history.version:
            # Re-read after a crash: offsets are committed after the state is written, and the gap
            # can hold more of this user's events than the id window remembers. The user's events
            # up to `version` (an offset of this partition) are folded already, impressions included.
            out.duplicates += 1
            return
        history.partition = item.partition
        result = fold_event(history, event, item.offset, now_ms, self.limits)
        if not result.applied:
            out.duplicates += 1
            return
        batch.dirty.add(event.user_id)
        if result.salient:
            self.pending.setdefault(item.partition, {})[event.user_id] = self.policy.next_check_ms(history)

    def _profile(self, batch: _Batch, item: Input, now_ms: int, out: Outcome) -> None:
        try:
            record = serde.decode(serde.PROFILE, item.value)
        except SerdeError as exc:
            out.dead_letters.append((item, DeadLetter("decode", exc.reason, exc.detail)))
            return
        try:
            user_id = check_id("user_id", record["user_id"])  # the events' rule: a blank id is no id
        except InvalidEvent as exc:
            out.dead_letters.append((item, DeadLetter("validate", exc.reason, exc.detail)))
            return
        broken = self._contract_broken(item, user_id)
        if broken is not None:
            out.dead_letters.append((item, broken))
            return
        history = batch.load(user_id, item.ref)
        history.partition = item.partition
        history.profile = bounded_profile(record["attributes"])
        batch.dirty.add(user_id)

    def _contract_broken(self, item: Input, user_id: str) -> DeadLetter | None:
        """Why this record breaks the partitioning contract, or None when it honours it."""
        if self.partitions is None:
            return None
        expected_key = user_id.encode()
        if item.key != expected_key:
            shown = "none" if item.key is None else repr(item.key[:MAX_ID_CHARS])
            return DeadLetter("validate", "key_mismatch", f"key {shown} is not the user_id {user_id!r}")
        home = partition_for(expected_key, self.partitions)
        if item.partition != home:
            return DeadLetter(
                "validate",
                "wrong_partition",
                f"user {user_id!r} belongs on partition {home} of {self.partitions} (murmur2 of the key), "
                f"not {item.partition}: produce with the Java client's partitioner (librdkafka: "
                "partitioner=murmur2_random)",
            )
        return None

    def _tick(self, batch: _Batch, item: Input, now_ms: int, out: Outcome) -> None:
        """Emit requests for the partition's pending users whose trigger is due."""
        users = self.pending.get(item.partition)
        if not users:
            return
        for user_id in [u for u, at in users.items() if at <= now_ms]:
            history = batch.load(user_id, item.ref)
            reason = self.policy.decide(history, now_ms)
            if reason is None:
                if history.pending:
                    users[user_id] = self.policy.next_check_ms(history)
                else:
                    del users[user_id]
                continue
            out.requests.append(PredictionRequest.from_history(history, reason, now_ms, self.limits))
            mark_emitted(history, now_ms)
            batch.dirty.add(user_id)
            del users[user_id]

    # Single-input forms of on_batch.
    def on_event(
        self,
        store: HistoryStore,
        value: bytes | None,
        partition: int,
        offset: int,
        now_ms: int,
        key: bytes | None = None,
    ) -> Outcome:
        return self.on_batch(store, [Input(EVENT, value, partition, offset, key=key)], now_ms)

    def on_profile(
        self, store: HistoryStore, value: bytes | None, partition: int, now_ms: int = 0, key: bytes | None = None
    ) -> Outcome:
        return self.on_batch(store, [Input(PROFILE, value, partition, -1, key=key)], now_ms)

    def on_tick(self, store: HistoryStore, partition: int, now_ms: int) -> Outcome:
        return self.on_batch(store, [Input(TICK, None, partition, -1)], now_ms)

    def reindex(self, items: list[tuple[bytes, bytes]]) -> int:
        """Rebuild the pending index from the table after recovery; returns users pending."""
        self.pending.clear()
        self.forget_cached()
        count = 0
        for _, raw in items:
            history = decode_history(raw)
            if history.pending:
                self.pending.setdefault(history.partition, {})[history.user_id] = self.policy.next_check_ms(history)
                count += 1
        return count
