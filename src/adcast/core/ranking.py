"""Ranking metrics for one relevant item per example (the advertiser engaged next)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def rank_of(target: str, ranked: Sequence[str]) -> int | None:
    """1-based rank of `target` in `ranked`, None when absent."""
    for i, candidate in enumerate(ranked):
        if candidate == target:
            return i + 1
    return None


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def ndcg_at(ranks: Sequence[int | None], k: int) -> float:
    # One relevant item: the ideal DCG is 1, so NDCG is 1/log2(rank+1) within the cut-off.
    return sum(1 / math.log2(r + 1) for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def mrr(ranks: Sequence[int | None]) -> float:
    """Mean reciprocal rank over the ranked lists given (absent counts as 0)."""
    return sum(1 / r for r in ranks if r is not None) / len(ranks) if ranks else 0.0


def summarize(ranks: Sequence[int | None], ks: Sequence[int], ndcg_k: int = 10) -> dict[str, float]:
    out = {f"recall@{k}": recall_at(ranks, k) for k in ks}
    out[f"ndcg@{ndcg_k}"] = ndcg_at(ranks, ndcg_k)
    out["mrr"] = mrr(ranks)
    return out


def merge_half_and_half(primary: Sequence[str], secondary: Sequence[str], k: int) -> list[str]:
    """Top k/2 of `primary` plus top k/2 of `secondary`, deduplicated, then filled to k by
    taking the next candidates of each in turn (the complementary-predictor union)."""
    out: list[str] = []
    seen: set[str] = set()

    def take(candidates: Sequence[str], limit: int) -> None:
        for c in candidates:
            if len(out) >= limit:
                return
            if c not in seen:
                seen.add(c)
                out.append(c)

    take(primary[: k - k // 2], k)
    take(secondary[: k // 2], k)
    rest = [c for pair in zip(primary, secondary, strict=False) for c in pair]
    rest += list(primary[len(secondary) :]) + list(secondary[len(primary) :])
    take(rest, k)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 < q < 100, inclusive method); nan for no values."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


def top_k_drift(previous: Sequence[str], current: Sequence[str], k: int = 10) -> float:
    """The share of `current`'s top k that `previous`'s top k did not hold: 0 when a new prediction
    changed nothing a reader of the top k sees, 1 when it replaced all of it (an LLM call's worth)."""
    shown = current[:k]
    if not shown:
        return 0.0
    return len(set(shown) - set(previous[:k])) / len(shown)
