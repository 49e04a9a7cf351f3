"""One batch of the stream tier, from read to commit: the home of its delivery guarantee.

`BatchCommit.run` takes each batch through these steps, in order:

1. fold: the processor folds every input into the users' histories. Each history is read once
   (from the decoded-history cache, else the table) and each changed one is encoded once, at the
   end, and held: nothing is written yet.
2. deliver: the batch's requests and dead letters are sent, and delivered.
3. write: the held histories go to the table (RocksDB and its changelog).
4. commit: Faust commits the batch's offsets after `run` returns; its commit flushes the
   producer first, so the changelog writes of step 3 are delivered before any offset moves.

Why writes wait for delivery: written first, a history marked "emitted" would outlive a crash that
lost its request, and the request would never be sent again; held, a crash loses both, and the
re-read batch emits it. A user with ten events in a batch costs one state read, one encode and one
changelog write, not ten. Faust-free: stream/app.py hooks Faust's agent, timer and signals to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from adcast.core.clock import now_ms
from adcast.core.history import UserHistory
from adcast.metrics import HISTORIES_WRITTEN, INGEST_BATCH_SIZE
from adcast.wire.history_encoder import encode_history
from stream.processor import Input, Outcome, StreamProcessor, decode_history

Write = tuple[bytes, bytes, Any]  # key, value, the input the key was reached through


class HistoryStore(Protocol):
    """The table. `ref` is the input the key was reached through: Faust routes table access to
    that input's partition (stream/table.py)."""

    def get(self, key: bytes, ref: Any) -> bytes | None: ...

    def put(self, key: bytes, value: bytes, ref: Any) -> None: ...

    async def put_all(self, writes: Sequence[Write]) -> None: ...


class HeldBatch:
    """The histories one batch touches: each loaded once, the changed ones encoded and held until
    `release` (or `release_now`, for a batch being cancelled)."""

    def __init__(self, store: HistoryStore, cache: dict[str, UserHistory]) -> None:
        self.store = store
        self.cache = cache
        self.loaded: dict[str, tuple[UserHistory, Any]] = {}
        self.dirty: set[str] = set()
        self.held: list[Write] = []

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

    def changed(self, user_id: str) -> None:
        self.dirty.add(user_id)

    def hold(self) -> None:
        """Encode each changed history once; hand every loaded one back to the cache."""
        for user_id in self.dirty:
            history, ref = self.loaded[user_id]
            self.held.append((user_id.encode(), encode_history(history), ref))
        for user_id, (history, _) in self.loaded.items():
            self.cache[user_id] = history  # re-inserted last: the cache's order is least recently used first

    def _take(self) -> list[Write]:
        # Whichever release runs first takes the writes: the other finds none left.
        held, self.held = self.held, []
        HISTORIES_WRITTEN.inc(len(held))
        return held

    async def release(self) -> None:
        await self.store.put_all(self._take())

    def release_now(self) -> None:
        """Without waiting (the table's own write per key)."""
        for key, value, ref in self._take():
            self.store.put(key, value, ref)


class BatchCommit:
    """`deliver` sends an Outcome's requests and dead letters and returns once they are delivered;
    `flush` waits for every write in the producer; `on_failure` gets any error that is not one bad
    input (those are dead letters): the state store or the producer failing. It must not return
    normally, as Faust would ack the batch on the way out; stream/app.py exits the process, so
    the restarted worker re-reads the batch."""

    def __init__(
        self,
        processor: StreamProcessor,
        store: HistoryStore,
        *,
        kinds: Mapping[str, str],
        deliver: Callable[[Outcome], Awaitable[None]],
        flush: Callable[[], Awaitable[Any]],
        on_failure: Callable[[BaseException], None],
        cache_users: int,
    ) -> None:
        self.processor = processor
        self.store = store
        self.kinds = kinds  # topic -> input kind
        self.deliver = deliver
        self.flush = flush
        self.on_failure = on_failure
        self.cache_users = cache_users
        self.cache: dict[str, UserHistory] = {}  # decoded histories between batches, least recent first
        # Held from a batch's first read of the table to its last write. Faust does not wait for
        # the agent when partitions are revoked (stream_wait_empty=False); a batch still in flight
        # then would write its histories to a changelog the partition's new owner has already
        # recovered from and written to. The revoke waits for this instead (`hand_over`).
        self.in_flight = asyncio.Lock()

    def inputs(self, events: Iterable[Any]) -> list[Input]:
        """The processor's inputs for a batch of Faust events (each with its message)."""
        kinds = self.kinds
        return [Input(kinds[m.topic], m.value, m.partition, m.offset, e, m.key) for e in events for m in (e.message,)]

    def fold(self, inputs: list[Input], now: int) -> tuple[Outcome, HeldBatch]:
        """Step 1: fold the batch and hold its writes."""
        batch = HeldBatch(self.store, self.cache)
        outcome = self.processor.on_batch(batch, inputs, now)
        batch.hold()
        if len(self.cache) > self.cache_users:
            for user_id in list(self.cache)[: len(self.cache) - self.cache_users]:
                del self.cache[user_id]
        INGEST_BATCH_SIZE.observe(len(inputs))
        return outcome, batch

    async def run(self, inputs: list[Input]) -> None:
        """Steps 1 to 3; Faust commits the offsets (step 4) after this returns."""
        async with self.in_flight:
            batch: HeldBatch | None = None
            try:
                outcome, batch = self.fold(inputs, now_ms())  # 1. fold, writes held
                # Shielded: a shutdown arriving mid-send must not leave the acked batch's requests unsent.
                await asyncio.shield(self.deliver(outcome))  # 2. deliver
                await asyncio.shield(batch.release())  # 3. write
            except asyncio.CancelledError:
                if batch is not None:
                    batch.release_now()  # Faust acks the batch on the way out: its state must be written
                raise
            except BaseException as exc:
                self.on_failure(exc)

    def forget_cached(self) -> None:
        """Drop the decoded-history cache: partitions moved, the table is the only truth now."""
        self.cache.clear()

    async def hand_over(self) -> None:
        """Before revoked partitions reach their new owner: the batch in flight, if any, has
        handed its histories over, and they have reached the changelog."""
        async with self.in_flight:
            self.forget_cached()
            await self.flush()

    def recovered(self, items: list[tuple[bytes, bytes]]) -> int:
        """After the table's recovery: rebuild the pending index; returns users pending."""
        self.forget_cached()
        return self.processor.reindex(items)
