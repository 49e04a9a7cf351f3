"""PyTorch engine (transformers): decoder body, last real position, advertiser rows only.

The full-vocabulary projection is never computed: the last hidden state is multiplied by the
output-embedding rows of the advertiser tokens, then softmaxed over those rows. Right padding
with a gather at each row's last real token keeps positions correct without position_ids.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adcast.checkpoint import ModelMeta
from adcast.engines.base import Scored
from adcast.errors import ModelError

log = logging.getLogger(__name__)


class TorchEngine:
    def __init__(self, model_dir: str, device: str = "cpu", max_batch_tokens: int = 32_768) -> None:
        self.meta = ModelMeta.load(model_dir)
        self.model_version = self.meta.model_version
        self.advertiser_ids = self.meta.advertiser_ids
        self.device = torch.device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the model in {model_dir}: {exc}") from exc
        self.model = model.to(self.device).eval()
        self.body = getattr(model, model.base_model_prefix)
        rows = torch.tensor(self.meta.token_ids, device=self.device)
        self.adv_weight = model.get_output_embeddings().weight.index_select(0, rows).detach()
        self.max_len = int(getattr(model.config, "max_position_embeddings", 2048))
        self.max_batch_tokens = max_batch_tokens
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _encode(self, prompts: list[str]) -> list[list[int]]:
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        # Keep the newest part of over-long prompts (the history's tail matters most).
        return [x[-self.max_len :] for x in ids]

    @torch.inference_mode()
    def last_hidden(self, token_ids: list[list[int]]) -> torch.Tensor:
        n, width = len(token_ids), max(len(x) for x in token_ids)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, x in enumerate(token_ids):
            input_ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        out = self.body(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
        last = torch.tensor([len(x) - 1 for x in token_ids], device=self.device)
        return out.last_hidden_state[torch.arange(n, device=self.device), last]

    @torch.inference_mode()
    def score(self, prompts: list[str], k: int) -> list[Scored]:
        if not prompts:
            return []
        k = min(k, len(self.advertiser_ids))
        encoded = self._encode(prompts)
        # Group similar lengths so little compute goes to padding.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Scored] = [[] for _ in prompts]
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * len(encoded[order[end]]) <= self.max_batch_tokens:
                end += 1
            chunk = order[start:end]
            hidden = self.last_hidden([encoded[i] for i in chunk])
            probs = torch.softmax((hidden @ self.adv_weight.T).float(), dim=-1)
            top_p, top_i = probs.topk(k, dim=-1)
            for row, i in enumerate(chunk):
                results[i] = [
                    (self.advertiser_ids[j], float(p))
                    for p, j in zip(top_p[row].tolist(), top_i[row].tolist(), strict=True)
                ]
            start = end
        return results

    def close(self) -> None:
        pass
