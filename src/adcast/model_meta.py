"""What adcast adds to a Hugging Face checkpoint directory: `adcast.json`.

    {"format": 1, "prompt_format_version": 1, "model_version": "demo-3f2a9c1d",
     "advertisers": [{"advertiser_id": "a0017", "token": "<adv_a0017>", "token_id": 812}, ...],
     "copy_weights": [0.9, 0.4, ...], "trained": {...}}

The advertiser list maps ids to the added tokens; its order is the engines' output order.
`copy_weights` are the copy score's weights (adcast.core.copy), one per slot; a model without them
(random-weight benchmark models) is scored by its logits alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from adcast.core.copy import COPY_SLOTS, copy_bias
from adcast.core.prompt import PROMPT_FORMAT_VERSION
from adcast.errors import ModelError

META_FILE = "adcast.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def has_tokenizer(model_dir: str | Path) -> bool:
    """Random-weight benchmark models carry no tokenizer; they are scored from token ids."""
    return any(Path(model_dir, f).is_file() for f in TOKENIZER_FILES)


@dataclass(frozen=True)
class ModelMeta:
    model_version: str
    advertiser_ids: tuple[str, ...]
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    prompt_format_version: int = PROMPT_FORMAT_VERSION
    trained: dict[str, Any] = field(default_factory=dict)
    copy_weights: tuple[float, ...] = ()

    def copy_bias(self, prompt: str) -> dict[int, float]:
        """The copy score's bonus per advertiser (position in `advertiser_ids`) for this prompt."""
        if not self.copy_weights:
            return {}
        return copy_bias(prompt, self.copy_weights, self._token_index)

    @cached_property
    def _token_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def save(self, model_dir: str | Path) -> None:
        doc = {
            "format": 1,
            "prompt_format_version": self.prompt_format_version,
            "model_version": self.model_version,
            "advertisers": [
                {"advertiser_id": a, "token": t, "token_id": i}
                for a, t, i in zip(self.advertiser_ids, self.tokens, self.token_ids, strict=True)
            ],
            "copy_weights": list(self.copy_weights),
            "trained": self.trained,
        }
        Path(model_dir, META_FILE).write_text(json.dumps(doc, indent=1))

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelMeta:
        path = Path(model_dir, META_FILE)
        if not path.is_file():
            raise ModelError(
                f"{model_dir} is not an adcast model (no {META_FILE}); train one with "
                "`adcast train --data DIR --out MODEL`"
            )
        doc = json.loads(path.read_text())
        if doc.get("prompt_format_version") != PROMPT_FORMAT_VERSION:
            raise ModelError(
                f"{model_dir} was trained for prompt format {doc.get('prompt_format_version')}, "
                f"this adcast renders format {PROMPT_FORMAT_VERSION}: retrain it"
            )
        advs = doc["advertisers"]
        weights = doc.get("copy_weights") or []
        if weights and len(weights) != COPY_SLOTS:
            raise ModelError(f"{path} has {len(weights)} copy weights, this adcast reads {COPY_SLOTS}: retrain it")
        return cls(
            doc["model_version"],
            tuple(a["advertiser_id"] for a in advs),
            tuple(a["token"] for a in advs),
            tuple(int(a["token_id"]) for a in advs),
            doc["prompt_format_version"],
            doc.get("trained", {}),
            tuple(float(w) for w in doc.get("copy_weights", ())),
        )
