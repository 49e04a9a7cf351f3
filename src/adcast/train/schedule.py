"""A run's steps and learning rate: batches of similar length, gradient accumulation, the cosine
schedule, and the time box of `adcast train --max-minutes`.

A time-boxed run's schedule follows whichever comes first, its steps or its clock: it ends at the
deadline with the learning rate decayed, as a run of exactly that many steps would, instead of
being cut off halfway down its schedule. Every rank follows rank 0's clock, so the ranks keep the
same learning rate and stop at the same step.
"""

from __future__ import annotations

import math
import random
import time

import torch
import torch.distributed as dist

from adcast.errors import ConfigError
from adcast.train.distributed import Ranks

WARMUP_PARTS = 20  # the learning rate rises linearly over the first twentieth of the steps or the time box


def batches_by_length(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar prompt length (much less padding), in random order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def accumulation_steps(global_batch: int | None, batch_size: int, world: int = 1) -> int:
    """Micro-batches per optimizer step on each of `world` ranks: global_batch / (batch_size x
    world), which must be a whole number."""
    if global_batch is None:
        return 1
    per_pass = batch_size * world
    if global_batch < per_pass or global_batch % per_pass:
        raise ConfigError(
            f"--global-batch {global_batch} must be a multiple of the batch size {batch_size}"
            + (f" times the {world} ranks" if world > 1 else "")
            + " (examples per forward pass)"
        )
    return global_batch // per_pass


class TimeBox:
    """The share of a run's time box spent, read once per step (`tick`); no box: always 0."""

    def __init__(self, minutes: float, ranks: Ranks) -> None:
        if minutes < 0:
            raise ConfigError(f"--max-minutes is a duration, 0 (no limit) or more; got {minutes}")
        self.seconds = minutes * 60.0
        self.ranks = ranks
        self.started = time.monotonic()
        self.share = 0.0

    def tick(self) -> None:
        if not self.seconds:
            return
        elapsed = torch.tensor([time.monotonic() - self.started], dtype=torch.float64)
        if self.ranks.distributed:
            dist.broadcast(elapsed, src=0)  # rank 0's clock for everyone
        self.share = float(elapsed.item()) / self.seconds

    @property
    def expired(self) -> bool:
        return self.share >= 1.0


def cosine_schedule(optim: torch.optim.Optimizer, total_steps: int, box: TimeBox) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero, over the steps or the time box, whichever is
    further along."""
    warmup = max(1, total_steps // WARMUP_PARTS)

    def factor(step: int) -> float:
        done = min(1.0, max(step / total_steps, box.share))
        rise = min(1.0, max((step + 1) / warmup, box.share * WARMUP_PARTS))
        return rise * 0.5 * (1 + math.cos(math.pi * done))

    return torch.optim.lr_scheduler.LambdaLR(optim, factor)
