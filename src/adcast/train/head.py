"""The training forward pass: prompts to advertiser logits, as the engines score them.

The decoder body's last hidden state at each prompt's last position, times the advertiser rows of
the output embedding, plus the copy score. One module, so that DistributedDataParallel can wrap
the whole pass (the model and the copy weights alike).
"""

from __future__ import annotations

from typing import Any

import torch

from adcast.train.copy_score import CopyScore, Slots


class AdvertiserHead(torch.nn.Module):
    def __init__(self, model: Any, copy_score: CopyScore, advertiser_rows: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.copy = copy_score
        self.register_buffer("rows", advertiser_rows, persistent=False)

    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        slots: list[Slots],
        perm: torch.Tensor | None,
        relabelled: list[int],
        bf16: bool,
    ) -> torch.Tensor:
        body = getattr(self.model, self.model.base_model_prefix)
        last = mask.sum(dim=1) - 1
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
            h = hidden[torch.arange(len(ids), device=ids.device), last]
            logits = h @ self.model.get_output_embeddings().weight.index_select(0, self.rows).T
        return logits.float() + self.copy(slots, len(self.rows), perm, relabelled)
