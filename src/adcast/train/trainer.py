"""Train the advertiser predictor: (history up to t -> advertiser engaged next).

The loss is the cross-entropy of the target advertiser among advertiser tokens only, read at the
prompt's last position: exactly what the engines score at serving time.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from adcast.core.examples import DEFAULT_CUTOFF_FRACTION
from adcast.core.history import HistoryLimits
from adcast.core.prompt import advertiser_token
from adcast.errors import ConfigError, TrainingInterrupted
from adcast.model_meta import ModelMeta
from adcast.train.checkpoints import CHECKPOINT_DIR, Checkpoints
from adcast.train.copy_score import COPY_LR_SCALE, CopyScore
from adcast.train.distributed import Ranks, barrier, check_same_weights, join, leave, sum_over_ranks
from adcast.train.example_set import KINDS, encode
from adcast.train.example_set import prompts as shard_prompts
from adcast.train.head import AdvertiserHead
from adcast.train.lora import DEFAULT_TARGETS, LoraSettings, apply_lora, embedding_matrices, merge
from adcast.train.models import init_advertiser_rows, tiny_llama
from adcast.train.schedule import TimeBox, accumulation_steps, batches_by_length, cosine_schedule
from adcast.train.shards import shards_for_run
from adcast.train.targets import Relabeller, Spreads, relabelled_copies, soft_targets
from adcast.train.validation import BestEpoch
from adcast.train.vocab import add_advertiser_tokens, build_word_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    # Shares of the target mass spread over the plausible alternatives (see soft_targets): on a
    # return, the user's own advertisers; on a new advertiser, the advertisers of its category.
    return_smoothing: float = 0.3
    new_smoothing: float = 0.3
    # Relabelled copies (see Relabeller) per example whose target is in the history, per epoch, on
    # top of the example itself: they teach copying from the history. None: derived from the data
    # (auto_relabel), as a catalog needs them only where most advertisers are seen in few examples.
    relabel: float | None = None
    seed: int = 0
    cutoff_fraction: float = DEFAULT_CUTOFF_FRACTION
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    max_positions: int = 512
    device: str = "cpu"
    checkpoint_every: int = 200  # steps between resumable checkpoints (0: none)
    stop_after_steps: int = 0  # stop early with a resumable checkpoint (tests); 0: never
    # A time box: the run ends after this many minutes with its schedule decayed (see
    # adcast.train.schedule) and saves its model; 0: none.
    max_minutes: float = 0.0
    # Examples per optimizer step: batch_size examples per forward pass, gradients accumulated
    # over global_batch / batch_size of them. None: batch_size.
    global_batch: int | None = None
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory
    # LoRA on a pretrained base (0: full fine-tuning); see adcast.train.lora.
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS
    # A share of the users held out and scored after each epoch; the best epoch is saved, and
    # `patience` epochs without improvement stop the run (0: never). See adcast.train.validation.
    validation: float = 0.0
    patience: int = 0


@dataclass(frozen=True)
class TrainReport:
    examples: int
    epochs: float  # trained: fewer than asked when a time box or early stopping ended the run
    seconds: float
    first_loss: float
    last_loss: float
    model_dir: str


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
    for name in ("return_smoothing", "new_smoothing"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ConfigError(f"{name} is a share of the target, between 0 and 1; got {getattr(cfg, name)}")
    if cfg.relabel is not None and cfg.relabel < 0:
        raise ConfigError(f"relabel is a number of copies per example, 0 or more; got {cfg.relabel}")
    accumulate = accumulation_steps(cfg.global_batch, cfg.batch_size, ranks.world)
    if resume and cfg.max_minutes:
        raise ConfigError("a time-boxed run follows its clock and cannot resume: rerun it, or drop --max-minutes")
    if cfg.lora_rank and not base:
        raise ConfigError("--lora-rank adapts a pretrained model: give it one with --base (see adcast import-model)")
    limits = limits or HistoryLimits()
    started = time.monotonic()
    torch.manual_seed(cfg.seed)
    shard_dir, manifest = shards_for_run(
        data_dir,
        Path(out_dir) / CHECKPOINT_DIR / "examples",
        cfg.cutoff_fraction,
        limits,
        ranks.main,
        lambda: barrier(ranks),
        progress,
    )
    advertisers = manifest.advertisers
    adv_ids = [a["advertiser_id"] for a in advertisers]
    cutoff = manifest.cutoff
    if not manifest.examples:
        raise ConfigError(
            f"no training examples before the cutoff in {data_dir}: need engagements "
            "(click, save, add_to_cart, checkout) with a known advertiser and some history"
        )
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
    init_advertiser_rows(model, tokenizer, token_ids, [a["name"] for a in advertisers])
    device = torch.device(device_name)
    model.to(device)
    adapted = None
    if cfg.lora_rank:
        adapted = apply_lora(model, LoraSettings(cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets), token_ids)
    if cfg.gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    adv_rows = torch.tensor(token_ids, device=device)
    examples = encode(
        shard_dir,
        manifest,
        lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"],
        cfg.max_positions,
        {t: i for i, t in enumerate(adv_tokens)},
        cfg.validation,
        cfg.seed,
        Path(out_dir) / CHECKPOINT_DIR / f"encoded-{ranks.rank}",
    )
    counts = np.bincount(examples.targets, minlength=len(adv_ids)).tolist()
    spreads = Spreads(advertisers, counts, cfg.return_smoothing, cfg.new_smoothing)
    copy_score = CopyScore().to(device)
    train_ids = np.flatnonzero(~examples.held).tolist()
    val_ids = np.flatnonzero(examples.held).tolist()
    n_train = len(train_ids)  # positions past these in an epoch's list are relabelled copies
    if cfg.validation > 0 and not (train_ids and val_ids):
        raise ConfigError(f"--validation {cfg.validation} leaves no training or no validation examples")
    copyable = np.flatnonzero(~examples.held & (examples.kinds != KINDS.index("new"))).tolist()
    relabel_copies = auto_relabel(len(examples), len(adv_ids)) if cfg.relabel is None else cfg.relabel
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    per_epoch = len(train_ids) + len(relabelled_copies(copyable, relabel_copies, random.Random(0)))
    steps_per_epoch = math.ceil(math.ceil(per_epoch / cfg.batch_size) / (accumulate * ranks.world))
    total = steps_per_epoch * cfg.epochs
    trained = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": trained}]
    if adapted is not None:
        # Only the advertiser rows of the embeddings learn; decay would shrink the frozen rest.
        embeddings = embedding_matrices(model)
        groups = [
            {"params": [p for p in trained if all(p is not e for e in embeddings)]},
            {"params": embeddings, "weight_decay": 0.0},
        ]
    groups.append({"params": list(copy_score.parameters()), "lr": cfg.lr * COPY_LR_SCALE, "weight_decay": 0.0})
    optim = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    box = TimeBox(cfg.max_minutes, ranks)
    sched = cosine_schedule(optim, total, box)
    fingerprint = manifest.data_fingerprint
    # What a resumed run must share with the one that wrote the checkpoint.
    run_config = {k: v for k, v in asdict(cfg).items() if k not in ("checkpoint_every", "stop_after_steps")}
    identity = {"data": fingerprint, "config": run_config, "base": base}
    checkpoints = Checkpoints(Path(out_dir) / CHECKPOINT_DIR, identity)
    trainable = AdvertiserHead(model, copy_score, adv_rows)  # the whole pass; what a checkpoint holds
    forward: torch.nn.Module = trainable
    if ranks.distributed:
        local = [ranks.local_rank] if device.type == "cuda" else None
        forward = DistributedDataParallel(trainable, device_ids=local, broadcast_buffers=False)
    state = checkpoints.load(trainable, optim, sched) if resume else None
    epoch0, step0, losses = state if state else (0, 0, [])
    best = BestEpoch(cfg.patience)
    if state:
        best.load(checkpoints.folder)
    bar = tqdm(total=total, initial=len(losses), desc="train", unit="step", disable=not progress, mininterval=0.5)
    use_bf16 = device.type == "cuda"
    lengths = examples.lengths
    relabel = Relabeller(token_ids, model.get_input_embeddings().weight.shape[0])

    def micro_loss(batch: list[int], copies: list[int], rng: random.Random, net: Any = forward) -> torch.Tensor:
        """The mean loss of one forward pass over examples `batch` (rows `copies` relabelled)."""
        rows = [examples.tokens[i] for i in batch]
        width = max(len(x) for x in rows)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, x in enumerate(rows):
            ids[r, : len(x)] = torch.from_numpy(x.astype(np.int64))
            mask[r, : len(x)] = 1
        targets = [int(examples.targets[i]) for i in batch]
        shares = [
            spreads.of(t, bool(examples.in_own[i]), examples.own[i].tolist())
            for t, i in zip(targets, batch, strict=True)
        ]
        target = soft_targets(targets, shares, len(token_ids))
        ids, target, perm = relabel(ids, target, copies, rng)
        slots = [(examples.named[i].tolist(), examples.slots[i].tolist()) for i in batch]
        logits = net(ids.to(device), mask.to(device), slots, perm, copies, use_bf16)
        return torch.nn.functional.cross_entropy(logits, target.to(device))

    for epoch in range(epoch0, cfg.epochs):
        # Each epoch's order depends only on (seed, epoch): a resumed run sees the same batches.
        epoch_rng = random.Random(f"{cfg.seed}:{epoch}")
        # What the epoch sees: every example, then relabelled copies (positions past the examples).
        seen = train_ids + relabelled_copies(copyable, relabel_copies, epoch_rng)
        batches = batches_by_length([lengths[i] for i in seen], cfg.batch_size, epoch_rng)
        # An optimizer step takes `accumulate` consecutive micro-batches per rank; rank r computes
        # micro-batches r, r + world, ...: together the ranks take one process's global batch.
        per_step = accumulate * ranks.world
        steps = [batches[i : i + per_step] for i in range(0, len(batches), per_step)]
        for step in range(step0 if epoch == epoch0 else 0, len(steps)):
            rows = sum(len(micro) for micro in steps[step])
            mine = [(m, mb, len(mb) / rows) for m, mb in enumerate(steps[step]) if m % ranks.world == ranks.rank]
            # A short last step may leave a rank nothing: it still joins the gradient exchange.
            mine = mine or [(0, steps[step][0], 0.0)]
            optim.zero_grad(set_to_none=True)
            loss = torch.zeros((), device=device)
            for n, (m, micro, share) in enumerate(mine):
                # Resumable: the relabelling draws depend on the step (and micro-batch) only.
                rng = random.Random(f"{cfg.seed}:{epoch}:{step}" + (f":{m}" if m else ""))
                part = micro_loss([seen[p] for p in micro], [r for r, p in enumerate(micro) if p >= n_train], rng)
                # DDP averages the ranks' gradients: scale by the world so that they sum instead.
                sync = n == len(mine) - 1 or not ranks.distributed
                with nullcontext() if sync else cast(DistributedDataParallel, forward).no_sync():
                    (part * (share * ranks.world)).backward()
                loss += part.detach() * share
            loss = sum_over_ranks(loss, ranks)
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optim.step()
            box.tick()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            if len(losses) % 20 == 0:
                bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
            done = (epoch, step + 1) if step + 1 < len(steps) else (epoch + 1, 0)
            if cfg.checkpoint_every and len(losses) % cfg.checkpoint_every == 0 and ranks.main:
                checkpoints.save(trainable, optim, sched, *done, losses)
            if cfg.stop_after_steps and len(losses) >= cfg.stop_after_steps:
                if ranks.main:
                    checkpoints.save(trainable, optim, sched, *done, losses)
                barrier(ranks)
                bar.close()
                raise TrainingInterrupted(f"stopped after {len(losses)} steps; resume with --resume")
            if box.expired:
                log.info("time box of %g minutes spent after %d steps: saving the model", cfg.max_minutes, len(losses))
                break
        # A time box may end an epoch early: its weights are scored like a whole epoch's.
        if val_ids and len(best.losses) <= epoch:
            trainable.eval()
            with torch.no_grad():  # the same loss on every rank: the same weights and examples
                chunks = [val_ids[i : i + cfg.batch_size] for i in range(0, len(val_ids), cfg.batch_size)]
                val = sum(micro_loss(c, [], random.Random(0), trainable).item() * len(c) for c in chunks)
            trainable.train()
            best.record(val / len(val_ids), trainable)
            log.info("epoch %d: validation loss %.4f (best: epoch %d)", epoch + 1, best.losses[-1], best.best_epoch + 1)
            if ranks.main and cfg.checkpoint_every:
                best.save(checkpoints.folder)
            if best.should_stop():
                log.info("no better validation loss for %d epochs: stopping", cfg.patience)
                break
        if box.expired:
            break
    bar.close()
    if best.state is not None:
        trainable.load_state_dict(best.state)  # the best epoch's weights are the ones saved
    check_same_weights(trainable, ranks)
    out = Path(out_dir)
    if not ranks.main:
        barrier(ranks)  # rank 0 writes the model
        seconds = time.monotonic() - started
        return TrainReport(len(examples), len(losses) / steps_per_epoch, seconds, losses[0], losses[-1], str(out))
    out.mkdir(parents=True, exist_ok=True)
    if adapted is not None:
        model = merge(adapted)  # a plain checkpoint: the adapters folded into the weights
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_disable()
        model.config.use_cache = True
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    checkpoints.clear()
    seconds = time.monotonic() - started
    window = max(1, min(20, len(losses) // 5))
    first, last_loss = sum(losses[:window]) / window, sum(losses[-window:]) / window
    ModelMeta(
        model_version=f"{out.name}-{fingerprint[:8]}-s{cfg.seed}",
        advertiser_ids=tuple(adv_ids),
        tokens=tuple(adv_tokens),
        token_ids=tuple(token_ids),
        copy_weights=tuple(copy_score.weight.detach().cpu().tolist()),
        trained={
            "data_fingerprint": fingerprint,
            "examples": len(examples),
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "return_smoothing": cfg.return_smoothing,
            "new_smoothing": cfg.new_smoothing,
            "relabel": relabel_copies,
            "cutoff_time": cutoff,
            "cutoff_fraction": cfg.cutoff_fraction,
            "history_events": limits.min_events,
            "shown_impressions": limits.shown,
            "base": base,
            "lora_rank": cfg.lora_rank,
            "steps": len(losses),
            "max_minutes": cfg.max_minutes,
            "global_batch": cfg.batch_size * accumulate * ranks.world,
            "ranks": ranks.world,
            "validation": cfg.validation,
            "validation_examples": len(val_ids),
            "validation_losses": best.losses,
            "best_epoch": best.best_epoch + 1 if best.losses else None,
            "seconds": round(seconds, 1),
            "first_loss": first,
            "last_loss": last_loss,
        },
    ).save(out)
    barrier(ranks)
    return TrainReport(len(examples), len(losses) / steps_per_epoch, seconds, first, last_loss, str(out))
