"""Train the advertiser predictor: (history up to t -> advertiser engaged next).

The loss is the cross-entropy of the target advertiser among advertiser tokens only, read at the
prompt's last position: exactly what the engines score at serving time.

A run's stages, in order: check the settings against the run (_check_run), build the example
shards (_shards), the model (_build_model), the encoded examples (_prepare_examples), the
optimizer and its schedule (_build_optimizer, from _start_run), then the epochs (Run.run_epochs,
each scored on the validation slice by Run.validate) and the saved model (save_run); the last
two in adcast.train.run.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from adcast.core.history import HistoryLimits
from adcast.core.prompt import advertiser_token
from adcast.errors import ConfigError, TrainingInterrupted
from adcast.train.checkpoints import CHECKPOINT_DIR, Checkpoints
from adcast.train.config import TrainConfig, auto_epochs
from adcast.train.copy_score import COPY_LR_SCALE, CopyScore
from adcast.train.distributed import Ranks, barrier, join, leave
from adcast.train.example_set import KINDS, encode
from adcast.train.example_set import prompts as shard_prompts
from adcast.train.head import AdvertiserHead
from adcast.train.lora import LoraSettings, apply_lora, embedding_matrices
from adcast.train.models import init_advertiser_rows, tiny_llama
from adcast.train.run import Net, Optimizer, Run, RunData, TrainReport, save_run
from adcast.train.schedule import TimeBox, accumulation_steps, cosine_schedule
from adcast.train.shards import Manifest, shards_for_run
from adcast.train.targets import Relabeller, Spreads, relabelled_copies
from adcast.train.validation import BestEpoch
from adcast.train.vocab import add_advertiser_tokens, build_word_tokenizer

# TrainConfig lives in adcast.train.config (no torch, for the command line); callers import it here too.
__all__ = ["TrainConfig", "TrainReport", "TrainingInterrupted", "auto_relabel", "train"]

log = logging.getLogger(__name__)


def auto_relabel(examples: int, advertisers: int) -> float:
    """Relabelled copies per copyable example when none are asked for: 1 / (training examples per
    advertiser), at most 1. Where each advertiser has a handful of examples, a small model learns
    them by heart instead of copying from the prompt; where each has many, relabelling only costs
    new advertisers. Measured with the other defaults (recall@10 of the model): taobao_test_data,
    1.1 examples per advertiser, 0.124 with none, 0.165 with 1 or 2; the marketplace family, 12,
    0.760 with none, 0.757 with 0.17."""
    return min(1.0, advertisers / max(1, examples))


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: TrainConfig,
    base: str | None = None,
    limits: HistoryLimits | None = None,
    progress: bool = True,
    resume: bool = False,
) -> TrainReport:
    """Train and save a checkpoint directory at `out_dir`. With `resume`, continue from the last
    periodic checkpoint in `out_dir` (same data and config), ending where an uninterrupted run
    would. Under torchrun, one data-parallel rank of the run (adcast.train.distributed)."""
    ranks, device = join(cfg.device)
    try:
        return _train(data_dir, out_dir, cfg, base, limits, progress and ranks.main, resume, ranks, device)
    finally:
        leave(ranks)


def _train(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: TrainConfig,
    base: str | None,
    limits: HistoryLimits | None,
    progress: bool,
    resume: bool,
    ranks: Ranks,
    device_name: str,
) -> TrainReport:
    accumulate = _check_run(cfg, base, resume, ranks)
    limits = limits or HistoryLimits()
    out = Path(out_dir)
    started = time.monotonic()
    torch.manual_seed(cfg.seed)  # before the model's initialisation, which draws from it
    shard_dir, manifest = _shards(data_dir, out, cfg, limits, ranks, progress)
    device = torch.device(device_name)
    net = _build_model(cfg, base, shard_dir, manifest, device)
    data = _prepare_examples(cfg, shard_dir, manifest, net, out, ranks)
    run = _start_run(cfg, base, resume, net, data, accumulate, ranks, device, progress, out)
    run.run_epochs()
    return save_run(run, net, out, base, limits, started)


def _check_run(cfg: TrainConfig, base: str | None, resume: bool, ranks: Ranks) -> int:
    """Check what TrainConfig cannot check alone: its settings against this run's base, resume and
    ranks. Returns the micro-batches per optimizer step on each rank."""
    accumulate = accumulation_steps(cfg.global_batch, cfg.batch_size, ranks.world)
    if resume and cfg.max_minutes:
        raise ConfigError("a time-boxed run follows its clock and cannot resume: rerun it, or drop --max-minutes")
    if cfg.lora_rank and not base:
        raise ConfigError("--lora-rank adapts a pretrained model: give it one with --base (see adcast import-model)")
    return accumulate


def _shards(
    data_dir: str | Path, out: Path, cfg: TrainConfig, limits: HistoryLimits, ranks: Ranks, progress: bool
) -> tuple[Path, Manifest]:
    """The example shards the run reads: `data_dir`'s own, or built from it beside the checkpoint."""
    shard_dir, manifest = shards_for_run(
        data_dir,
        out / CHECKPOINT_DIR / "examples",
        cfg.cutoff_fraction,
        limits,
        ranks.main,
        lambda: barrier(ranks),
        progress,
        round(cfg.serving_delay * 1000),
    )
    if not manifest.examples:
        raise ConfigError(
            f"no training examples before the cutoff in {data_dir}: need engagements "
            "(click, save, add_to_cart, checkout) with a known advertiser and some history"
        )
    return shard_dir, manifest


