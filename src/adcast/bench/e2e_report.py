"""What `adcast bench e2e` reports: the figures it computes from one run's measurements
(Measured: the replay's summary, both workers' metrics, the affinities topic), and their table."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adcast.config import Settings
from adcast.core.ranking import percentile, top_k_drift
from adcast.core.triggers import REASON_HEADER, SETTLE, SHOWN
from adcast.scrape import Scrape
from adcast.wire import serde

if TYPE_CHECKING:
    from adcast.replay import ReplaySummary


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The upper bound of the histogram bucket that holds the q-quantile (nan when empty)."""
    count = buckets[-1][1] if buckets else 0.0
    if not count:
        return float("nan")
    return next(le for le, cum in buckets if cum >= q * count)


def reason_of(headers: list[tuple[str, bytes]] | None) -> str:
    """The trigger reason an affinity update's headers carry ('' when none)."""
    return next((v.decode(errors="replace") for k, v in headers or () if k == REASON_HEADER), "")


def taken_predictions(updates: list[tuple[bytes, str]]) -> tuple[dict[str, list[float]], list[float]]:
    """For every published prediction that Redis took (per user, one partition in write order:
    only versions above the ones before it), given with the reason its request was emitted:
    seconds from newest event to Redis write, by reason (settle calls, late on purpose, left
    out); and, for each after a user's first, its top-10 drift from the one before
    (core.ranking.top_k_drift)."""
    best: dict[str, int] = {}
    top: dict[str, list[str]] = {}
    fresh: dict[str, list[float]] = {}
    drift: list[float] = []
    for raw, reason in updates:
        a = serde.decode(serde.AFFINITY, raw)
        user = a["user_id"]
        if a["version"] > best.get(user, -1):
            best[user] = a["version"]
            if reason != SETTLE:
                fresh.setdefault(reason, []).append((a["computed_at"] - a["newest_event_time"]) / 1000)
            current = [s["advertiser_id"] for s in a["advertisers"]]
            if user in top:
                drift.append(top_k_drift(top[user], current))
            top[user] = current
    return fresh, drift


@dataclass
class Measured:
    summary: ReplaySummary
    expected: dict[str, int]
    caught_up: int
    drain_s: float
    wall_s: float
    cpu: dict[str, float]
    stream_m: Scrape
    infer_m: Scrape
    lag_replay_end: dict[str, int]
    lag_drained: dict[str, int]
    fresh: dict[str, list[float]]  # by trigger reason
    drift: list[float]  # top-10 drift of each taken prediction after a user's first
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def report(
    args: argparse.Namespace, settings: Settings, run: str, m: Measured, codes: dict[str, int]
) -> dict[str, Any]:
    summary, stream_m, infer_m = m.summary, m.stream_m, m.infer_m
    predictions = infer_m.total("adcast_store_writes_total")
    batches = infer_m.total("adcast_batch_size_count")
    s = settings.stream
    return {
        "run": run,
        "rate": args.rate,
        "seconds": args.seconds,
        "events": summary.events,
        "replay_seconds": round(summary.event_seconds, 2),  # producing the events, as paced
        "events_per_second": round(summary.events_per_second, 1),
        "users": len(m.expected),
        "users_caught_up": m.caught_up,
        "drain_seconds": round(m.drain_s, 2),
        "trigger": {
            "policy": s.trigger_policy,
            "quiet_ms": s.quiet_ms,
            "max_delay_ms": s.max_delay_ms,
            "min_interval_ms": s.min_interval_ms,
            "shown_interval_ms": s.shown_interval_ms,
            "settle_ms": s.settle_ms,
            "tick_ms": s.tick_ms,
        },
        "infer": {
            "engine": settings.infer.engine,
            "max_batch": settings.infer.max_batch,
            "max_wait_ms": settings.infer.max_wait_ms,
            "cpu_threads": settings.infer.cpu_threads,
        },
        "freshness_s": _freshness_figures([s for values in m.fresh.values() for s in values]),
        # What the user did, apart from ads shown alone (held up to shown_interval_ms by design).
        "freshness_user_changes_s": _freshness_figures(
            [s for reason, values in m.fresh.items() if reason != SHOWN for s in values]
        ),
        "freshness_by_reason_s": {reason: _freshness_figures(values) for reason, values in sorted(m.fresh.items())},
        "top10_drift": {
            "count": len(m.drift),
            "mean": round(sum(m.drift) / len(m.drift), 4) if m.drift else float("nan"),
            "p50": round(percentile(m.drift, 50), 4),
        },
        "requests_emitted": round(stream_m.total("adcast_requests_emitted_total")),
        "requests_by_reason": {
            k: round(v) for k, v in stream_m.by_label("adcast_requests_emitted_total", "reason").items()
        },
        "requests_superseded": round(infer_m.total("adcast_requests_superseded_total")),
        "predictions": round(predictions),
        "redis_writes": round(infer_m.total("adcast_store_writes_total", outcome="written")),
        "stale_writes": round(infer_m.total("adcast_store_writes_total", outcome="stale")),
        "inference_dead_letters": round(infer_m.total("adcast_dead_letters_total")),
        "predictions_per_event": round(predictions / summary.events, 4) if summary.events else float("nan"),
        "calls_per_event": _per_event(stream_m.total("adcast_requests_emitted_total"), summary.events),
        "calls_per_event_without_settle": _per_event(
            stream_m.total("adcast_requests_emitted_total")
            - stream_m.total("adcast_requests_emitted_total", reason=SETTLE),
            summary.events,
        ),
        "batch_size": _batch_figures(infer_m),
        "engine_seconds_per_batch": round(infer_m.total("adcast_inference_seconds_sum") / batches, 4)
        if batches
        else float("nan"),
        # Cores each tier kept busy from the first replayed event to the end of the drain.
        "cores_busy": {tier: round(c / m.wall_s, 2) for tier, c in m.cpu.items()},
        "lag_at_replay_end": m.lag_replay_end,
        "lag_after_drain": m.lag_drained,
        "stream_dead_letters": round(stream_m.total("adcast_dead_letters_total")),
        "worker_exit_codes": codes,
        "load_average": {
            "before": [round(x, 2) for x in m.load_before],
            "after": [round(x, 2) for x in m.load_after],
        },
        "cpu_count": os.cpu_count(),
    }


