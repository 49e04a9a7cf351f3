"""The scoring contract every engine meets.

`score(prompts, k)` returns, per prompt, the k most likely advertisers as (advertiser_id,
probability), most likely first, with probabilities taken from one softmax over all advertiser
tokens (so each list sums to at most 1, and to 1 when k covers every advertiser).
"""

from __future__ import annotations

from typing import Protocol

Scored = list[tuple[str, float]]


class ScoringEngine(Protocol):
    model_version: str
    advertiser_ids: tuple[str, ...]

    def score(self, prompts: list[str], k: int) -> list[Scored]: ...

    def close(self) -> None: ...
