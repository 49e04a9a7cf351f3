"""`adcast compare A B`: two slots side by side, online.

- Agreement: for users both slots hold (a sample of slot A's keys), overlap@K of their top-K and
  Spearman's rank correlation over the union of the two lists (adcast.core.slots).
- Coverage of each slot against the stream state (adcast.lifecycle.rollout.coverage), and
  freshness as the records say: computed_at - newest_event_time, p50 and p99.
- Online hit rate: each engagement on the events topic judged against the newest prediction of
  its user that each slot published (affinities topic, slot header) before it happened: the
  online counterpart of `adcast eval`, on what users did after the predictions were made.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
from collections.abc import Iterator
from typing import Any

from adcast.config import Settings
from adcast.core.events import ENGAGEMENTS
from adcast.core.slots import SLOT_HEADER, Engagement, Prediction, online_hits, overlap_at_k, rank_correlation
from adcast.errors import SerdeError
from adcast.lifecycle.rollout import coverage
from adcast.lifecycle.state import partition_ends, read_messages, state_consumer
from adcast.store import AffinityClient, SlotAdmin, StoredAffinities
from adcast.wire import serde

log = logging.getLogger(__name__)


def _records(consumer: Any, topic: str, since_ms: int | None) -> Iterator[Any]:
    """Every message of the topic (from `since_ms` by record timestamp), raw."""
    from confluent_kafka import TopicPartition

    ends = partition_ends(consumer, topic)
    starts = {p: low for p, (low, _) in ends.items()}
    if since_ms is not None:
        for tp in consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in ends], timeout=10):
            starts[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition][1]
    return read_messages(consumer, topic, {p: (starts[p], high) for p, (_, high) in ends.items()})


def _predictions(consumer: Any, topic: str, slots: tuple[str, str], since_ms: int | None) -> Iterator[Prediction]:
    wanted = {s.encode(): s for s in slots}
    for m in _records(consumer, topic, since_ms):
        slot = next((wanted.get(v) for k, v in m.headers() or () if k == SLOT_HEADER), None)
        if slot is None:
            continue
        try:
            r = serde.decode(serde.AFFINITY, m.value())
        except SerdeError:
            continue
        yield Prediction(r["user_id"], slot, r["computed_at"], tuple(a["advertiser_id"] for a in r["advertisers"]))


def _engagements(consumer: Any, topic: str, since_ms: int | None) -> Iterator[Engagement]:
    for m in _records(consumer, topic, since_ms):
        try:
            r = serde.decode(serde.EVENT, m.value())
        except SerdeError:
            continue
        if r.get("event_type") in ENGAGEMENTS and r.get("advertiser_id"):
            yield Engagement(r["user_id"], r["advertiser_id"], r["event_time"])


def _quantiles(ages: list[float]) -> dict[str, float]:
    if len(ages) < 2:
        return {"p50_s": ages[0] if ages else math.nan, "p99_s": ages[0] if ages else math.nan}
    q = statistics.quantiles(ages, n=100, method="inclusive")
    return {"p50_s": round(q[49], 3), "p99_s": round(q[98], 3)}


def _age(a: StoredAffinities) -> float:
    return max(0, a.computed_at - a.newest_event_time) / 1000


def compare(
    settings: Settings, a: str, b: str, k: int = 10, sample: int = 10_000, since_ms: int | None = None
) -> dict[str, Any]:
    """The report `adcast compare` prints (a JSON-able dict)."""
    with SlotAdmin(settings.redis) as admin:
        prefix = settings.redis.key_prefix + a + ":"
        users = [key[len(prefix) :] for key in itertools.islice(admin.keys(a), sample)]
    with AffinityClient(settings.redis) as client:
        found: dict[str, dict[str, StoredAffinities | None]] = {a: {}, b: {}}
        for i in range(0, len(users), 1000):
            for slot, records in client.get_many_slots(users[i : i + 1000], (a, b)).items():
                found[slot].update(records)
    both = [(ra.top, rb.top) for u in users if (ra := found[a][u]) is not None and (rb := found[b][u]) is not None]
    lists = [([x for x, _ in ta], [x for x, _ in tb]) for ta, tb in both]
    overlaps = [overlap_at_k(la, lb, k) for la, lb in lists]
    rhos = [r for la, lb in lists if not math.isnan(r := rank_correlation(la, lb, k))]
    consumer = state_consumer(settings, "adcast-compare")  # never commits
    try:
        hits = online_hits(
            _predictions(consumer, settings.topics.name("affinities"), (a, b), since_ms),
            list(_engagements(consumer, settings.topics.name("events"), since_ms)),
            (a, b),
            k,
        )
    finally:
        consumer.close()
    report: dict[str, Any] = {
        "k": k,
        "agreement": {
            "users": len(both),
            f"overlap@{k}": round(statistics.fmean(overlaps), 4) if overlaps else None,
            "spearman": round(statistics.fmean(rhos), 4) if rhos else None,
        },
        "slots": {},
    }
    for slot in (a, b):
        c = coverage(settings, slot)
        ages = [_age(r) for r in found[slot].values() if r is not None]
        report["slots"][slot] = {
            "coverage": round(c.ratio, 6),
            "known_users": c.known,
            "held": c.held,
            "current": c.current,
            "freshness": _quantiles(ages),
            "online": {
                "engagements_judged": hits.judged[slot],
                f"hit_rate@{k}": None if math.isnan(hits.rate(slot)) else round(hits.rate(slot), 4),
            },
        }
    return report


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def format_report(report: dict[str, Any]) -> str:
    k = report["k"]
    agree = report["agreement"]
    lines = [
        f"agreement over {agree['users']:,} users held by both: overlap@{k} {_num(agree[f'overlap@{k}'])}, "
        f"Spearman {_num(agree['spearman'])}",
        f"{'slot':<12} {'coverage':>9} {'held':>9} {'known':>9} {'fresh p50':>10} {'fresh p99':>10} "
        f"{'judged':>8} {f'hit@{k}':>8}",
    ]
    for slot, r in report["slots"].items():
        f, o = r["freshness"], r["online"]
        lines.append(
            f"{slot:<12} {r['coverage']:>9.2%} {r['held']:>9,} {r['known_users']:>9,} {f['p50_s']:>9.2f}s "
            f"{f['p99_s']:>9.2f}s {o['engagements_judged']:>8,} {_num(o[f'hit_rate@{k}']):>8}"
        )
    return "\n".join(lines)
