"""The history table as the processor's HistoryStore, for batched processing.

Faust routes a table key to a partition's RocksDB and changelog by the *current event*, and
sets it per event only inside per-event iteration; in a `take_events` batch there is none that
fits every key. So each access runs with the current event set to the input that reached the key
(same user, same partition). That context variable is internal to faust-streaming: this module
is the one place that touches it, and it fails at import, not mid-stream, if it is missing.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from functools import partial
from typing import Any, cast

from faust import streams as faust_streams
from faust.types import TP

from stream.transport import Producer

_found = getattr(faust_streams, "_current_event", None)
if not isinstance(_found, ContextVar):
    raise ImportError(
        "this faust-streaming has no faust.streams._current_event, which adcast's batched table writes "
        "need; install the faust-streaming version pinned by adcast's 'stream' extra"
    )
_CURRENT_EVENT: ContextVar[Any] = _found


class FaustTableStore:
    # Set and reset by hand, not through a context manager: this runs once per changed history
    # per batch, and a generator-based context manager would cost more than the table access.
    def __init__(self, table: Any, on_lost_write: Callable[[BaseException], None]) -> None:
        self.table = table
        self.on_lost_write = on_lost_write

    def get(self, key: bytes, ref: Any) -> bytes | None:
        token = _CURRENT_EVENT.set(weakref.ref(ref))
        try:
            value: bytes | None = self.table.get(key)
            return value
        finally:
            _CURRENT_EVENT.reset(token)

    def put(self, key: bytes, value: bytes, ref: Any) -> None:
        token = _CURRENT_EVENT.set(weakref.ref(ref))
        try:
            self.table[key] = value
        finally:
            _CURRENT_EVENT.reset(token)

    async def put_all(self, writes: Sequence[tuple[bytes, bytes, Any]]) -> None:
        """`put` each write, batched: what Table.__setitem__ does per key (the value into its
        partition's RocksDB, a changelog message with its own future, buffer entry and delivery
        callback), done for the lot, the changelog part as one closed batch per partition.

        Not awaited, as Faust does not await its own changelog writes: Faust's offset commit
        flushes the producer first. On a batch's delivery the partition's persisted offset (where
        recovery resumes reading the changelog) moves to its last record, as Faust moves it per
        message. A batch that fails is a write the changelog lost: `on_lost_write` decides."""
        table, data = self.table, self.table.data
        records = []
        for key, value, ref in writes:
            token = _CURRENT_EVENT.set(weakref.ref(ref))
            try:
                # Faust's routing (the input's partition), checked once against the changelog's count.
                records.append((table.partition_for_key(key), key, value))
                data[key] = value
            finally:
                _CURRENT_EVENT.reset(token)
        changelog = self.table.changelog_topic.get_topic_name()
        for batch in await cast(Producer, self.table.app.producer).send_now(changelog, records):
            tp = TP(changelog, batch.partition)
            batch.delivered.add_done_callback(partial(self._persisted, tp, batch.records))

    def _persisted(self, tp: TP, records: int, delivered: asyncio.Future[Any]) -> None:
        error = delivered.exception() if not delivered.cancelled() else asyncio.CancelledError()
        if error is not None:
            self.on_lost_write(error)
            return
        self.table.data.set_persisted_offset(tp, delivered.result().offset + records - 1)
