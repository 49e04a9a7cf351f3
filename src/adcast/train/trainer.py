"""Train the advertiser predictor: (history up to t -> advertiser engaged next).

The loss is the cross-entropy of the target advertiser among advertiser tokens only, read at the
prompt's last position: exactly what the engines score at serving time.

A run's stages, in order: check the settings against the run (_check_run), build the example
shards (_shards), the model (_build_model), the encoded examples (_prepare_examples), the
optimizer and its schedule (_build_optimizer, from _start_run), then the epochs (_Run.run_epochs,
each scored on the validation slice by _Run.validate) and the saved model (_save).
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

from adcast.core.history import HistoryLimits
from adcast.core.prompt import advertiser_token
from adcast.errors import ConfigError, TrainingInterrupted
from adcast.model_meta import ModelMeta
from adcast.train.checkpoints import CHECKPOINT_DIR, Checkpoints
from adcast.train.config import TrainConfig
from adcast.train.copy_score import COPY_LR_SCALE, CopyScore
from adcast.train.distributed import Ranks, barrier, check_same_weights, join, leave, sum_over_ranks
from adcast.train.example_set import KINDS, ExampleSet, encode
from adcast.train.example_set import prompts as shard_prompts
from adcast.train.head import AdvertiserHead
from adcast.train.lora import LoraSettings, apply_lora, embedding_matrices, merge
from adcast.train.models import init_advertiser_rows, tiny_llama
from adcast.train.schedule import TimeBox, accumulation_steps, batches_by_length, cosine_schedule
from adcast.train.shards import Manifest, shards_for_run
from adcast.train.targets import Relabeller, Spreads, relabelled_copies, soft_targets
from adcast.train.validation import BestEpoch
from adcast.train.vocab import add_advertiser_tokens, build_word_tokenizer

# TrainConfig lives in adcast.train.config (no torch, for the command line); callers import it here too.
__all__ = ["TrainConfig", "TrainReport", "TrainingInterrupted", "auto_relabel", "train"]

log = logging.getLogger(__name__)

Steps = list[list[list[int]]]  # an epoch's optimizer steps, each a list of micro-batches of positions


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
    return _save(run, net, out, base, limits, started)


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
    )
    if not manifest.examples:
        raise ConfigError(
            f"no training examples before the cutoff in {data_dir}: need engagements "
            "(click, save, add_to_cart, checkout) with a known advertiser and some history"
        )
    return shard_dir, manifest


@dataclass
class _Net:
    """The model a run trains, with its tokenizer and the advertisers' tokens."""

    model: Any  # the Hugging Face model itself (under LoRA, the one `adapted` wraps)
    tokenizer: Any
    adapted: Any  # peft's wrapper under LoRA, merged before the model is saved; else None
    adv_ids: list[str]
    adv_tokens: list[str]
    token_ids: list[int]


def _build_model(cfg: TrainConfig, base: str | None, shard_dir: Path, manifest: Manifest, device: torch.device) -> _Net:
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
    return _Net(model, tokenizer, adapted, adv_ids, adv_tokens, token_ids)


@dataclass
class _Data:
    """The encoded examples and what a run draws from them."""

    manifest: Manifest
    examples: ExampleSet
    lengths: list[int]  # of each example's tokens
    spreads: Spreads
    train_ids: list[int]
    val_ids: list[int]
    copyable: list[int]  # training examples whose target is not new to the user: those relabelled
    relabel_copies: float
    pad_id: int


def _prepare_examples(
    cfg: TrainConfig, shard_dir: Path, manifest: Manifest, net: _Net, out: Path, ranks: Ranks
) -> _Data:
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
    spreads = Spreads(manifest.advertisers, counts, cfg.return_smoothing, cfg.new_smoothing)
    train_ids = np.flatnonzero(~examples.held).tolist()
    val_ids = np.flatnonzero(examples.held).tolist()
    if cfg.validation > 0 and not (train_ids and val_ids):
        raise ConfigError(f"--validation {cfg.validation} leaves no training or no validation examples")
    copyable = np.flatnonzero(~examples.held & (examples.kinds != KINDS.index("new"))).tolist()
    relabel_copies = auto_relabel(len(examples), len(net.adv_ids)) if cfg.relabel is None else cfg.relabel
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = examples.lengths
    return _Data(manifest, examples, lengths, spreads, train_ids, val_ids, copyable, relabel_copies, pad_id)