def _freshness_figures(fresh: list[float]) -> dict[str, Any]:
    return {
        "count": len(fresh),
        "p50": round(percentile(fresh, 50), 3),
        "p95": round(percentile(fresh, 95), 3),
        "p99": round(percentile(fresh, 99), 3),
        "max": round(max(fresh), 3) if fresh else float("nan"),
    }


def _batch_figures(infer_m: Scrape) -> dict[str, Any]:
    batched = infer_m.total("adcast_batch_size_sum")
    batches = infer_m.total("adcast_batch_size_count")
    sizes = infer_m.buckets("adcast_batch_size")
    return {
        "batches": round(batches),
        "mean": round(batched / batches, 2) if batches else float("nan"),
        "p50_at_most": bucket_quantile(sizes, 0.5),
        "max_at_most": bucket_quantile(sizes, 1.0),
    }


def _per_event(count: float, events: int) -> float:
    return round(count / events, 4) if events else float("nan")


def exit_code(r: dict[str, Any]) -> int:
    """Non-zero when some user never caught up: the figures then describe an unfinished run."""
    return 0 if r["users_caught_up"] == r["users"] else 1


def format_report(r: dict[str, Any]) -> str:
    f, b, tr, d = r["freshness_s"], r["batch_size"], r["trigger"], r["top10_drift"]
    lr, ld = r["lag_at_replay_end"], r["lag_after_drain"]
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(r["requests_by_reason"].items()))
    rows = [
        (
            "events replayed",
            f"{r['events']:,} in {r['replay_seconds']:.1f}s ({r['events_per_second']:,.0f}/s), "
            f"{r['users']:,} users whose prompt changed",
        ),
        (
            "trigger",
            f"{tr['policy']}: quiet {tr['quiet_ms']} ms, max delay {tr['max_delay_ms']} ms, "
            f"min interval {tr['min_interval_ms']} ms (ads shown alone {tr['shown_interval_ms']} ms), "
            f"settle {tr['settle_ms']} ms, tick {tr['tick_ms']} ms",
        ),
        (
            "freshness",
            f"p50 {f['p50']:.2f}s  p95 {f['p95']:.2f}s  p99 {f['p99']:.2f}s  max {f['max']:.2f}s "
            f"over {f['count']:,} Redis writes (settle calls apart)",
        ),
        (
            "  by reason",
            "; ".join(
                f"{reason} p50 {x['p50']:.2f}s p99 {x['p99']:.2f}s ({x['count']:,})"
                for reason, x in r["freshness_by_reason_s"].items()
            ),
        ),
        (
            "LLM calls / event",
            f"{r['calls_per_event']:.3f} requests emitted, {r['calls_per_event_without_settle']:.3f} without settle "
            f"calls; {r['predictions_per_event']:.3f} predictions ({r['predictions']:,}, newest per user in a batch)",
        ),
        (
            "top-10 drift per call",
            f"mean {d['mean']:.2f}, p50 {d['p50']:.2f} of the top 10 replaced, over {d['count']:,} predictions "
            "after a user's first",
        ),
        (
            "requests emitted",
            f"{r['requests_emitted']:,} ({reasons}); {r['requests_superseded']:,} superseded in a micro-batch",
        ),
        ("Redis writes", f"{r['redis_writes']:,} ({r['stale_writes']:,} stale)"),
        (
            "micro-batches",
            f"{b['batches']:,}, mean {b['mean']:.1f}, p50 <= {b['p50_at_most']:g}, "
            f"max <= {b['max_at_most']:g} (histogram buckets)",
        ),
        (
            "CPU",
            f"stream tier {r['cores_busy']['stream']:.2f} cores, inference tier {r['cores_busy']['infer']:.2f} "
            f"cores busy; engine {r['engine_seconds_per_batch'] * 1000:.0f} ms per micro-batch",
        ),
        (
            "lag at replay end",
            f"stream {lr['stream_committed']:,} committed / {lr['stream_unprocessed']:,} "
            f"unprocessed events, inference {lr['inference_committed']:,} requests",
        ),
        (
            "lag after drain",
            f"stream {ld['stream_committed']:,}, inference {ld['inference_committed']:,} "
            f"(drained in {r['drain_seconds']:.1f}s, {r['users_caught_up']:,}/{r['users']:,} users)",
        ),
        (
            "load average",
            f"{' '.join(map(str, r['load_average']['before']))} before, "
            f"{' '.join(map(str, r['load_average']['after']))} after ({r['cpu_count']} CPUs)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
