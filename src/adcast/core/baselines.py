"""The baselines an ads team runs first, each ranking advertisers for a user at a moment.

- `popularity`: engagements per advertiser before the cutoff, the same list for everyone.
- `recent`: the user's own advertisers, weighted by engagement type and decayed by age.
- `recent_shown`: the advertisers recently shown to the user (impressions), decayed by age.
- `cooccurrence`: advertisers that followed the user's recent advertisers in other users'
  sequences before the cutoff.
Each list is filled to the requested length from popularity, so every method ranks K candidates.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from adcast.core.events import ENGAGEMENTS, IMPRESSION, Event
from adcast.core.history import COUNTER_WEIGHTS

DAY_MS = 24 * 3600 * 1000


def _fill(ranked: list[str], popular: Sequence[str], k: int) -> list[str]:
    seen = set(ranked)
    for a in popular:
        if len(ranked) >= k:
            break
        if a not in seen:
            seen.add(a)
            ranked.append(a)
    return ranked[:k]


class Popularity:
    def __init__(self, events: Iterable[Event]) -> None:
        counts = Counter(e.advertiser_id for e in events if e.event_type in ENGAGEMENTS and e.advertiser_id)
        self.ranked = [a for a, _ in sorted(counts.items(), key=lambda x: (-x[1], x[0]))]

    def rank(self, k: int) -> list[str]:
        return self.ranked[:k]


def recent(prior: Sequence[Event], at_ms: int, k: int, popular: Sequence[str], half_life_ms: int = DAY_MS) -> list[str]:
    """The user's own advertisers (views and engagements), recency-weighted."""
    scores: dict[str, float] = defaultdict(float)
    for e in prior:
        if e.advertiser_id and e.event_type != IMPRESSION:
            age = max(0, at_ms - e.event_time)
            scores[e.advertiser_id] += COUNTER_WEIGHTS[e.event_type] * math.exp(-math.log(2) * age / half_life_ms)
    ranked = [a for a, _ in sorted(scores.items(), key=lambda x: (-x[1], x[0]))]
    return _fill(ranked, popular, k)


def recent_shown(
    prior: Sequence[Event], at_ms: int, k: int, popular: Sequence[str], half_life_ms: int = DAY_MS
) -> list[str]:
    """The advertisers shown to the user (impressions), one unit per impression, recency-weighted:
    the ad system's own view of the user's current context."""
    scores: dict[str, float] = defaultdict(float)
    for e in prior:
        if e.advertiser_id and e.event_type == IMPRESSION:
            age = max(0, at_ms - e.event_time)
            scores[e.advertiser_id] += math.exp(-math.log(2) * age / half_life_ms)
    ranked = [a for a, _ in sorted(scores.items(), key=lambda x: (-x[1], x[0]))]
    return _fill(ranked, popular, k)


def engaged_sequence(events: Iterable[Event]) -> list[str]:
    """A user's engaged advertisers in time order, consecutive repeats collapsed."""
    seq: list[str] = []
    for e in events:
        if e.advertiser_id and e.event_type != IMPRESSION and (not seq or seq[-1] != e.advertiser_id):
            seq.append(e.advertiser_id)
    return seq


class Cooccurrence:
    """P(b follows a within `window` steps), fitted on users' engaged sequences before the cutoff."""

    def __init__(self, sequences: Iterable[Sequence[str]], window: int = 3) -> None:
        follows: dict[str, Counter[str]] = defaultdict(Counter)
        for seq in sequences:
            for i, a in enumerate(seq):
                for b in seq[i + 1 : i + 1 + window]:
                    if b != a:
                        follows[a][b] += 1
        self.follows = {a: (c, sum(c.values())) for a, c in follows.items()}

    def rank(self, prior: Sequence[Event], k: int, popular: Sequence[str], recent_n: int = 5) -> list[str]:
        scores: dict[str, float] = defaultdict(float)
        for age, a in enumerate(reversed(engaged_sequence(prior)[-recent_n:])):
            counts, total = self.follows.get(a, (Counter(), 0))
            for b, n in counts.items():
                scores[b] += 0.5**age * n / total
        ranked = [a for a, _ in sorted(scores.items(), key=lambda x: (-x[1], x[0]))]
        return _fill(ranked, popular, k)
