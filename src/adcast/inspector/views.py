"""What the inspector shows, shaped from records: pure functions, no I/O, the clock passed in.

Every string here may come from outside (event text, brands, categories, advertiser names, ids):
it is passed on as data, and the page renders it as text only (static/inspector.js).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from adcast.core.affinities import Affinities
from adcast.core.slots import SlotPointer
from adcast.lookup_table import Label
from adcast.scrape import Scrape, histogram_quantile

MAX_COLUMNS = 4  # slots shown side by side
# Counters and histograms the fleet view reads, diffed between two scrapes of a worker.
FRESHNESS = "adcast_freshness_seconds"
WRITES = "adcast_store_writes_total"
EVENTS_IN = "adcast_events_in_total"
DEAD_LETTERS = "adcast_dead_letters_total"
COUNTERS = (f"{FRESHNESS}_bucket", f"{FRESHNESS}_count", f"{FRESHNESS}_sum", WRITES, EVENTS_IN, DEAD_LETTERS)


def rank_changes(base: Sequence[str], other: Sequence[str]) -> list[dict[str, Any]]:
    """For each advertiser of `other` in order, how it stands against `base`: "same" rank,
    "up" or "down" (ranked higher or lower than in base), or "new" (not in base's list)."""
    where = {a: i for i, a in enumerate(base)}
    out = []
    for i, a in enumerate(other):
        j = where.get(a)
        change = "new" if j is None else "same" if j == i else "up" if i < j else "down"
        out.append({"change": change, "base_rank": None if j is None else j + 1})
    return out


def dropped(base: Sequence[str], other: Sequence[str]) -> list[str]:
    """Advertisers of `base` that `other` does not list, in base's order."""
    kept = set(other)
    return [a for a in base if a not in kept]


def prediction(a: Affinities, now_ms: int) -> dict[str, Any]:
    """One stored record: `age_seconds` is now - the newest event it reflects (how stale the
    prediction is for the user), `computed_seconds_ago` is now - when it was scored."""
    return {
        "version": a.version,
        "backfill": a.version < 0,
        "model_version": a.model_version,
        "computed_at": a.computed_at,
        "newest_event_time": a.newest_event_time,
        "age_seconds": round(max(0.0, (now_ms - a.newest_event_time) / 1000), 3),
        "computed_seconds_ago": round(max(0.0, (now_ms - a.computed_at) / 1000), 3),
        "top": [{"rank": i + 1, "advertiser_id": adv, "probability": p} for i, (adv, p) in enumerate(a.top)],
    }


def slots_to_show(pointer: SlotPointer, asked: Sequence[str], running: Iterable[str]) -> list[tuple[str, str]]:
    """(slot, role) of the columns: the slots asked for, else live (the default slot before any
    pointer exists), candidate, previous, then any other slot a worker writes now (a shadow)."""
    if asked:
        return [(s, role_of(pointer, s)) for s in dict.fromkeys(asked)][:MAX_COLUMNS]
    live, _ = pointer.read_slots()
    roles = {live: "live"}
    for slot, role in ((pointer.candidate, "candidate"), (pointer.previous, "previous")):
        if slot and slot not in roles:
            roles[slot] = role
    for slot in sorted(running):
        roles.setdefault(slot, "shadow")
    return list(roles.items())[:MAX_COLUMNS]


def role_of(pointer: SlotPointer, slot: str) -> str:
    live, _ = pointer.read_slots()
    roles = {pointer.previous: "previous", pointer.candidate: "candidate", live: "live"}
    return roles.get(slot, "other")


def columns(shown: list[tuple[str, str]], found: Mapping[str, Affinities | None], now_ms: int) -> list[dict[str, Any]]:
    """One column per slot. The base is what readers get (the live slot's record, else the
    previous slot's), else the first record shown; every other column marks how its top-K differs."""
    held = [(found[s], role) for s, role in shown if found.get(s) is not None]
    base = next((a for a, role in held if role in ("live", "previous")), held[0][0] if held else None)
    base_ids = [adv for adv, _ in base.top] if base is not None else []
    out = []
    for slot, role in shown:
        a = found.get(slot)
        column: dict[str, Any] = {"slot": slot, "role": role, "base": a is base and a is not None, "record": None}
        if a is not None:
            record = prediction(a, now_ms)
            if a is not base and base is not None:
                ids = [adv for adv, _ in a.top]
                for row, change in zip(record["top"], rank_changes(base_ids, ids), strict=True):
                    row.update(change)
                record["dropped"] = dropped(base_ids, ids)
            column["record"] = record
        out.append(column)
    return out


def advertiser_ids(cols: Iterable[dict[str, Any]], history: Mapping[str, Any] | None) -> set[str]:
    """Every advertiser id the user view names: top-K rows, dropped ones, the history's events,
    shown ads, counters and own advertisers."""
    ids: set[str] = set()
    for c in cols:
        if c["record"] is not None:
            ids.update(row["advertiser_id"] for row in c["record"]["top"])
            ids.update(c["record"].get("dropped", []))
    if history:
        for key in ("events", "shown", "impressions", "counters"):
            ids.update(x["advertiser_id"] for x in history.get(key, []) if x.get("advertiser_id"))
        ids.update(history.get("own", []))
    return ids


def names_of(ids: Iterable[str], names: Mapping[str, Label]) -> dict[str, dict[str, str | None]]:
    return {a: {"name": n.name, "category": n.category} for a in sorted(ids) if (n := names.get(a)) is not None}


def user_view(
    user_id: str,
    pointer: SlotPointer,
    cols: list[dict[str, Any]],
    history: dict[str, Any] | None,
    history_error: str | None,
    names: Mapping[str, Label],
    names_error: str | None,
    now_ms: int,
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "now": now_ms,
        "pointer": pointer_view(pointer, now_ms),
        "columns": cols,
        "history": history,
        "history_error": history_error,
        "names": names_of(advertiser_ids(cols, history), names),
        "names_error": names_error,
    }


def pointer_view(pointer: SlotPointer, now_ms: int, gone_s: float = 30.0) -> dict[str, Any]:
    """The slot pointer, and each writer's last heartbeat (`running`: one within `gone_s`)."""
    gone = gone_s * 1000
    return {
        "live": pointer.live,
        "candidate": pointer.candidate,
        "previous": pointer.previous,
        "updated_at": pointer.updated_at or None,
        "writers": [
            {"slot": slot, "last_seen": t, "seconds_ago": round((now_ms - t) / 1000, 1), "running": now_ms - t < gone}
            for slot, t in sorted(pointer.writers.items())
        ],
    }


def counters_since(first: Scrape | None, last: Scrape) -> Scrape:
    """The COUNTERS of one worker's `last` scrape less its `first` one, series by series: what
    happened between them. A series that went down (the worker restarted) counts from zero."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for name in COUNTERS:
        before = {} if first is None else {_key(lab): v for lab, v in first.samples.get(name, [])}
        for lab, v in last.samples.get(name, []):
            was = before.get(_key(lab), 0.0)
            samples.setdefault(name, []).append((lab, v - was if v >= was else v))
    return Scrape(samples)


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def merged(scrapes: Iterable[Scrape]) -> Scrape:
    """Several workers' samples as one scrape: totals and histograms add up across them."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for s in scrapes:
        for name, values in s.samples.items():
            samples.setdefault(name, []).extend(values)
    return Scrape(samples)


def _number(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def fleet_figures(window: Scrape) -> dict[str, Any]:
    """Freshness p50/p99 per slot, LLM calls (scored requests) per event, and dead letters by
    stage and reason, from the workers' counters over a window (counters_since, merged)."""
    slots = window.label_values(f"{FRESHNESS}_count", "slot") | window.label_values(WRITES, "slot")
    freshness = []
    for slot in sorted(slots):
        buckets = window.buckets(FRESHNESS, slot=slot)
        freshness.append(
            {
                "slot": slot,
                "predictions": int(window.total(f"{FRESHNESS}_count", slot=slot)),
                "llm_calls": int(window.total(WRITES, slot=slot)),
                "p50_seconds": _number(histogram_quantile(buckets, 0.5)),
                "p99_seconds": _number(histogram_quantile(buckets, 0.99)),
            }
        )
    events, calls = window.total(EVENTS_IN), window.total(WRITES)
    dead: dict[tuple[str, str], float] = {}
    for lab, v in window.samples.get(DEAD_LETTERS, []):
        key = (lab.get("stage", ""), lab.get("reason", ""))
        dead[key] = dead.get(key, 0.0) + v
    return {
        "events": int(events),
        "llm_calls": int(calls),
        "llm_calls_per_event": round(calls / events, 4) if events else None,
        "freshness": freshness,
        "dead_letters": [
            {"stage": stage, "reason": reason, "count": int(n)} for (stage, reason), n in sorted(dead.items()) if n
        ],
    }
