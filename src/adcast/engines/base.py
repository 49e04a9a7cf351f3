"""The scoring contract every engine meets.

`score(prompts, k)` returns, per prompt, the k most likely advertisers as (advertiser_id,
probability), most likely first, with probabilities taken from one softmax over all advertiser
tokens (so each list sums to at most 1, and to 1 when k covers every advertiser), after adding
the model's copy score (adcast.core.copy) to each advertiser's logit.
`score_tokens` does the same for prompts already tokenized (`encode`), with the copy bonus given
per prompt (advertiser position -> value) or none; benchmarks use it to time the engine alone, and
random-weight benchmark models have no tokenizer at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

Scored = list[tuple[str, float]]


class ScoringEngine(Protocol):
    model_version: str
    advertiser_ids: tuple[str, ...]

    def encode(self, prompts: list[str]) -> list[list[int]]: ...

    def score_tokens(
        self, token_ids: list[list[int]], k: int, biases: Sequence[Mapping[int, float]] | None = None
    ) -> list[Scored]: ...

    def score(self, prompts: list[str], k: int) -> list[Scored]: ...

    def close(self) -> None: ...
