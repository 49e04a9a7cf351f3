"""The resumable state of a training run, written atomically and refused when the data or the
settings changed."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from adcast.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"


class Checkpoints:
    """The resumable state of a run: weights, optimizer, schedule, position and losses so far.
    Written atomically (temp file, then rename); refused when the data or config changed."""

    def __init__(self, folder: Path, identity: dict[str, Any]) -> None:
        self.folder = folder
        self.identity = identity

    @property
    def path(self) -> Path:
        return self.folder / "state.pt"

    def save(self, model: Any, optim: Any, sched: Any, epoch: int, step: int, losses: list[float]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(
            {
                "identity": self.identity,
                "model": model.state_dict(),
                "optim": optim.state_dict(),
                "sched": sched.state_dict(),
                "epoch": epoch,
                "step": step,
                "losses": losses,
            },
            tmp,
        )
        tmp.replace(self.path)

    def load(self, model: Any, optim: Any, sched: Any) -> tuple[int, int, list[float]] | None:
        if not self.path.is_file():
            log.warning("no checkpoint in %s: starting from the beginning", self.folder)
            return None
        state = torch.load(self.path, weights_only=True)  # tensors and plain values only: no code runs on load
        if state["identity"] != self.identity:
            raise ConfigError(
                f"the checkpoint in {self.folder} was made with other data or settings; "
                "remove it or train into another --out"
            )
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        return state["epoch"], state["step"], list(state["losses"])

    def clear(self) -> None:
        """Remove the run's resumable state: the checkpoint folder and everything in it (best.pt,
        the example shards built from a data directory, the encoded examples)."""
        shutil.rmtree(self.folder, ignore_errors=True)
