"""How far a mixture of the user's own advertisers and popularity gets on a data set's targets.

    python tools/mixture_ceiling.py DATA [--cutoff-fraction 0.8]

Scores every mixture of a grid, P(a) = w * own(a) + (1 - w) * popularity(a), where own(a) is the
share of the user's engagement weight on a (adcast's counter weights, decayed with a half-life)
and popularity(a) the share of all engagements before the cutoff, on exactly the targets and
prior events `adcast eval` uses. The best mixture is chosen on those targets themselves, so its
recall is an upper bound for the family, not a baseline: it says how much of a data set's recall
history and popularity can reach, and so how much a model must find elsewhere (categories, words,
sequences) to go beyond it. Prints recall@10 overall and by kind of target for each mixture.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict
from collections.abc import Sequence

from adcast.core.events import ENGAGEMENTS, IMPRESSION, Event
from adcast.core.examples import (
    DEFAULT_CUTOFF_FRACTION,
    DEFAULT_SERVING_DELAY_MS,
    cutoff_time,
    iter_examples,
    target_kind,
)
from adcast.core.history import COUNTER_WEIGHTS, HistoryLimits
from adcast.data.files import read_records

DAY_MS = 24 * 3600 * 1000
WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.95)
HALF_LIVES_DAYS = (1.0, 7.0, 30.0, math.inf)
K = 10


def own_shares(prior: Sequence[Event], at_ms: int, half_life_ms: float) -> dict[str, float]:
    weight: dict[str, float] = defaultdict(float)
    for e in prior:
        if e.advertiser_id and e.event_type != IMPRESSION:
            decay = 0.5 ** (max(0, at_ms - e.event_time) / half_life_ms)
            weight[e.advertiser_id] += COUNTER_WEIGHTS[e.event_type] * decay
    total = sum(weight.values()) or 1.0
    return {a: v / total for a, v in weight.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="data directory in the interchange format")
    p.add_argument("--cutoff-fraction", type=float, default=DEFAULT_CUTOFF_FRACTION)
    p.add_argument(
        "--serving-delay",
        type=float,
        default=DEFAULT_SERVING_DELAY_MS / 1000,
        help="seconds, as adcast eval's (default: %(default)s)",
    )
    args = p.parse_args()
    advertisers = {a["advertiser_id"] for a in read_records(args.data, "advertisers")}
    profiles = {r["user_id"]: r["attributes"] for r in read_records(args.data, "profiles")}
    records = list(read_records(args.data, "events"))
    cutoff = cutoff_time((r["event_time"] for r in records), args.cutoff_fraction)
    before = Counter(
        r["advertiser_id"]
        for r in records
        if r["event_time"] < cutoff and r["event_type"] in ENGAGEMENTS and r.get("advertiser_id")
    )
    total = sum(before.values())
    popular = {a: n / total for a, n in before.most_common(200)}
    delay_ms = round(args.serving_delay * 1000)
    examples = list(
        iter_examples(
            records, profiles, advertisers, HistoryLimits(), start=cutoff, with_prior=True, serving_delay_ms=delay_ms
        )
    )
    kinds = [target_kind(ex) for ex in examples]
    counts = Counter(kinds)
    print(f"{len(examples):,} targets: " + ", ".join(f"{k} {n:,}" for k, n in sorted(counts.items())))
    print(f"{'own weight':>10} {'half-life':>9} {'recall@10':>9}  by kind")
    best = (0.0, "")
    for days in HALF_LIVES_DAYS:
        shares = [own_shares(ex.prior, ex.event_time, days * DAY_MS) for ex in examples]
        for w in WEIGHTS:
            hits: Counter[str] = Counter()
            for ex, kind, own in zip(examples, kinds, shares, strict=True):
                score = {a: (1 - w) * s for a, s in popular.items()}
                for a, s in own.items():
                    score[a] = score.get(a, 0.0) + w * s
                if ex.target in sorted(score, key=lambda a: (-score[a], a))[:K]:
                    hits[kind] += 1
            recall = sum(hits.values()) / len(examples)
            by_kind = "  ".join(f"{k} {hits[k] / n:.3f}" for k, n in sorted(counts.items()))
            line = f"{w:>10} {days:>8g}d {recall:>9.3f}  {by_kind}"
            print(line, flush=True)
            best = max(best, (recall, line))
    print(f"best: {best[1].strip()}")


if __name__ == "__main__":
    main()