@dataclass
class _Optimizer:
    """The optimizer, its schedule and the time box the schedule follows."""

    optim: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    box: TimeBox
    clipped: list[torch.nn.Parameter]  # the model's trained weights: their gradient norm is clipped


def _build_optimizer(cfg: TrainConfig, net: _Net, copy_score: CopyScore, total: int, ranks: Ranks) -> _Optimizer:
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
    return _Optimizer(optim, cosine_schedule(optim, total, box), box, trained)


def _steps_per_epoch(cfg: TrainConfig, data: _Data, accumulate: int, ranks: Ranks) -> int:
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
    net: _Net,
    data: _Data,
    accumulate: int,
    ranks: Ranks,
    device: torch.device,
    progress: bool,
    out: Path,
) -> _Run:
    """The optimizer, the forward pass (data-parallel under torchrun), and the state a resume
    continues from."""
    copy_score = CopyScore().to(device)
    steps_per_epoch = _steps_per_epoch(cfg, data, accumulate, ranks)
    total = steps_per_epoch * cfg.epochs
    opt = _build_optimizer(cfg, net, copy_score, total, ranks)
    checkpoints = _checkpoints(cfg, base, data.manifest, out)
    head = AdvertiserHead(net.model, copy_score, torch.tensor(net.token_ids, device=device))
    forward = _data_parallel(head, ranks, device)
    epoch0, step0, losses, best = _resume(checkpoints, head, opt, cfg.patience, resume)
    bar = tqdm(total=total, initial=len(losses), desc="train", unit="step", disable=not progress, mininterval=0.5)
    relabel = Relabeller(net.token_ids, net.model.get_input_embeddings().weight.shape[0])
    return _Run(
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
    checkpoints: Checkpoints, head: AdvertiserHead, opt: _Optimizer, patience: int, resume: bool
) -> tuple[int, int, list[float], BestEpoch]:
    """Where the run starts (epoch, step, losses so far, validation record): with `resume`, where
    the last checkpoint left it (its weights loaded into `head`); else the beginning."""
    state = checkpoints.load(head, opt.optim, opt.sched) if resume else None
    epoch0, step0, losses = state if state else (0, 0, [])
    best = BestEpoch(patience)
    if state:
        best.load(checkpoints.folder)
    return epoch0, step0, losses, best


