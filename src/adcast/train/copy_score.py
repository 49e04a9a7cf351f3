"""The copy score's weights (adcast.core.copy) as a trainable module, trained with the model."""

from __future__ import annotations

import torch

from adcast.core.copy import COPY_SLOTS, copy_slots

# The weights learn faster than the model's: they start at 0 and must reach the logits' scale
# (a few units) within one run's schedule.
COPY_LR_SCALE = 20.0

Slots = tuple[list[int], list[int]]  # (advertiser positions, slots) of one prompt


def named_slots(prompt: str, index: dict[str, int]) -> Slots:
    """The advertisers a prompt names with a copy weight (`index`: token -> advertiser position),
    and the slot of each."""
    named = [(index[t], slot) for t, slot in copy_slots(prompt) if t in index]
    return [a for a, _ in named], [slot for _, slot in named]


class CopyScore(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(COPY_SLOTS))

    def forward(
        self, slots: list[Slots], advertisers: int, perm: torch.Tensor | None, relabelled: list[int]
    ) -> torch.Tensor:
        """The bonus per (row, advertiser) for a batch, rows relabelled by `perm` where listed."""
        moved = set(relabelled)
        rows: list[int] = []
        cols: list[int] = []
        which: list[int] = []
        for row, (advs, named) in enumerate(slots):
            if perm is not None and row in moved:
                advs = perm[advs].tolist() if advs else []
            rows += [row] * len(advs)
            cols += advs
            which += named
        bias = torch.zeros((len(slots), advertisers), device=self.weight.device)
        if not rows:
            return bias + 0.0 * self.weight.sum()  # still in the graph: data-parallel runs expect its gradient
        index = (torch.tensor(rows, device=bias.device), torch.tensor(cols, device=bias.device))
        return bias.index_put(index, self.weight[torch.tensor(which, device=bias.device)], accumulate=True)
