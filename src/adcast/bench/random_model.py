"""Random-weight models of named shapes, saved as adcast checkpoints, so engine benchmarks need no
download (the GPU machines have no network) and no training.

The directory holds a Hugging Face config and weights plus adcast.json (advertiser ids mapped to
the last `advertisers` token ids of the vocabulary), but no tokenizer: benchmarks feed token ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adcast.errors import ConfigError
from adcast.model_meta import ModelMeta

# Decoder shapes of real model families (the Qwen2.5 ones match deploy/gpu_ceiling.py).
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        family="llama", vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4,
    ),
    "small": dict(
        family="llama", vocab_size=8192, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=8,
    ),
    "qwen2.5-0.5b": dict(
        family="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2,
    ),
    "qwen2.5-1.5b": dict(
        family="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2,
    ),
}  # fmt: skip


def build_random_model(
    shape: str,
    out_dir: str | Path,
    advertisers: int = 20_000,
    device: str = "cpu",
    seed: int = 0,
    min_vocab: int = 0,
) -> ModelMeta:
    """Write a random-weight checkpoint of `shape` to `out_dir`; returns its adcast metadata.

    `min_vocab` widens the vocabulary (plus the advertiser tokens) so that a real tokenizer's
    ids fit, for benchmarks that score real prompts with a bigger random model.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    if shape not in SHAPES:
        raise ConfigError(f"unknown model shape {shape!r}; choose one of: {', '.join(SHAPES)}")
    spec = dict(SHAPES[shape])
    family = spec.pop("family")
    # The shape's vocabulary, grown where the advertiser tokens would leave too little room for text.
    spec["vocab_size"] = max(spec["vocab_size"], min_vocab + advertisers, 1024 + advertisers)
    config_cls = Qwen2Config if family == "qwen2" else LlamaConfig
    config = config_cls(max_position_embeddings=4096, tie_word_embeddings=True, **spec)
    torch.manual_seed(seed)
    # Initialise on the target device: a 0.5B model initialises in a blink on a GPU, slowly on a CPU.
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(out_dir)
    first = spec["vocab_size"] - advertisers
    meta = ModelMeta(
        model_version=f"random-{shape}-{seed}",
        advertiser_ids=tuple(f"a{i:06d}" for i in range(advertisers)),
        tokens=tuple(f"<adv_a{i:06d}>" for i in range(advertisers)),
        token_ids=tuple(range(first, first + advertisers)),
        trained={"random_shape": shape, "seed": seed},
    )
    meta.save(out_dir)
    return meta
