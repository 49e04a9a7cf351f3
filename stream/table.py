"""The history table as the processor's HistoryStore, for batched processing.

Faust routes a table key to a partition's RocksDB and changelog by the *current event*, and
sets it per event only inside per-event iteration; in a `take_events` batch there is none that
fits every key. So each access runs with the current event set to the input that reached the key
(same user, same partition). That context variable is internal to faust-streaming: this module
is the one place that touches it, and it fails at import, not mid-stream, if it is missing.
"""

from __future__ import annotations

import weakref
from contextvars import ContextVar
from typing import Any

from faust import streams as faust_streams

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
    def __init__(self, table: Any) -> None:
        self.table = table

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
