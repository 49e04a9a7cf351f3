"""A held-out validation slice scored after each epoch: the best epoch's weights are the ones
saved, and training stops once `patience` epochs in a row have not improved on it.

The slice is a share of the users (all of a user's examples, so the validation measures users the
model has not trained on), chosen by a hash of the user id and the seed: the same for every rank
and every resumed run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

BEST_FILE = "best.pt"


def held_user(user_id: str, share: float, seed: int) -> bool:
    """Whether a user's examples form part of the validation slice (about `share` of users)."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}:{user_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") < int(share * 2**32)


class BestEpoch:
    """The validation losses so far, the best epoch and its weights (kept on the CPU)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.losses: list[float] = []
        self.best_epoch = -1
        self.state: dict[str, torch.Tensor] | None = None

    @property
    def best_loss(self) -> float:
        return self.losses[self.best_epoch] if self.best_epoch >= 0 else float("inf")

    def record(self, loss: float, module: torch.nn.Module) -> None:
        """The loss of the epoch just trained, and its weights when they are the best yet."""
        if loss < self.best_loss:
            self.best_epoch = len(self.losses)
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        self.losses.append(loss)

    def should_stop(self) -> bool:
        return self.patience > 0 and len(self.losses) - 1 - self.best_epoch >= self.patience

    def save(self, folder: Path) -> None:
        """Beside the resumable checkpoint, so that a resumed run keeps the best epoch too."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (BEST_FILE + ".tmp")
        torch.save({"losses": self.losses, "best_epoch": self.best_epoch, "state": self.state}, tmp)
        tmp.replace(folder / BEST_FILE)

    def load(self, folder: Path) -> None:
        path = folder / BEST_FILE
        if path.is_file():
            saved: dict[str, Any] = torch.load(path, weights_only=True)
            self.losses, self.best_epoch, self.state = list(saved["losses"]), saved["best_epoch"], saved["state"]
