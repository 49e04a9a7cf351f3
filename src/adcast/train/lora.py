"""LoRA fine-tuning of a pretrained base (peft), with the advertiser rows of the embeddings trained too.

The base's weights stay frozen; low-rank adapters are added to the named projections, and the
rows of the input (and, when untied, output) embedding that belong to the new advertiser tokens
are trained in full: they are new words the base has never seen. A gradient mask keeps every
other row of those matrices where the base had it. After training the adapters are merged into
the weights, so both engines load a plain Hugging Face checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adcast.errors import ConfigError, DependencyMissing

if TYPE_CHECKING:  # torch is imported when adapters are applied: the command line reads the defaults
    import torch

# Every projection of a Llama-style decoder layer: attention and MLP.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float | None = None  # default: 2 x rank
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.0


def apply_lora(model: Any, settings: LoraSettings, advertiser_rows: Sequence[int]) -> Any:
    """Add adapters to `model` in place (returned as peft's wrapper, for merging) and make only
    they and the advertiser rows of the embeddings trainable."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise DependencyMissing("peft", "infer-cpu") from exc
    if settings.rank < 1:
        raise ConfigError(f"--lora-rank must be 1 or more; got {settings.rank}")
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = sorted(set(settings.targets) - names)
    if unknown:
        raise ConfigError(f"--lora-targets {', '.join(unknown)}: no such module in {type(model).__name__}")
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha if settings.alpha is not None else 2 * settings.rank,
        target_modules=list(settings.targets),
        lora_dropout=settings.dropout,
        bias="none",
    )
    import torch

    wrapped = get_peft_model(model, config)  # freezes every base weight
    for weight in embedding_matrices(model):
        weight.requires_grad_(True)
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        mask[list(advertiser_rows)] = 1.0
        weight.register_hook(lambda grad, mask=mask: grad * mask)
    return wrapped


def embedding_matrices(model: Any) -> list[torch.nn.Parameter]:
    """The input embedding, and the output one when it is a separate matrix."""
    found = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not found[0]:
        found.append(out.weight)
    return found


def merge(wrapped: Any) -> Any:
    """The plain model with the adapters folded into its weights."""
    return wrapped.merge_and_unload()
