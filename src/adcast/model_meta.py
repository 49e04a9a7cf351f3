"""What adcast adds to a Hugging Face checkpoint directory: `adcast.json`.

    {"format": 1, "prompt_format_version": 1, "model_version": "demo-3f2a9c1d",
     "advertisers": [{"advertiser_id": "a0017", "token": "<adv_a0017>", "token_id": 812}, ...],
     "trained": {...}}

The advertiser list maps ids to the added tokens; its order is the engines' output order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    def save(self, model_dir: str | Path) -> None:
        doc = {
            "format": 1,
            "prompt_format_version": self.prompt_format_version,
            "model_version": self.model_version,
            "advertisers": [
                {"advertiser_id": a, "token": t, "token_id": i}
                for a, t, i in zip(self.advertiser_ids, self.tokens, self.token_ids, strict=True)
            ],
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
        return cls(
            doc["model_version"],
            tuple(a["advertiser_id"] for a in advs),
            tuple(a["token"] for a in advs),
            tuple(int(a["token_id"]) for a in advs),
            doc["prompt_format_version"],
            doc.get("trained", {}),
        )
