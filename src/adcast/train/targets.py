"""What training asks the model to predict: soft target distributions, and relabelled copies that
teach copying from the history."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

# (advertiser indices to share the target with, share, their weights or None for even shares)
Spread = tuple[list[int], float, list[float] | None]


def soft_targets(targets: list[int], spreads: list[Spread | None], n: int) -> torch.Tensor:
    """Target distributions over the `n` advertisers, one row per example: one-hot, except that
    where `spreads[i]` is given, its share of the mass is spread over its advertisers: evenly, or in
    proportion to the weights it carries.
    Which known advertiser a user goes back to, and which new one of a category they discover, are
    close to draws from a set; one-hot targets teach a small model to bet on one member of the set
    and rank the rest low."""
    q = torch.zeros((len(targets), n))
    for row, (t, spread) in enumerate(zip(targets, spreads, strict=True)):
        if spread and spread[0] and spread[1] > 0:
            among, share, weights = spread
            if weights is None:
                q[row, among] += share / len(among)
            else:
                w = torch.tensor(weights)
                q[row, among] += share * w / w.sum()
            q[row, t] += 1.0 - share
        else:
            q[row, t] = 1.0
    return q


class Relabeller:
    """Relabels the advertisers of some examples in a batch by one random permutation of all
    advertiser tokens, in the prompt and the target alike. Where most advertisers are seen in a
    handful of examples, a small model learns the ones it trained on by heart instead of copying
    from the prompt (taobao_test_data: recall@10 0.14 on repeats of the last event's advertiser,
    which `recent` always gets; 0.16 even when trained on repeats and returns alone). Under random
    labels only the copy can lower the loss. Only examples whose target is in the history are
    relabelled (a relabelled new advertiser would be noise), as extra copies: the example is also
    seen as it is."""

    def __init__(self, token_ids: list[int], vocab_size: int) -> None:
        self.rows = torch.tensor(token_ids)
        self.vocab_size = vocab_size

    def __call__(
        self, ids: torch.Tensor, target: torch.Tensor, chosen: list[int], rng: random.Random
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`ids` and `target` with the rows `chosen` relabelled (new tensors; the inputs stay), and
        the permutation (advertiser j became perm[j]; None when nothing was relabelled)."""
        if not chosen:
            return ids, target, None
        perm = torch.randperm(len(self.rows), generator=torch.Generator().manual_seed(rng.getrandbits(63)))
        token_map = torch.arange(self.vocab_size)
        token_map[self.rows] = self.rows[perm]  # advertiser j's token -> advertiser perm[j]'s
        rows = torch.tensor(chosen)
        ids, target = ids.clone(), target.clone()
        ids[rows] = token_map[ids[rows]]
        moved = torch.empty_like(target[rows])
        moved[:, perm] = target[rows]  # the mass of advertiser j goes to advertiser perm[j]
        target[rows] = moved
        return ids, target, perm


def relabelled_copies(copyable: list[int], per_example: float, rng: random.Random) -> list[int]:
    """The examples to see relabelled in one epoch: each of `copyable` `per_example` times (the
    fraction as a sample of them of that share), so every epoch has the same length."""
    whole, part = divmod(per_example, 1.0)
    return copyable * int(whole) + rng.sample(copyable, round(part * len(copyable)))


class Spreads:
    """What each target is shared with: a return, the user's own advertisers (keeping repeats of
    the last event's advertiser one-hot too was worse: recall@10 0.887 vs 0.910 on the default
    world); a new advertiser the prompt shows, the ads it shows of the same category, evenly: the
    page the user picked it from; any other new advertiser, the advertisers of its category
    (those without a category: none), each in proportion to how often it is a target in
    training, plus one: within a category, a popular advertiser is the likelier discovery.
    `target_counts[i]`: examples whose target is advertiser i (of `advertisers`, in order)."""

    def __init__(
        self,
        advertisers: list[dict[str, Any]],
        target_counts: list[int],
        return_smoothing: float,
        new_smoothing: float,
    ) -> None:
        self.category = [a.get("category") for a in advertisers]
        self.by_category: dict[str, list[int]] = {}
        for i, a in enumerate(advertisers):
            if a.get("category"):
                self.by_category.setdefault(a["category"], []).append(i)
        self.weights = {c: [1.0 + target_counts[i] for i in among] for c, among in self.by_category.items()}
        self.return_smoothing, self.new_smoothing = return_smoothing, new_smoothing

    def of(self, target: int, in_own: bool, own: list[int], shown: Sequence[int] = ()) -> Spread | None:
        """The spread of `target`, given the user's own advertisers and the ads the prompt shows."""
        if in_own:
            return (own, self.return_smoothing, None)
        c = self.category[target]
        if target in shown:
            return (sorted({a for a in shown if self.category[a] == c}), self.new_smoothing, None)
        return (self.by_category[c], self.new_smoothing, self.weights[c]) if c else None