@dataclass
class _Run:
    """A run under way: what its steps read, and the state they update."""

    cfg: TrainConfig
    ranks: Ranks
    device: torch.device
    data: _Data
    opt: _Optimizer
    head: AdvertiserHead  # the whole pass; what a checkpoint holds and the validation scores
    forward: torch.nn.Module  # what the steps call: `head`, data-parallel under torchrun
    checkpoints: Checkpoints
    relabel: Relabeller
    best: BestEpoch
    bar: Any  # tqdm's progress bar
    accumulate: int
    steps_per_epoch: int
    epoch0: int  # where the run starts: 0, 0 unless it resumes
    step0: int
    losses: list[float]  # of every step so far

    def run_epochs(self) -> None:
        """Train until the last epoch, the time box or early stopping ends the run."""
        for epoch in range(self.epoch0, self.cfg.epochs):
            seen, steps = self.plan(epoch)
            for step in range(self.step0 if epoch == self.epoch0 else 0, len(steps)):
                self.step(epoch, step, seen, steps)
                if self.opt.box.expired:
                    minutes, done = self.cfg.max_minutes, len(self.losses)
                    log.info("time box of %g minutes spent after %d steps: saving the model", minutes, done)
                    break
            # A time box may end an epoch early: its weights are scored like a whole epoch's.
            if self.data.val_ids and len(self.best.losses) <= epoch and self.validate(epoch):
                break
            if self.opt.box.expired:
                break
        self.bar.close()

    def plan(self, epoch: int) -> tuple[list[int], Steps]:
        """What an epoch sees (every training example, then relabelled copies: positions past the
        examples) and its optimizer steps over those positions."""
        # Each epoch's order depends only on (seed, epoch): a resumed run sees the same batches.
        epoch_rng = random.Random(f"{self.cfg.seed}:{epoch}")
        seen = self.data.train_ids + relabelled_copies(self.data.copyable, self.data.relabel_copies, epoch_rng)
        batches = batches_by_length([self.data.lengths[i] for i in seen], self.cfg.batch_size, epoch_rng)
        # An optimizer step takes `accumulate` consecutive micro-batches per rank; rank r computes
        # micro-batches r, r + world, ...: together the ranks take one process's global batch.
        per_step = self.accumulate * self.ranks.world
        return seen, [batches[i : i + per_step] for i in range(0, len(batches), per_step)]

    def step(self, epoch: int, step: int, seen: list[int], steps: Steps) -> None:
        """One optimizer step, then the checkpoint (or the stop) it is due."""
        loss = self.gradients(epoch, step, seen, steps[step])
        torch.nn.utils.clip_grad_norm_(self.opt.clipped, 1.0)
        self.opt.optim.step()
        self.opt.box.tick()
        self.opt.sched.step()
        self.losses.append(loss.item())
        self.bar.update(1)
        if len(self.losses) % 20 == 0:
            self.bar.set_postfix(loss=f"{sum(self.losses[-20:]) / 20:.3f}")
        self.checkpoint(*((epoch, step + 1) if step + 1 < len(steps) else (epoch + 1, 0)))

    def gradients(self, epoch: int, step: int, seen: list[int], micros: list[list[int]]) -> torch.Tensor:
        """This rank's share of one step's micro-batches, their gradients accumulated; the step's
        loss, summed over the ranks."""
        rows = sum(len(micro) for micro in micros)
        world, rank = self.ranks.world, self.ranks.rank
        mine = [(m, mb, len(mb) / rows) for m, mb in enumerate(micros) if m % world == rank]
        # A short last step may leave a rank nothing: it still joins the gradient exchange.
        mine = mine or [(0, micros[0], 0.0)]
        self.opt.optim.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=self.device)
        n_train = len(self.data.train_ids)  # positions past these in `seen` are relabelled copies
        for n, (m, micro, share) in enumerate(mine):
            # Resumable: the relabelling draws depend on the step (and micro-batch) only.
            rng = random.Random(f"{self.cfg.seed}:{epoch}:{step}" + (f":{m}" if m else ""))
            part = self.micro_loss([seen[p] for p in micro], [r for r, p in enumerate(micro) if p >= n_train], rng)
            # DDP averages the ranks' gradients: scale by the world so that they sum instead.
            sync = n == len(mine) - 1 or not self.ranks.distributed
            with nullcontext() if sync else cast(DistributedDataParallel, self.forward).no_sync():
                (part * (share * world)).backward()
            loss += part.detach() * share
        return sum_over_ranks(loss, self.ranks)

    def micro_loss(
        self, batch: list[int], copies: list[int], rng: random.Random, net: torch.nn.Module | None = None
    ) -> torch.Tensor:
        """The mean loss of one forward pass over examples `batch` (rows `copies` relabelled), through
        `net` (default: the steps' forward pass)."""
        examples, pad_id = self.data.examples, self.data.pad_id
        rows = [examples.tokens[i] for i in batch]
        width = max(len(x) for x in rows)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, x in enumerate(rows):
            ids[r, : len(x)] = torch.from_numpy(x.astype(np.int64))
            mask[r, : len(x)] = 1
        targets = [int(examples.targets[i]) for i in batch]
        shares = [
            self.data.spreads.of(t, bool(examples.in_own[i]), examples.own[i].tolist())
            for t, i in zip(targets, batch, strict=True)
        ]
        target = soft_targets(targets, shares, len(self.data.manifest.advertisers))
        ids, target, perm = self.relabel(ids, target, copies, rng)
        slots = [(examples.named[i].tolist(), examples.slots[i].tolist()) for i in batch]
        forward = self.forward if net is None else net
        logits = forward(ids.to(self.device), mask.to(self.device), slots, perm, copies, self.device.type == "cuda")
        return torch.nn.functional.cross_entropy(logits, target.to(self.device))

    def checkpoint(self, epoch: int, step: int) -> None:
        """Every `checkpoint_every` steps, save where the run goes on from (`epoch`, `step`); after
        `stop_after_steps`, save and stop."""
        cfg, losses, main = self.cfg, self.losses, self.ranks.main
        if cfg.checkpoint_every and len(losses) % cfg.checkpoint_every == 0 and main:
            self.checkpoints.save(self.head, self.opt.optim, self.opt.sched, epoch, step, losses)
        if cfg.stop_after_steps and len(losses) >= cfg.stop_after_steps:
            if main:
                self.checkpoints.save(self.head, self.opt.optim, self.opt.sched, epoch, step, losses)
            barrier(self.ranks)
            self.bar.close()
            raise TrainingInterrupted(f"stopped after {len(losses)} steps; resume with --resume")

    def validate(self, epoch: int) -> bool:
        """Score the weights `epoch` ended with on the validation slice; whether to stop early."""
        val_ids, size = self.data.val_ids, self.cfg.batch_size
        self.head.eval()
        with torch.no_grad():  # the same loss on every rank: the same weights and examples
            chunks = [val_ids[i : i + size] for i in range(0, len(val_ids), size)]
            val = sum(self.micro_loss(c, [], random.Random(0), self.head).item() * len(c) for c in chunks)
        self.head.train()
        self.best.record(val / len(val_ids), self.head)
        best = self.best
        log.info("epoch %d: validation loss %.4f (best: epoch %d)", epoch + 1, best.losses[-1], best.best_epoch + 1)
        if self.ranks.main and self.cfg.checkpoint_every:
            best.save(self.checkpoints.folder)
        if best.should_stop():
            log.info("no better validation loss for %d epochs: stopping", self.cfg.patience)
            return True
        return False


