"""The history page's pure parts: the user_id parameter, the answer, and its size bound."""

from __future__ import annotations

import json

import pytest
from multidict import MultiDict

from adcast.core.events import Event
from adcast.core.history import HistoryLimits, UserHistory, fold_event
from adcast.core.prompt import render
from adcast.core.requests import PredictionRequest
from adcast.core.triggers import TriggerPolicy
from adcast.errors import BadRequest

pytest.importorskip("faust", reason="the stream tier's module needs the stream extra")
from stream.history_page import MAX_ANSWER_BYTES, answer, encode, user_of  # noqa: E402

NOW = 1_700_000_000_000
LIMITS = HistoryLimits()


def query(*pairs: tuple[str, str]) -> MultiDict[str]:
    return MultiDict(pairs)


def history(*events: Event) -> UserHistory:
    h = UserHistory(user_id="u1", partition=0)
    for offset, e in enumerate(events):
        TriggerPolicy().note(h, fold_event(h, e, offset, LIMITS), e.event_time)
    return h


def test_exactly_one_user_id_within_the_ingest_limits() -> None:
    assert user_of(query(("user_id", "u1"), ("other", "x"))) == "u1"
    for q, code in [
        (query(), "missing_user_id"),
        (query(("user_id", "a"), ("user_id", "b")), "too_many_users"),
        (query(("user_id", " ")), "empty_user_id"),
        (query(("user_id", "u" * 129)), "oversized_user_id"),
    ]:
        with pytest.raises(BadRequest) as caught:
            user_of(q)
        assert caught.value.code == code


def test_the_answer_holds_the_history_and_the_requests_prompt() -> None:
    h = history(
        Event("e0", "u1", NOW, "impression", "a7", category="bags"),
        Event("e1", "u1", NOW + 1, "click", "a1", category="shoes", brand="<b>"),
    )
    page = answer(h, LIMITS, due_at=NOW + 500, served_by="http://w:6066")
    assert page["version"] == 1 and page["events"][-1]["brand"] == "<b>"
    assert page["shown"] == [{"advertiser_id": "a7", "category": "bags", "after": False}]  # shown before the click
    assert page["own"] == ["a1"] and page["pending"]["pending"] and page["pending"]["due_at"] == NOW + 500
    assert page["prompt"] == render(PredictionRequest.from_history(h, "quiet", NOW, LIMITS))
    assert json.loads(encode(page)) == page


def test_an_answer_past_the_bound_is_cut_and_says_so() -> None:
    # Within the event contract (128-character fields), yet past the page's bound: control
    # characters take 6 bytes each in JSON.
    odd = "\x01" * 128
    h = history(*(Event(f"e{i}", "u1", NOW + i, "click", odd, category=odd, brand=odd) for i in range(24)))
    body = encode(answer(h, LIMITS, None, "http://w:6066"))
    assert len(body) <= MAX_ANSWER_BYTES
    page = json.loads(body)
    assert page["truncated"] is True and len(page["events"]) == 24
    assert page["events"][0]["brand"] == odd[:16]
