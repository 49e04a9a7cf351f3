"""The one prompt renderer, shared by training, evaluation and the inference tier.

Layout (format version 1), chosen for prefix-cache reuse: the profile first, then events oldest
to newest, then a fixed suffix; the history drops old events in chunks, so between two
predictions of a user the prompt usually only grows at the end.

    profile age=25-34 gender=f city=tier2 ; click <adv_a17> cat=shoes brand=runfast ;
    search red running shoes ; view cat=bags ; next

Each advertiser is one added token `<adv_ID>` in the model's vocabulary; the model's answer is
the distribution of the next token over those tokens only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from adcast.core.history import HistoryEvent
from adcast.core.text import text_words

PROMPT_FORMAT_VERSION = 1
_UNSAFE = re.compile(r"[\s<>;=]+")


def advertiser_token(advertiser_id: str) -> str:
    return f"<adv_{_UNSAFE.sub('_', advertiser_id)}>"


def _value(value: str) -> str:
    return _UNSAFE.sub("_", value.strip().lower())


def render_event(e: HistoryEvent) -> str:
    parts = [e.event_type]
    if e.advertiser_id:
        parts.append(advertiser_token(e.advertiser_id))
    if e.category:
        parts.append(f"cat={_value(e.category)}")
    if e.brand:
        parts.append(f"brand={_value(e.brand)}")
    if e.text:
        parts.extend(text_words(e.text))
    return " ".join(parts)


def render_prompt(profile: Mapping[str, str], events: Iterable[HistoryEvent]) -> str:
    head = " ".join(["profile", *(f"{_value(k)}={_value(v)}" for k, v in sorted(profile.items()))])
    return " ; ".join([head, *(render_event(e) for e in events), "next"])
