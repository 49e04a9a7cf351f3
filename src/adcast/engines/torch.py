"""PyTorch engine (transformers): decoder body, last real position, advertiser rows only.

The full-vocabulary projection is never computed: the last hidden state is multiplied by the
output-embedding rows of the advertiser tokens, then softmaxed over those rows. Prompts are sorted
by length and cut into chunks of at most `max_batch_tokens`; inside a chunk, right padding with a
gather at each row's last real token keeps positions correct without position_ids, and a chunk
whose prompts all have one length runs without a mask, so SDPA takes its fused causal kernel.
fp32 on the CPU, bf16 on CUDA.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adcast.engines.base import PromptScoring, Scored
from adcast.errors import ModelError
from adcast.model_meta import ModelMeta, has_tokenizer

log = logging.getLogger(__name__)


class TorchEngine(PromptScoring):
    def __init__(
        self, model_dir: str, device: str = "cpu", max_batch_tokens: int = 65_536, compile: bool = False
    ) -> None:
        self.meta = ModelMeta.load(model_dir)
        self.model_version = self.meta.model_version
        self.advertiser_ids = self.meta.advertiser_ids
        self.device = torch.device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        try:
            # Random-weight benchmark models carry no tokenizer; they are scored through score_tokens.
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir) if has_tokenizer(model_dir) else None
            model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the model in {model_dir}: {exc}") from exc
        self.model = model.to(self.device).eval()
        self.body = getattr(model, model.base_model_prefix)
        if compile:
            self.body = torch.compile(self.body, dynamic=True)
        rows = torch.tensor(self.meta.token_ids, device=self.device)
        self.adv_weight = model.get_output_embeddings().weight.index_select(0, rows).detach()
        self.max_len = int(getattr(model.config, "max_position_embeddings", 2048))
        self.max_batch_tokens = max_batch_tokens
        pad = self.tokenizer.pad_token_id if self.tokenizer is not None else None
        self.pad_id = pad if pad is not None else 0

    @torch.inference_mode()
    def last_hidden(self, token_ids: list[list[int]]) -> torch.Tensor:
        n, width = len(token_ids), max(len(x) for x in token_ids)
        lengths = [len(x) for x in token_ids]
        if min(lengths) == width:
            input_ids = torch.tensor(token_ids, dtype=torch.long)
            out = self.body(input_ids=input_ids.to(self.device, non_blocking=True))
            return out.last_hidden_state[:, -1]
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, x in enumerate(token_ids):
            input_ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        out = self.body(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
        last = torch.tensor([length - 1 for length in lengths], device=self.device)
        return out.last_hidden_state[torch.arange(n, device=self.device), last]

    @torch.inference_mode()
    def score_tokens(
        self, token_ids: list[list[int]], k: int, biases: Sequence[Mapping[int, float]] | None = None
    ) -> list[Scored]:
        if not token_ids:
            return []
        k = min(k, len(self.advertiser_ids))
        # Keep the newest part of over-long prompts (the history's tail matters most).
        encoded = [x[-self.max_len :] for x in token_ids]
        # Group similar lengths so little compute goes to padding.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Scored] = [[] for _ in encoded]
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * len(encoded[order[end]]) <= self.max_batch_tokens:
                end += 1
            chunk = order[start:end]
            hidden = self.last_hidden([encoded[i] for i in chunk])
            logits = (hidden @ self.adv_weight.T).float()
            if biases:
                _add_biases(logits, [biases[i] for i in chunk])
            probs = torch.softmax(logits, dim=-1)
            top_p, top_i = (t.tolist() for t in probs.topk(k, dim=-1))
            for row, i in enumerate(chunk):
                results[i] = [(self.advertiser_ids[j], p) for p, j in zip(top_p[row], top_i[row], strict=True)]
            start = end
        return results

    def close(self) -> None:
        pass


def _add_biases(logits: torch.Tensor, biases: Sequence[Mapping[int, float]]) -> None:
    """Add each row's copy-score bonus (advertiser position -> value) to its logits, in place."""
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    for row, bias in enumerate(biases):
        rows += [row] * len(bias)
        cols += bias.keys()
        values += bias.values()
    if rows:
        logits.index_put_((torch.tensor(rows), torch.tensor(cols)), torch.tensor(values), accumulate=True)
