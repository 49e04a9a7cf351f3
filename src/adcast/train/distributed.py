"""Data-parallel training on PyTorch's own engine: `torchrun --nproc-per-node N -m adcast.cli train …`.

torchrun starts one process per device and sets RANK, WORLD_SIZE and LOCAL_RANK; each process
joins the group (NCCL on GPUs, gloo on CPUs), and DistributedDataParallel averages the gradients
of every optimizer step across them. Every rank draws the same batches (the order depends on the
seed and the epoch only) and computes its own share of each step's micro-batches, so N ranks take
the optimizer steps one process would take with the same global batch. Rank 0 writes the
checkpoints and the model; a resumed run reads them on every rank.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from adcast.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def join(device: str) -> tuple[Ranks, str]:
    """This process's place in the run and the device it trains on; joins the process group when
    torchrun started more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if torch.cuda.device_count() <= local:
            raise ConfigError(f"local rank {local} has no GPU ({torch.cuda.device_count()} visible)")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), local), device


def leave(ranks: Ranks) -> None:
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()


def sum_over_ranks(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The sum of `value` over the ranks."""
    if ranks.distributed:
        value = value.clone()
        dist.all_reduce(value)
    return value


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def check_same_weights(module: torch.nn.Module, ranks: Ranks) -> None:
    """Every rank must end with the same weights (DDP keeps them so); say so loudly if not."""
    if not ranks.distributed:
        return
    digest = hashlib.sha256()
    for tensor in module.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    mine = digest.hexdigest()
    every: list[str | None] = [None] * ranks.world
    dist.all_gather_object(every, mine)
    if len(set(every)) != 1:
        raise RuntimeError(f"ranks ended training with different weights: {every}")
