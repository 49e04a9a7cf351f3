"""The wall clock in epoch milliseconds: event times, versions' enqueue and compute times, ages."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch, now."""
    return int(time.time() * 1000)
