"""The models the trainer starts from: a tiny Llama for training from scratch, and the advertiser
tokens' first embeddings in any model."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from adcast.core.text import text_words


def tiny_llama(
    vocab_size: int, hidden_size: int, layers: int, heads: int, max_positions: int, pad_id: int
) -> PreTrainedModel:
    """A small Llama with tied embeddings, randomly initialised."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=None,
        eos_token_id=None,
    )
    return LlamaForCausalLM(config)


def init_advertiser_rows(model: PreTrainedModel, tokenizer: Any, token_ids: list[int], names: list[str]) -> None:
    """Start each advertiser token at the mean embedding of its name's tokens (the name as
    written, and its lower-case words, whichever the vocabulary knows). Names can be shared (on
    taobao_test_data, the ad's category and brand: 6,520 advertisers, 887 distinct sets of known
    words): advertisers whose names give the same start also get a random part as large as a
    word's, or they would start as one point and the model could not copy one of them from a
    history without the others. Those with no known word keep their random initialisation."""
    emb: torch.Tensor = model.get_input_embeddings().weight
    skip = {tokenizer.unk_token_id, tokenizer.pad_token_id, *token_ids}
    words: list[tuple[int, ...]] = []
    for name in names:
        ids = tokenizer([name, " ".join(text_words(name))], add_special_tokens=False)["input_ids"]
        words.append(tuple(sorted({i for row in ids for i in row} - skip)))
    shared = {w for w, n in Counter(words).items() if n > 1}
    with torch.no_grad():
        scale = emb[sorted(set(range(emb.shape[0])) - skip)].std().item()
        for tid, known in zip(token_ids, words, strict=True):
            if known:
                emb[tid] = emb[list(known)].mean(dim=0)
                if known in shared:
                    emb[tid] += torch.randn_like(emb[tid]) * scale