def _build_model(cfg: TrainConfig, base: str | None, shard_dir: Path, manifest: Manifest, device: torch.device) -> Net:
    """The pretrained `base` with the advertiser tokens added, or a tiny Llama over the prompts'
    words; advertiser rows initialised from their names, adapters added under LoRA."""
    adv_ids = [a["advertiser_id"] for a in manifest.advertisers]
    adv_tokens = [advertiser_token(a) for a in adv_ids]
    model: Any
    if base:
        tokenizer = AutoTokenizer.from_pretrained(base)
        add_advertiser_tokens(tokenizer, adv_tokens)
        model = AutoModelForCausalLM.from_pretrained(base)
        model.resize_token_embeddings(len(tokenizer))
    else:
        tokenizer = build_word_tokenizer(shard_prompts(shard_dir, manifest), adv_tokens)
        shape = (cfg.hidden_size, cfg.layers, cfg.heads, cfg.max_positions)
        model = tiny_llama(len(tokenizer), *shape, tokenizer.pad_token_id)
    token_ids: list[int] = tokenizer.convert_tokens_to_ids(adv_tokens)
    init_advertiser_rows(model, tokenizer, token_ids, [a["name"] for a in manifest.advertisers])
    model.to(device)
    adapted = None
    if cfg.lora_rank:
        adapted = apply_lora(model, LoraSettings(cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets), token_ids)
    if cfg.gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return Net(model, tokenizer, adapted, adv_ids, adv_tokens, token_ids)


def _prepare_examples(
    cfg: TrainConfig, shard_dir: Path, manifest: Manifest, net: Net, out: Path, ranks: Ranks
) -> RunData:
    """The shards tokenized into memory-mapped arrays (one folder per rank), split into training
    and validation examples."""
    tokenizer = net.tokenizer
    examples = encode(
        shard_dir,
        manifest,
        lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"],
        cfg.max_positions,
        {t: i for i, t in enumerate(net.adv_tokens)},
        cfg.validation,
        cfg.seed,
        out / CHECKPOINT_DIR / f"encoded-{ranks.rank}",
    )
    counts = np.bincount(examples.targets, minlength=len(net.adv_ids)).tolist()
    train_ids = np.flatnonzero(~examples.held).tolist()
    val_ids = np.flatnonzero(examples.held).tolist()
    spreads = Spreads(manifest.advertisers, counts, cfg.return_smoothing, cfg.new_smoothing)
    if cfg.validation > 0 and not (train_ids and val_ids):
        raise ConfigError(f"--validation {cfg.validation} leaves no training or no validation examples")
    copyable = np.flatnonzero(~examples.held & (examples.kinds != KINDS.index("new"))).tolist()
    relabel_copies = auto_relabel(len(examples), len(net.adv_ids)) if cfg.relabel is None else cfg.relabel
    epochs = auto_epochs(len(train_ids)) if cfg.epochs is None else cfg.epochs
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = examples.lengths
    return RunData(manifest, examples, lengths, spreads, train_ids, val_ids, copyable, relabel_copies, epochs, pad_id)


