"""A training run under way: the model, the encoded examples and the optimizer it was given
(built by adcast.train.trainer), its epochs and steps (Run), and the saved model (save_run)."""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from adcast.core.history import HistoryLimits
from adcast.errors import TrainingInterrupted
from adcast.model_meta import ModelMeta
from adcast.train.checkpoints import Checkpoints
from adcast.train.config import TrainConfig
from adcast.train.distributed import Ranks, barrier, check_same_weights, sum_over_ranks
from adcast.train.example_set import ExampleSet
from adcast.train.head import AdvertiserHead
from adcast.train.lora import merge
from adcast.train.schedule import TimeBox, batches_by_length
from adcast.train.shards import Manifest
from adcast.train.targets import Relabeller, Spreads, relabelled_copies, soft_targets
from adcast.train.validation import BestEpoch

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


@dataclass
class Net:
    """The model a run trains, with its tokenizer and the advertisers' tokens."""

    model: Any  # the Hugging Face model itself (under LoRA, the one `adapted` wraps)
    tokenizer: Any
    adapted: Any  # peft's wrapper under LoRA, merged before the model is saved; else None
    adv_ids: list[str]
    adv_tokens: list[str]
    token_ids: list[int]


@dataclass
class RunData:
    """The encoded examples and what a run draws from them."""

    manifest: Manifest
    examples: ExampleSet
    lengths: list[int]  # of each example's tokens
    spreads: Spreads
    train_ids: list[int]
    val_ids: list[int]
    copyable: list[int]  # training examples whose target is not new to the user: those relabelled
    relabel_copies: float
    epochs: float  # asked for, or derived from the training examples (auto_epochs; the last may be partial)
    pad_id: int


@dataclass
class Optimizer:
    """The optimizer, its schedule and the time box the schedule follows."""

    optim: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    box: TimeBox
    clipped: list[torch.nn.Parameter]  # the model's trained weights: their gradient norm is clipped


@dataclass
class Run:
    """A run under way: what its steps read, and the state they update."""

    cfg: TrainConfig
    ranks: Ranks
    device: torch.device
    data: RunData
    opt: Optimizer
    head: AdvertiserHead  # the whole pass; what a checkpoint holds and the validation scores
    forward: torch.nn.Module  # what the steps call: `head`, data-parallel under torchrun
    checkpoints: Checkpoints
    relabel: Relabeller
    best: BestEpoch
    bar: Any  # tqdm's progress bar
    accumulate: int
    steps_per_epoch: int
    total_steps: int  # of the whole run: the epochs' steps, the last epoch's cut to its share
    epoch0: int  # where the run starts: 0, 0 unless it resumes
    step0: int
    losses: list[float]  # of every step so far

    def run_epochs(self) -> None:
        """Train until the last epoch, the time box or early stopping ends the run."""
        for epoch in range(self.epoch0, math.ceil(self.data.epochs)):
            seen, steps = self.plan(epoch)
            for step in range(self.step0 if epoch == self.epoch0 else 0, len(steps)):
                if len(self.losses) >= self.total_steps:
                    break  # a partial last epoch
                self.step(epoch, step, seen, steps)
                if self.opt.box.expired:
                    minutes, done = self.cfg.max_minutes, len(self.losses)
                    log.info("time box of %g minutes spent after %d steps: saving the model", minutes, done)
                    break
            # A time box may end an epoch early: its weights are scored like a whole epoch's.
            if self.data.val_ids and len(self.best.losses) <= epoch and self.validate(epoch):
                break
            if self.opt.box.expired or len(self.losses) >= self.total_steps:
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
            self.data.spreads.of(t, bool(examples.in_own[i]), examples.own[i].tolist(), examples.shown(i))
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


def save_run(run: Run, net: Net, out: Path, base: str | None, limits: HistoryLimits, started: float) -> TrainReport:
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


def _write_model(net: Net, cfg: TrainConfig, out: Path) -> None:
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


def _facts(run: Run, base: str | None, limits: HistoryLimits) -> dict[str, Any]:
    """How the model was trained, as its metadata records it (the timing and losses apart)."""
    cfg, best, manifest = run.cfg, run.best, run.data.manifest
    return {
        "data_fingerprint": manifest.data_fingerprint,
        "examples": len(run.data.examples),
        "epochs": round(run.data.epochs, 3),
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
