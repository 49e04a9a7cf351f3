"""The one prompt renderer, shared by training, evaluation and the inference tier.

Layout (format version 4), chosen for prefix-cache reuse: the profile first, then events oldest to
newest; then the ads shown to the user (the newest impressions, see `adcast.core.history.shown_ads`:
what the ad system shows carries the user's current context), those shown since the user's newest
event after the word `now` (the page they browse at the moment of the prediction, not the one they
acted on); then the user's own advertisers ranked by their decayed counters (the long memory the
bounded event list lacks). Both change with every version and so come last, before the fixed suffix.
The history drops old events in chunks, so between two predictions of a user the prompt usually only
changes after the previous last event.

    profile age=25-34 gender=f city=tier2 ; click <adv_a17> cat=shoes brand=runfast ;
    search red running shoes ; view cat=bags ; shown <adv_a17> cat=shoes now <adv_a40> cat=bags ;
    own <adv_a17> <adv_a03> ; next

Each advertiser is one added token `<adv_ID>` in the model's vocabulary; the model's answer is
the distribution of the next token over those tokens only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from adcast.core.history import HistoryEvent, ShownAd
from adcast.core.text import text_words

PROMPT_FORMAT_VERSION = 4
NOW = "now"  # marks the shown ads that came after the user's newest event
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


class Snapshot(Protocol):
    """What a prompt is rendered from: a prediction request, or a training/evaluation example."""

    @property
    def profile(self) -> Mapping[str, str]: ...

    @property
    def events(self) -> Sequence[HistoryEvent]: ...

    @property
    def own(self) -> Sequence[str]: ...

    @property
    def shown(self) -> Sequence[ShownAd]: ...


def render(snapshot: Snapshot) -> str:
    return render_prompt(snapshot.profile, snapshot.events, snapshot.own, snapshot.shown)


def _render_shown(shown: Sequence[ShownAd]) -> str:
    parts = ["shown"]
    after = False
    for ad in shown:
        if ad.after and not after:
            parts.append(NOW)
            after = True
        parts.append(advertiser_token(ad.advertiser_id))
        if ad.category:
            parts.append(f"cat={_value(ad.category)}")
    return " ".join(parts)


def render_prompt(
    profile: Mapping[str, str],
    events: Iterable[HistoryEvent],
    own: Sequence[str] = (),
    shown: Sequence[ShownAd] = (),
) -> str:
    head = " ".join(["profile", *(f"{_value(k)}={_value(v)}" for k, v in sorted(profile.items()))])
    tail = [_render_shown(shown)] if shown else []
    if own:
        tail.append(" ".join(["own", *(advertiser_token(a) for a in own)]))
    return " ; ".join([head, *(render_event(e) for e in events), *tail, "next"])
