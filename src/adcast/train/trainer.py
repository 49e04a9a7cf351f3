"""Train the advertiser predictor: (history up to t -> advertiser engaged next).

The loss is the cross-entropy of the target advertiser among advertiser tokens only, read at the
prompt's last position: exactly what the engines score at serving time.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from adcast.checkpoint import ModelMeta
from adcast.core.examples import cutoff_time, iter_examples
from adcast.core.history import HistoryLimits
from adcast.core.prompt import advertiser_token, render_prompt
from adcast.core.text import text_words
from adcast.data.files import read_records
from adcast.errors import ConfigError
from adcast.train.vocab import add_advertiser_tokens, build_word_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    cutoff_fraction: float = 0.8
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    max_positions: int = 512
    device: str = "cpu"


@dataclass(frozen=True)
class TrainReport:
    examples: int
    epochs: int
    seconds: float
    first_loss: float
    last_loss: float
    model_dir: str


def data_fingerprint(data_dir: str | Path) -> str:
    h = hashlib.sha256()
    for kind in ("events", "advertisers", "profiles"):
        for p in sorted(Path(data_dir).glob(f"{kind}.*")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _tiny_llama(vocab_size: int, cfg: TrainConfig, pad_id: int) -> PreTrainedModel:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.hidden_size * 2,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=None,
        eos_token_id=None,
    )
    return LlamaForCausalLM(config)


def _init_advertiser_rows(model: PreTrainedModel, tokenizer: Any, token_ids: list[int], names: list[str]) -> None:
    """Start each advertiser token at the mean embedding of its name's tokens."""
    emb: torch.Tensor = model.get_input_embeddings().weight  # type: ignore[assignment]
    unk = tokenizer.unk_token_id
    with torch.no_grad():
        for tid, name in zip(token_ids, names, strict=True):
            ids = [
                i
                for i in tokenizer(" ".join(text_words(name)), add_special_tokens=False)["input_ids"]
                if i != unk and i not in token_ids
            ]
            if ids:
                emb[tid] = emb[ids].mean(dim=0)


def _batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar prompt length (much less padding), in random order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: TrainConfig,
    base: str | None = None,
    limits: HistoryLimits | None = None,
    progress: bool = True,
) -> TrainReport:
    limits = limits or HistoryLimits()
    started = time.monotonic()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    advertisers = list(read_records(data_dir, "advertisers"))
    profiles = {p["user_id"]: p["attributes"] for p in read_records(data_dir, "profiles")}
    events = list(read_records(data_dir, "events"))
    cutoff = cutoff_time((e["event_time"] for e in events), cfg.cutoff_fraction)
    adv_ids = [a["advertiser_id"] for a in advertisers]
    examples = list(iter_examples(events, profiles, set(adv_ids), limits, end=cutoff))
    if not examples:
        raise ConfigError(
            f"no training examples before the cutoff in {data_dir}: need engagements "
            "(click, save, add_to_cart, checkout) with a known advertiser and some history"
        )
    prompts = [render_prompt(ex.profile, ex.events) for ex in examples]
    adv_tokens = [advertiser_token(a) for a in adv_ids]

    model: Any
    if base:
        tokenizer = AutoTokenizer.from_pretrained(base)
        add_advertiser_tokens(tokenizer, adv_tokens)
        model = AutoModelForCausalLM.from_pretrained(base)
        model.resize_token_embeddings(len(tokenizer))
    else:
        tokenizer = build_word_tokenizer(prompts, adv_tokens)
        model = _tiny_llama(len(tokenizer), cfg, tokenizer.pad_token_id)
    token_ids: list[int] = tokenizer.convert_tokens_to_ids(adv_tokens)  # type: ignore[assignment]
    _init_advertiser_rows(model, tokenizer, token_ids, [a["name"] for a in advertisers])
    device = torch.device(cfg.device)
    model.to(device).train()
    body = getattr(model, model.base_model_prefix)
    adv_rows = torch.tensor(token_ids, device=device)
    target_index = {a: i for i, a in enumerate(adv_ids)}
    encoded = [x[-cfg.max_positions :] for x in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    targets = [target_index[ex.target] for ex in examples]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    rng = random.Random(cfg.seed)
    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / max(1, total // 20)) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    losses: list[float] = []
    bar = tqdm(total=total, desc="train", unit="step", disable=not progress, mininterval=0.5)
    use_bf16 = device.type == "cuda"
    for _epoch in range(cfg.epochs):
        for batch in _batches([len(x) for x in encoded], cfg.batch_size, rng):
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
                mask[r, : len(encoded[i])] = 1
            last = mask.sum(dim=1) - 1
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                hidden = body(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
                h = hidden[torch.arange(len(batch), device=device), last.to(device)]
                logits = h @ model.get_output_embeddings().weight.index_select(0, adv_rows).T
            loss = torch.nn.functional.cross_entropy(
                logits.float(), torch.tensor([targets[i] for i in batch], device=device)
            )
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
    bar.close()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    fingerprint = data_fingerprint(data_dir)
    seconds = time.monotonic() - started
    window = max(1, min(20, len(losses) // 5))
    first, last_loss = sum(losses[:window]) / window, sum(losses[-window:]) / window
    ModelMeta(
        model_version=f"{out.name}-{fingerprint[:8]}-s{cfg.seed}",
        advertiser_ids=tuple(adv_ids),
        tokens=tuple(adv_tokens),
        token_ids=tuple(token_ids),
        trained={
            "data_fingerprint": fingerprint,
            "examples": len(examples),
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "cutoff_time": cutoff,
            "cutoff_fraction": cfg.cutoff_fraction,
            "base": base,
            "seconds": round(seconds, 1),
            "first_loss": first,
            "last_loss": last_loss,
        },
    ).save(out)
    return TrainReport(len(examples), cfg.epochs, seconds, first, last_loss, str(out))
