"""Micro-batching policy for the inference tier: a pure object, no I/O.

Requests are added as they are consumed; a batch is ready when `max_size` requests wait or the
oldest has waited `max_wait_ms`. Taking a batch keeps only the newest version per user: an older
request for a user with a newer one queued would be overwritten anyway.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class Versioned(Protocol):
    @property
    def user_id(self) -> str: ...

    @property
    def version(self) -> int: ...


R = TypeVar("R", bound=Versioned)


class MicroBatcher(Generic[R]):
    def __init__(self, max_size: int = 64, max_wait_ms: int = 50) -> None:
        if max_size < 1 or max_wait_ms < 0:
            raise ValueError("max_size must be >= 1 and max_wait_ms >= 0")
        self.max_size = max_size
        self.max_wait_ms = max_wait_ms
        self._newest: dict[str, R] = {}
        self._added = 0
        self._first_at: int | None = None

    def __len__(self) -> int:
        return len(self._newest)

    @property
    def superseded(self) -> int:
        """Requests added since the last take that a newer one for the same user replaced."""
        return self._added - len(self._newest)

    def add(self, request: R, now_ms: int) -> None:
        if self._first_at is None:
            self._first_at = now_ms
        self._added += 1
        current = self._newest.get(request.user_id)
        if current is None or request.version > current.version:
            self._newest[request.user_id] = request

    def ready(self, now_ms: int) -> bool:
        if not self._newest:
            return False
        assert self._first_at is not None
        return len(self._newest) >= self.max_size or now_ms - self._first_at >= self.max_wait_ms

    def wait_ms(self, now_ms: int) -> int:
        """How long until the pending requests are due (max_wait when empty)."""
        if self._first_at is None:
            return self.max_wait_ms
        return max(0, self._first_at + self.max_wait_ms - now_ms)

    def take(self) -> list[R]:
        batch = list(self._newest.values())
        self._newest.clear()
        self._added = 0
        self._first_at = None
        return batch