def _build_optimizer(cfg: TrainConfig, net: Net, copy_score: CopyScore, total: int, ranks: Ranks) -> Optimizer:
    """AdamW over the trained weights and the copy score's, on a cosine schedule of `total` steps
    (or the time box)."""
    trained = [p for p in net.model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": trained}]
    if net.adapted is not None:
        # Only the advertiser rows of the embeddings learn; decay would shrink the frozen rest.
        embeddings = embedding_matrices(net.model)
        groups = [
            {"params": [p for p in trained if all(p is not e for e in embeddings)]},
            {"params": embeddings, "weight_decay": 0.0},
        ]
    groups.append({"params": list(copy_score.parameters()), "lr": cfg.lr * COPY_LR_SCALE, "weight_decay": 0.0})
    optim = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    box = TimeBox(cfg.max_minutes, ranks)
    return Optimizer(optim, cosine_schedule(optim, total, box), box, trained)


def _steps_per_epoch(cfg: TrainConfig, data: RunData, accumulate: int, ranks: Ranks) -> int:
    # Every epoch has as many relabelled copies, whatever its draw.
    per_epoch = len(data.train_ids) + len(relabelled_copies(data.copyable, data.relabel_copies, random.Random(0)))
    return math.ceil(math.ceil(per_epoch / cfg.batch_size) / (accumulate * ranks.world))


def _checkpoints(cfg: TrainConfig, base: str | None, manifest: Manifest, out: Path) -> Checkpoints:
    # What a resumed run must share with the one that wrote the checkpoint.
    run_config = {k: v for k, v in asdict(cfg).items() if k not in ("checkpoint_every", "stop_after_steps")}
    identity = {"data": manifest.data_fingerprint, "config": run_config, "base": base}
    return Checkpoints(out / CHECKPOINT_DIR, identity)


def _start_run(
    cfg: TrainConfig,
    base: str | None,
    resume: bool,
    net: Net,
    data: RunData,
    accumulate: int,
    ranks: Ranks,
    device: torch.device,
    progress: bool,
    out: Path,
) -> Run:
    """The optimizer, the forward pass (data-parallel under torchrun), and the state a resume
    continues from."""
    copy_score = CopyScore().to(device)
    steps_per_epoch = _steps_per_epoch(cfg, data, accumulate, ranks)
    total = math.ceil(steps_per_epoch * data.epochs)
    opt = _build_optimizer(cfg, net, copy_score, total, ranks)
    checkpoints = _checkpoints(cfg, base, data.manifest, out)
    head = AdvertiserHead(net.model, copy_score, torch.tensor(net.token_ids, device=device))
    forward = _data_parallel(head, ranks, device)
    epoch0, step0, losses, best = _resume(checkpoints, head, opt, cfg.patience, resume)
    bar = tqdm(total=total, initial=len(losses), desc="train", unit="step", disable=not progress, mininterval=0.5)
    relabel = Relabeller(net.token_ids, net.model.get_input_embeddings().weight.shape[0])
    return Run(
        cfg=cfg,
        ranks=ranks,
        device=device,
        data=data,
        opt=opt,
        head=head,
        forward=forward,
        checkpoints=checkpoints,
        relabel=relabel,
        best=best,
        bar=bar,
        accumulate=accumulate,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        epoch0=epoch0,
        step0=step0,
        losses=losses,
    )


def _data_parallel(head: AdvertiserHead, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """`head`, wrapped under torchrun so that the ranks exchange their gradients."""
    if not ranks.distributed:
        return head
    local = [ranks.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(head, device_ids=local, broadcast_buffers=False)


def _resume(
    checkpoints: Checkpoints, head: AdvertiserHead, opt: Optimizer, patience: int, resume: bool
) -> tuple[int, int, list[float], BestEpoch]:
    """Where the run starts (epoch, step, losses so far, validation record): with `resume`, where
    the last checkpoint left it (its weights loaded into `head`); else the beginning."""
    state = checkpoints.load(head, opt.optim, opt.sched) if resume else None
    epoch0, step0, losses = state if state else (0, 0, [])
    best = BestEpoch(patience)
    if state:
        best.load(checkpoints.folder)
    return epoch0, step0, losses, best
