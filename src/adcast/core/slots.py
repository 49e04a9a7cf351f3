"""Model slots: where each deployed model's predictions live in the store, and which one is live.

Each deployed model (a generation) writes its own slot: one hash per user at

    <key_prefix><slot>:<user_id>          e.g. adcast:aff:g42:u123

and one pointer record, a hash at `<key_prefix>@slots`, says which slot readers take:

    live       the slot readers read by default
    candidate  the slot being rolled out (set by `adcast rollout`)
    previous   the slot that was live before the last promote, until it is retired: a user the
               new live slot does not hold yet is read from it, so no reader finds a user with a
               record missing across a promote
    updated_at epoch ms of the last change of the three above
    writer:<slot>  epoch ms an inference worker of that slot last said it was running

Slot names are 1-32 characters of [A-Za-z0-9_.-]: no ':' (the key's separator), no '@' (the
pointer's), no braces (a Redis Cluster hash tag would put every user of a slot on one node).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from adcast.errors import ConfigError

DEFAULT_SLOT = "g0"
ROLLOUT_REASON = "rollout"  # the reason of the prediction requests `adcast rollout` emits
SLOT_HEADER = "adcast-slot"  # Kafka header naming the slot of a rollout request or an affinity update
SLOT_NAME = r"^[A-Za-z0-9_.-]{1,32}$"
_NAME = re.compile(SLOT_NAME)
WRITER = "writer:"


def check_slot(name: str) -> str:
    """The name, or ConfigError saying what a slot name may be."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"slot name {name!r} is not 1-32 characters of letters, digits, '_', '.' or '-'")
    return name


def user_key(prefix: str, slot: str, user_id: str) -> str:
    return f"{prefix}{slot}:{user_id}"


def slot_match(prefix: str, slot: str) -> str:
    """SCAN MATCH pattern of every user key of a slot (the prefix's glob characters escaped)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", f"{prefix}{slot}:") + "*"


def pointer_key(prefix: str) -> str:
    return f"{prefix}@slots"


@dataclass(frozen=True)
class SlotPointer:
    live: str | None = None
    candidate: str | None = None
    previous: str | None = None
    updated_at: int = 0
    writers: dict[str, int] = field(default_factory=dict)  # slot -> last heartbeat, epoch ms

    @classmethod
    def from_hash(cls, h: Mapping[str, str]) -> SlotPointer:
        return cls(
            h.get("live") or None,
            h.get("candidate") or None,
            h.get("previous") or None,
            int(h.get("updated_at") or 0),
            {k.removeprefix(WRITER): int(v) for k, v in h.items() if k.startswith(WRITER)},
        )

    def read_slots(self) -> tuple[str, str | None]:
        """What a reader of the live slot reads: the live slot (DEFAULT_SLOT before any pointer
        exists) and the slot to fall back on for users the live one lacks."""
        live = self.live or DEFAULT_SLOT
        return live, (self.previous if self.previous and self.previous != live else None)


# The online comparison of two slots (`adcast compare`).


def overlap_at_k(a: Sequence[str], b: Sequence[str], k: int) -> float:
    """|top-k(a) ∩ top-k(b)| / k."""
    return len(set(a[:k]) & set(b[:k])) / k if k else 0.0


def rank_correlation(a: Sequence[str], b: Sequence[str], k: int) -> float:
    """Spearman's rho of two top-k lists over their union, an advertiser missing from one list
    ranked k+1 there (ties broken by nothing: the missing share one rank). 1 for identical
    lists, about -1 for reversed ones; nan when the union has one advertiser or none."""
    ra = {x: i for i, x in enumerate(a[:k])}
    rb = {x: i for i, x in enumerate(b[:k])}
    union = list(ra.keys() | rb.keys())
    if len(union) < 2:
        return math.nan
    xs = [ra.get(x, k) for x in union]
    ys = [rb.get(x, k) for x in union]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    vx = sum((x - mx) ** 2 for x in xs)
    vy = sum((y - my) ** 2 for y in ys)
    return cov / math.sqrt(vx * vy) if vx and vy else math.nan


@dataclass(frozen=True, slots=True)
class Prediction:
    """One affinity update as the affinities topic carries it."""

    user_id: str
    slot: str
    computed_at: int
    top: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Engagement:
    user_id: str
    advertiser_id: str
    event_time: int


@dataclass
class OnlineHits:
    """Per slot: engagements that followed a prediction of that slot for their user, and how many
    of them went to an advertiser of that prediction's top-k."""

    judged: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def rate(self, slot: str) -> float:
        n = self.judged.get(slot, 0)
        return self.hits.get(slot, 0) / n if n else math.nan


def online_hits(
    predictions: Iterable[Prediction], engagements: Iterable[Engagement], slots: Sequence[str], k: int
) -> OnlineHits:
    """Each engagement judged against, per slot, the newest prediction of its user that slot had
    computed before the engagement happened (a prediction cannot have seen what it is judged on)."""
    by_user: dict[tuple[str, str], list[Prediction]] = {}
    for p in predictions:
        if p.slot in slots:
            by_user.setdefault((p.user_id, p.slot), []).append(p)
    for group in by_user.values():
        group.sort(key=attrgetter("computed_at"))
    out = OnlineHits({s: 0 for s in slots}, {s: 0 for s in slots})
    for e in engagements:
        for slot in slots:
            ps = by_user.get((e.user_id, slot))
            if not ps:
                continue
            i = bisect.bisect_left(ps, e.event_time, key=attrgetter("computed_at"))
            if not i:
                continue
            out.judged[slot] += 1
            out.hits[slot] += e.advertiser_id in ps[i - 1].top[:k]
    return out
