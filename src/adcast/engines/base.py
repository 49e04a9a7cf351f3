"""The scoring contract every engine meets.

`score(prompts, k)` returns, per prompt, the k most likely advertisers as (advertiser_id,
probability), most likely first, with probabilities taken from one softmax over all advertiser
tokens (so each list sums to at most 1, and to 1 when k covers every advertiser).
`score_tokens` does the same for prompts already tokenized (`encode`); benchmarks use it to time
the engine alone, and random-weight benchmark models have no tokenizer at all.
"""

from __future__ import annotations

from typing import Protocol

Scored = list[tuple[str, float]]


class ScoringEngine(Protocol):
    model_version: str
    advertiser_ids: tuple[str, ...]

    def encode(self, prompts: list[str]) -> list[list[int]]: ...

    def score_tokens(self, token_ids: list[list[int]], k: int) -> list[Scored]: ...

    def score(self, prompts: list[str], k: int) -> list[Scored]: ...

    def close(self) -> None: ...
