"""Backfill: score every user once from history files, the daily-batch baseline's job, through the
live path's code: events validated and folded by adcast.core.history (what the stream tier runs),
the PredictionRequest the stream tier would build, the serving renderer, the engine from
`settings.infer`, and the inference worker's writer (store.lua: write only newer versions, set the
TTL). Writes go to Redis only; the affinities topic is the live tier's audit log.

Versions. A live version is the input offset of the user's newest event that changed the prompt,
so it is >= 0.
History files have no offsets, so a backfilled record carries

    version = (event time of the user's newest event that changed the prompt, epoch ms) - 2**53

which is always negative (event times are far below 2**53) and exact in the doubles store.lua
compares with. Hence:
- any live prediction (version >= 0) supersedes a backfilled one, and a backfill never overwrites
  a live prediction (the script keeps the stored version when it is the same or newer);
- a re-run over the same files computes the same versions, so the script skips every write
  (idempotent); a run over newer files (a later newest event) supersedes an older
  backfill, and a run over older files changes nothing.
The version follows every change of the prompt, as the live one does: an impression of an
advertiser included.

Slots. A backfill writes one slot (`--slot`, default infer.slot), and the version guard is per
slot: a backfill of a new slot fills that slot, where no live prediction is, and never touches the
live slot; the new slot's own workers then supersede it user by user as events arrive, and
`adcast promote` makes it live.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adcast.config import Settings
from adcast.core.affinities import Affinities
from adcast.core.clock import now_ms
from adcast.core.events import validate_event
from adcast.core.history import HistoryLimits, UserHistory, bounded_profile, fold_event
from adcast.core.prompt import render
from adcast.core.requests import PredictionRequest
from adcast.data.files import read_records
from adcast.engines.base import ScoringEngine
from adcast.errors import ConfigError, InvalidEvent, StoreKeyError

log = logging.getLogger(__name__)

BACKFILL_VERSION_BASE = 2**53
REASON = "backfill"


def backfill_version(event_time_ms: int) -> int:
    """The version of a backfilled prediction whose newest change happened at this time."""
    return event_time_ms - BACKFILL_VERSION_BASE


@dataclass
class BackfillSummary:
    users: int = 0  # users with at least one valid event in the files
    scored: int = 0
    written: int = 0
    stale: int = 0  # Redis already held the same or a newer version
    failed: Counter[str] = field(default_factory=Counter)  # reason -> users whose key refused the write
    nothing_to_show: int = 0  # no event that changes a prompt: the live tier never scores them either
    invalid: Counter[str] = field(default_factory=Counter)  # reason -> events skipped
    load_seconds: float = 0.0  # reading, folding and loading the engine
    seconds: float = 0.0  # scoring and writing

    @property
    def users_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds else 0.0


def fold_histories(
    events: Iterable[dict[str, Any]],
    profiles: Mapping[str, Mapping[str, Any]],
    limits: HistoryLimits,
    now_ms: int,
    invalid: Counter[str] | None = None,
) -> dict[str, UserHistory]:
    """Every user's history after all their valid events, folded in replay order (event time,
    ties in file order), each event at the backfill version of its time."""
    valid = []
    for record in events:
        try:
            valid.append(validate_event(record, now_ms))
        except InvalidEvent as exc:
            if invalid is not None:
                invalid[exc.reason] += 1
    histories: dict[str, UserHistory] = {}
    for e in sorted(valid, key=lambda e: e.event_time):
        history = histories.get(e.user_id)
        if history is None:
            # Start below every backfill version: the default, -1, is above them all.
            profile = bounded_profile(profiles.get(e.user_id, {}))
            below = backfill_version(0)
            history = histories[e.user_id] = UserHistory(e.user_id, below, profile=profile, engaged_offset=below)
        fold_event(history, e, backfill_version(e.event_time), limits)
    return histories


def _batches(items: list[PredictionRequest], size: int) -> Iterator[list[PredictionRequest]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def backfill(
    settings: Settings,
    data_dir: str | Path,
    batch: int = 256,
    limit_users: int | None = None,
    engine: ScoringEngine | None = None,
    progress: bool = True,
    slot: str | None = None,
) -> BackfillSummary:
    """Score the users of a data directory (the first `limit_users` by user id) and write Redis,
    into `slot` (default: infer.slot)."""
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, got {batch}")
    if limit_users is not None and limit_users < 1:
        raise ConfigError(f"limit_users must be at least 1, got {limit_users}")
    started = time.monotonic()
    summary = BackfillSummary()
    s = settings.stream
    limits = s.history_limits()
    profiles = {p["user_id"]: p.get("attributes") or {} for p in read_records(data_dir, "profiles")}
    now = now_ms()
    histories = fold_histories(read_records(data_dir, "events"), profiles, limits, now, summary.invalid)
    if summary.invalid:
        log.warning("skipped %d invalid events: %s", summary.invalid.total(), dict(summary.invalid))
    users = sorted(histories)[:limit_users]
    summary.users = len(users)
    requests = []
    for user in users:
        history = histories[user]
        if not history.events and not history.impressions:
            summary.nothing_to_show += 1
            continue
        requests.append(PredictionRequest.from_history(history, REASON, now, limits))
    del histories

    owned = engine is None
    if engine is None:
        from adcast.engines import engine_from_settings

        engine = engine_from_settings(settings.infer)
    try:
        summary.load_seconds = time.monotonic() - started
        asyncio.run(_score_and_write(settings, engine, requests, batch, summary, progress, slot or settings.infer.slot))
    finally:
        if owned:
            engine.close()
    summary.seconds = time.monotonic() - started - summary.load_seconds
    return summary


async def _score_and_write(
    settings: Settings,
    engine: ScoringEngine,
    requests: list[PredictionRequest],
    batch: int,
    summary: BackfillSummary,
    progress: bool,
    slot: str,
) -> None:
    from tqdm import tqdm

    from adcast.store import AsyncAffinityStore

    store = AsyncAffinityStore(settings.redis, slot)
    try:
        with tqdm(total=len(requests), unit="user", desc="backfill", disable=not progress, mininterval=0.5) as bar:
            for chunk in _batches(requests, batch):
                scored = engine.score([render(r) for r in chunk], settings.infer.top_k)
                computed_at = now_ms()
                items = [
                    Affinities(r.user_id, r.version, engine.model_version, computed_at, r.newest_event_time, tuple(top))
                    for r, top in zip(chunk, scored, strict=True)
                ]
                # No retry: a failed run is safe to repeat, the versions make it idempotent.
                results = await store.write_many(items)
                summary.scored += len(items)
                summary.written += results.count(True)
                summary.stale += results.count(False)
                summary.failed.update(r.reason for r in results if isinstance(r, StoreKeyError))
                bar.update(len(items))
    finally:
        await store.close()


def format_summary(s: BackfillSummary) -> str:
    lines = [
        f"backfilled {s.scored} users in {s.seconds:.1f}s ({s.users_per_second:,.1f} users/s; "
        f"reading, folding and loading the engine {s.load_seconds:.1f}s)",
        f"  written {s.written}, skipped as stale {s.stale} (Redis held the same or a newer version)",
    ]
    if s.failed:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(s.failed.items()))
        lines.append(f"  not written, the user's key refused the write: {s.failed.total()} ({reasons})")
    if s.nothing_to_show:
        lines.append(f"  not scored: {s.nothing_to_show} users with nothing a prompt shows")
    if s.invalid:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(s.invalid.items()))
        lines.append(f"  invalid events skipped: {s.invalid.total()} ({reasons})")
    return "\n".join(lines)
