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
from typing import Any, Protocol

from adcast.errors import ModelError
from adcast.model_meta import ModelMeta

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


class PromptScoring:
    """`encode` and `score` on top of an engine's `score_tokens`: the engines' shared text side
    (the model's tokenizer, then its copy score per prompt)."""

    tokenizer: Any  # a Hugging Face tokenizer, or None for random-weight benchmark models
    meta: ModelMeta
    model_version: str

    def score_tokens(
        self, token_ids: list[list[int]], k: int, biases: Sequence[Mapping[int, float]] | None = None
    ) -> list[Scored]:
        raise NotImplementedError

    def encode(self, prompts: list[str]) -> list[list[int]]:
        if self.tokenizer is None:
            raise ModelError(f"model {self.model_version} has no tokenizer; score token ids with score_tokens")
        return list(self.tokenizer(prompts, add_special_tokens=False)["input_ids"])

    def score(self, prompts: list[str], k: int) -> list[Scored]:
        if not prompts:
            return []
        return self.score_tokens(self.encode(prompts), k, [self.meta.copy_bias(p) for p in prompts])
