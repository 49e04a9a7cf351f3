"""The stream tier's folding over a dict for a table: stream/commit.py's fold and write steps,
without Kafka. Each call is one batch, its writes released at once."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

from adcast.core.history import UserHistory
from stream.commit import BatchCommit, HeldBatch, Write
from stream.processor import EVENT, PROFILE, TICK, Input, Outcome, StreamProcessor, decode_history


class MappingStore:
    """A HistoryStore over a plain mapping."""

    def __init__(self, data: MutableMapping[bytes, bytes] | None = None) -> None:
        self.data: MutableMapping[bytes, bytes] = {} if data is None else data

    def get(self, key: bytes, ref: Any = None) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes, ref: Any = None) -> None:
        self.data[key] = value

    async def put_all(self, writes: Sequence[Write]) -> None:
        for key, value, ref in writes:
            self.put(key, value, ref)


def load_history(store: MappingStore, user_id: str) -> UserHistory:
    raw = store.get(user_id.encode())
    return UserHistory(user_id=user_id) if raw is None else decode_history(raw)


def on_batch(processor: StreamProcessor, store: MappingStore, inputs: list[Input], now_ms: int) -> Outcome:
    """One batch with no decoded-history cache: every history is read from the table."""
    batch = HeldBatch(store, {})
    out = processor.on_batch(batch, inputs, now_ms)
    batch.hold()
    batch.release_now()
    return out


def on_event(
    processor: StreamProcessor,
    store: MappingStore,
    value: bytes | None,
    partition: int,
    offset: int,
    now_ms: int,
    key: bytes | None = None,
) -> Outcome:
    return on_batch(processor, store, [Input(EVENT, value, partition, offset, key=key)], now_ms)


def on_profile(
    processor: StreamProcessor,
    store: MappingStore,
    value: bytes | None,
    partition: int,
    now_ms: int = 0,
    key: bytes | None = None,
) -> Outcome:
    return on_batch(processor, store, [Input(PROFILE, value, partition, -1, key=key)], now_ms)


def on_tick(processor: StreamProcessor, store: MappingStore, partition: int, now_ms: int) -> Outcome:
    return on_batch(processor, store, [Input(TICK, None, partition, -1)], now_ms)


def _not_in_unit_tests(*args: Any) -> Any:
    raise AssertionError("folding only: nothing is delivered or flushed here")


def batch_commit(processor: StreamProcessor, store: MappingStore, cache_users: int) -> BatchCommit:
    """A BatchCommit over the mapping, for its fold step (the decoded-history cache in play)."""
    return BatchCommit(
        processor,
        store,
        kinds={},
        deliver=_not_in_unit_tests,
        flush=_not_in_unit_tests,
        on_failure=_not_in_unit_tests,
        cache_users=cache_users,
    )
