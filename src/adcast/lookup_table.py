"""`adcast lookup`'s table: users' stored affinities with advertiser names, for a person to read.

Pure text: no I/O, the clock passed in. Every string that comes from outside (names and
categories from the advertisers topic, ids and model versions from Redis) reaches a terminal, so
control and format characters are shown escaped (`\\x1b`, `\\n`, `\\u202e`), never interpreted.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

from adcast.core.affinities import Affinities

MAX_CELL = 40  # characters of a name or category shown; longer ones end with "…"


class Label(Protocol):
    """What the table shows of an advertiser (adcast.kafka.advertiser_names.AdvertiserName)."""

    @property
    def name(self) -> str: ...

    @property
    def category(self) -> str | None: ...


def safe(text: str, limit: int | None = None) -> str:
    """`text` with every control, format or unassigned character escaped, cut to `limit` characters."""
    out = "".join(_escaped(ch) if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return out if limit is None or len(out) <= limit else out[: limit - 1] + "…"


def _escaped(ch: str) -> str:
    code = ord(ch)
    if ch in "\n\t\r":
        return repr(ch)[1:-1]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def age_text(seconds: float) -> str:
    """A short age: "0.4 s", "42 s", "3 min", "2 h", "5 d" (negative, a clock ahead: "0.0 s")."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


def utc_text(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(p: float) -> str:
    return "<0.1%" if 0 < p < 0.0005 else f"{p * 100:.1f}%"


def user_table(user: str, a: Affinities | None, names: Mapping[str, Label], now_ms: int, k: int) -> list[str]:
    """One user's lines: a header, then one row per advertiser, most likely first."""
    if a is None:
        return [f"{safe(user)}  no prediction (never scored, expired, or not in this slot)"]
    version = f"{a.version} (backfill)" if a.version < 0 else str(a.version)
    header = (
        f"{safe(user)}  version {version}  model {safe(a.model_version)}  computed {utc_text(a.computed_at)}  "
        f"newest event {age_text((now_ms - a.newest_event_time) / 1000)} ago"
    )
    rows = []
    for rank, (advertiser, p) in enumerate(a.top[:k], 1):
        label = names.get(advertiser)
        shown = safe(advertiser) if label is None else f"{safe(label.name, MAX_CELL)} ({safe(advertiser)})"
        category = "-" if label is None or not label.category else safe(label.category, MAX_CELL)
        rows.append((str(rank), shown, category, percent(p)))
    if not rows:
        return [header, "  no advertisers stored"]
    widths = [max(len(r[i]) for r in [*rows, ("#", "advertiser", "category", "probability")]) for i in range(4)]

    def line(r: tuple[str, str, str, str]) -> str:
        return f"  {r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}".rstrip()

    return [header, line(("#", "advertiser", "category", "probability")), *map(line, rows)]


def lookup_table(found: Mapping[str, Affinities | None], names: Mapping[str, Label], now_ms: int, k: int = 10) -> str:
    """Every user's table, in the order given, separated by a blank line."""
    return "\n\n".join("\n".join(user_table(u, a, names, now_ms, k)) for u, a in found.items())
