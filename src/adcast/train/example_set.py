"""Example shards (adcast.train.shards) as the trainer reads them: one pass over the shards turns
each example into a few integers and three ragged integer arrays (its token ids, the advertisers
its prompt names with their copy slots, the user's own advertisers), written to files and
memory-mapped. Training then holds no prompts and no Python objects per example: the operating
system pages in the rows each micro-batch uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adcast.core.copy import is_shown_slot
from adcast.train.copy_score import named_slots
from adcast.train.shards import Manifest
from adcast.train.validation import held_user

KINDS = ("repeat", "return", "new")


class Ragged:
    """Variable-length int32 rows: one flat memory-mapped file and the offsets of each row."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        self.flat, self.offsets = flat, offsets

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1


class _RaggedWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("wb")
        self.offsets = [0]

    def add(self, values: Sequence[int]) -> None:
        np.asarray(values, dtype=np.int32).tofile(self.file)
        self.offsets.append(self.offsets[-1] + len(values))

    def close(self) -> Ragged:
        self.file.close()
        size = self.offsets[-1]
        flat = np.memmap(self.path, dtype=np.int32, mode="r", shape=(size,)) if size else np.zeros(0, np.int32)
        return Ragged(flat, np.asarray(self.offsets, dtype=np.int64))


@dataclass
class ExampleSet:
    """Per example: token ids, target index, kind, whether its user is held out, whether the
    target is one of the user's own advertisers, the prompt's named advertisers and their copy
    slots, and the user's own advertisers (advertiser indices)."""

    manifest: Manifest
    tokens: Ragged
    named: Ragged
    slots: Ragged
    own: Ragged
    targets: np.ndarray
    kinds: np.ndarray
    held: np.ndarray
    in_own: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def shown(self, i: int) -> list[int]:
        """The advertisers of the ads example `i`'s prompt shows (read from its copy slots)."""
        named, slots = self.named[i].tolist(), self.slots[i].tolist()
        return [a for a, slot in zip(named, slots, strict=True) if is_shown_slot(slot)]

    @property
    def lengths(self) -> list[int]:
        return np.diff(self.tokens.offsets).tolist()  # type: ignore[no-any-return]


def prompts(folder: Path, manifest: Manifest) -> Iterator[str]:
    """Every example's prompt, shard by shard (one shard's prompts in memory at a time)."""
    import pyarrow.parquet as pq

    for name in manifest.shards:
        yield from pq.read_table(folder / name, columns=["prompt"]).column("prompt").to_pylist()


def encode(
    folder: Path,
    manifest: Manifest,
    tokenize: Callable[[list[str]], list[list[int]]],
    max_positions: int,
    token_index: dict[str, int],
    validation: float,
    seed: int,
    work: Path,
) -> ExampleSet:
    """Read the shards once into an ExampleSet whose arrays live in files under `work`."""
    import pyarrow.parquet as pq

    work.mkdir(parents=True, exist_ok=True)
    target_index = {a["advertiser_id"]: i for i, a in enumerate(manifest.advertisers)}
    writers = {name: _RaggedWriter(work / f"{name}.int32") for name in ("tokens", "named", "slots", "own")}
    targets: list[int] = []
    kinds: list[int] = []
    held: list[bool] = []
    in_own: list[bool] = []
    held_cache: dict[str, bool] = {}
    for name in manifest.shards:
        table: dict[str, list[Any]] = pq.read_table(folder / name).to_pydict()
        for ids, prompt in zip(tokenize(table["prompt"]), table["prompt"], strict=True):
            writers["tokens"].add(ids[-max_positions:])
            advertisers, slots = named_slots(prompt, token_index)
            writers["named"].add(advertisers)
            writers["slots"].add(slots)
        for user, target, kind, own in zip(table["user_id"], table["target"], table["kind"], table["own"], strict=True):
            targets.append(target_index[target])
            kinds.append(KINDS.index(kind))
            if user not in held_cache:
                held_cache = {user: held_user(user, validation, seed)}  # examples come user by user
            held.append(held_cache[user])
            in_own.append(target in own)
            writers["own"].add([target_index[a] for a in own if a in target_index])
    closed = {name: w.close() for name, w in writers.items()}
    return ExampleSet(
        manifest,
        closed["tokens"],
        closed["named"],
        closed["slots"],
        closed["own"],
        np.asarray(targets, dtype=np.int32),
        np.asarray(kinds, dtype=np.int8),
        np.asarray(held, dtype=bool),
        np.asarray(in_own, dtype=bool),
    )
