import pytest

from adcast.core.events import MAX_TEXT_CHARS, validate_event
from adcast.errors import InvalidEvent

NOW = 1_767_225_600_000
BASE = {
    "event_id": "e1",
    "user_id": "u1",
    "event_time": NOW,
    "event_type": "click",
    "advertiser_id": "a1",
    "item_id": None,
    "category": None,
    "brand": None,
    "text": None,
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_type": "like"}, "unknown_event_type"),
        ({"event_time": 100}, "event_time_too_old"),
        ({"event_time": NOW + 2 * 86_400_000}, "event_time_in_future"),
        ({"user_id": ""}, "empty_user_id"),
        ({"user_id": "   "}, "empty_user_id"),
        ({"user_id": "u" * 129}, "oversized_user_id"),
        ({"event_id": ""}, "empty_event_id"),
        ({"advertiser_id": "a" * 500}, "oversized_advertiser_id"),
    ],
)
def test_contract_violations_carry_a_reason(change, reason):
    with pytest.raises(InvalidEvent) as err:
        validate_event({**BASE, **change}, NOW)
    assert err.value.reason == reason


def test_oversized_text_is_truncated_not_rejected():
    event = validate_event({**BASE, "text": "x" * 10_000}, NOW)
    assert event.text is not None and len(event.text) == MAX_TEXT_CHARS


def test_valid_event_keeps_its_fields():
    event = validate_event(BASE, NOW)
    assert event.to_record() == BASE
