"""Copy scores: a learned bonus for the advertisers a prompt names, by where it names them.

A small model trained on which advertiser comes next learns each advertiser's rows by heart and
copies from the history only as well as those rows allow: on repeats and returns it trails
`recent`, which copies exactly. The copy score makes copying a first-class part of the answer:
each advertiser named in the prompt gets, on top of the model's logit, one learned weight per place
it is named in, summed:

- `own` rank r (0 = strongest), for r < OWN_SLOTS;
- `shown` position p, newest first, for p < SHOWN_SLOTS (an ad shown twice gets both), with a
  weight of its own for the ads shown after the user's newest event (after `now`);
- the newest event's advertiser (the repeat: a save or checkout after a click).

The places are read from the rendered prompt, so training and both engines compute the same
bonus from the same text with no other input: the prompt stays the one contract between them.
The weights are trained with the model and shipped in `adcast.json` (`copy_weights`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from adcast.core.prompt import NOW

OWN_SLOTS = 16
SHOWN_SLOTS = 8
SHOWN_NOW_SLOTS = OWN_SLOTS + SHOWN_SLOTS  # the first of the slots of ads shown after `now`
LAST_EVENT_SLOT = SHOWN_NOW_SLOTS + SHOWN_SLOTS
COPY_SLOTS = LAST_EVENT_SLOT + 1


def is_shown_slot(slot: int) -> bool:
    """Whether a slot is one of an ad shown (before or after `now`)."""
    return OWN_SLOTS <= slot < LAST_EVENT_SLOT


_SEPARATOR = " ; "  # the renderer replaces ';' inside every value, so this only separates parts
_TOKEN = re.compile(r"<adv_[^>\s]*>")


def copy_slots(prompt: str) -> list[tuple[str, int]]:
    """(advertiser token, slot) for every place the prompt names an advertiser that carries a
    copy weight (adcast.core.prompt's layout: profile ; events ; [shown] ; [own] ; next)."""
    parts = prompt.split(_SEPARATOR)
    slots: list[tuple[str, int]] = []
    last_event = len(parts) - 2  # the part before `next`, unless it is `own` or `shown`
    for at in (len(parts) - 2, len(parts) - 3):
        if at < 1:
            break
        part = parts[at]
        if part.startswith("own "):
            slots += [(t, r) for r, t in enumerate(_TOKEN.findall(part)[:OWN_SLOTS])]
        elif part.startswith("shown "):
            slots += _shown_slots(part)
        else:
            break
        last_event = at - 1
    if last_event >= 1:
        found = _TOKEN.search(parts[last_event])
        if found:
            slots.append((found.group(), LAST_EVENT_SLOT))
    return slots


def _shown_slots(part: str) -> list[tuple[str, int]]:
    """The shown part's tokens by position, newest first; those after `now` in their own slots."""
    before, _, after = part.partition(f" {NOW} ")  # the part holds tokens and cat=..., so `now` is the mark
    placed = [(t, OWN_SLOTS) for t in _TOKEN.findall(before)]
    placed += [(t, SHOWN_NOW_SLOTS) for t in _TOKEN.findall(after)]
    return [(t, first + p) for p, (t, first) in enumerate(placed[::-1][:SHOWN_SLOTS])]


def copy_bias(prompt: str, weights: Sequence[float], index: dict[str, int]) -> dict[int, float]:
    """The bonus per advertiser (by its position in `index`, token -> position) for this prompt;
    advertisers the model does not know get none."""
    if not weights:
        return {}
    bias: dict[int, float] = {}
    for token, slot in copy_slots(prompt):
        i = index.get(token)
        if i is not None:
            bias[i] = bias.get(i, 0.0) + weights[slot]
    return bias