def _save(run: _Run, net: _Net, out: Path, base: str | None, limits: HistoryLimits, started: float) -> TrainReport:
    """Rank 0 writes the model (the best epoch's weights, under validation) and its metadata;
    every rank reports the run."""
    if run.best.state is not None:
        run.head.load_state_dict(run.best.state)  # the best epoch's weights are the ones saved
    check_same_weights(run.head, run.ranks)
    losses, examples, epochs = run.losses, len(run.data.examples), len(run.losses) / run.steps_per_epoch
    if not run.ranks.main:
        barrier(run.ranks)  # rank 0 writes the model
        return TrainReport(examples, epochs, time.monotonic() - started, losses[0], losses[-1], str(out))
    out.mkdir(parents=True, exist_ok=True)
    _write_model(net, run.cfg, out)
    run.checkpoints.clear()
    seconds = time.monotonic() - started
    window = max(1, min(20, len(losses) // 5))
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    fingerprint = run.data.manifest.data_fingerprint
    ModelMeta(
        model_version=f"{out.name}-{fingerprint[:8]}-s{run.cfg.seed}",
        advertiser_ids=tuple(net.adv_ids),
        tokens=tuple(net.adv_tokens),
        token_ids=tuple(net.token_ids),
        copy_weights=tuple(run.head.copy.weight.detach().cpu().tolist()),
        trained={**_facts(run, base, limits), "seconds": round(seconds, 1), "first_loss": first, "last_loss": last},
    ).save(out)
    barrier(run.ranks)
    return TrainReport(examples, epochs, seconds, first, last, str(out))


def _write_model(net: _Net, cfg: TrainConfig, out: Path) -> None:
    """A plain Hugging Face checkpoint and its tokenizer, as both engines load them."""
    model = net.model
    if net.adapted is not None:
        model = merge(net.adapted)  # the adapters folded into the weights
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_disable()
        model.config.use_cache = True
    model.eval()
    model.save_pretrained(out)
    net.tokenizer.save_pretrained(out)


def _facts(run: _Run, base: str | None, limits: HistoryLimits) -> dict[str, Any]:
    """How the model was trained, as its metadata records it (the timing and losses apart)."""
    cfg, best, manifest = run.cfg, run.best, run.data.manifest
    return {
        "data_fingerprint": manifest.data_fingerprint,
        "examples": len(run.data.examples),
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "return_smoothing": cfg.return_smoothing,
        "new_smoothing": cfg.new_smoothing,
        "relabel": run.data.relabel_copies,
        "cutoff_time": manifest.cutoff,
        "cutoff_fraction": cfg.cutoff_fraction,
        "history_events": limits.min_events,
        "shown_impressions": limits.shown,
        "base": base,
        "lora_rank": cfg.lora_rank,
        "steps": len(run.losses),
        "max_minutes": cfg.max_minutes,
        "global_batch": cfg.batch_size * run.accumulate * run.ranks.world,
        "ranks": run.ranks.world,
        "validation": cfg.validation,
        "validation_examples": len(run.data.val_ids),
        "validation_losses": best.losses,
        "best_epoch": best.best_epoch + 1 if best.losses else None,
    }
