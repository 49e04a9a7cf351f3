"""Free text (search queries, item titles) as the history keeps it and the prompt shows it."""

from __future__ import annotations

import re

MAX_TEXT_WORDS = 12
_WORD = re.compile(r"\w+", re.UNICODE)


def text_words(text: str) -> list[str]:
    """Lower-case words, at most MAX_TEXT_WORDS: all the prompt ever shows of a text."""
    return _WORD.findall(text.lower())[:MAX_TEXT_WORDS]
