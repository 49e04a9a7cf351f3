"""Engagement events: the contract's types and the validation every event passes first."""

from __future__ import annotations

from typing import Any, NamedTuple

from adcast.errors import BadRequest, InvalidEvent

IMPRESSION = "impression"
VIEW = "view"
CLICK = "click"
SAVE = "save"
ADD_TO_CART = "add_to_cart"
CHECKOUT = "checkout"
SEARCH = "search"

EVENT_TYPES = (IMPRESSION, VIEW, CLICK, SAVE, ADD_TO_CART, CHECKOUT, SEARCH)
# Engagements are what the predictor forecasts (the training targets).
ENGAGEMENTS = frozenset({CLICK, SAVE, ADD_TO_CART, CHECKOUT})

# Input limits (documented in README, "Event contract").
MAX_ID_CHARS = 128
MAX_FIELD_CHARS = 128
MAX_TEXT_CHARS = 256  # longer text is truncated, not rejected: the rest of the event is useful
MIN_EVENT_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
# Events stamped more than this ahead of the worker's clock are rejected: producers stamp events on
# NTP-synced servers, and a few minutes absorbs skew and batching; a wrong clock accepted would
# read as freshness 0 and hold the user's newest event time in the future.
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000


class Event(NamedTuple):
    """A validated engagement event. A named tuple, not a frozen dataclass: the stream tier builds
    one per consumed event, and a frozen dataclass costs several times more to build."""

    event_id: str
    user_id: str
    event_time: int
    event_type: str
    advertiser_id: str | None = None
    item_id: str | None = None
    category: str | None = None
    brand: str | None = None
    text: str | None = None

    def to_record(self) -> dict[str, Any]:
        return self._asdict()


def check_id(name: str, value: Any) -> str:
    """`value` as an id (events' and profiles' alike), or InvalidEvent: empty_<name>, oversized_<name>."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"empty_{name}", f"{name} is missing or blank")
    if len(value) > MAX_ID_CHARS:
        raise InvalidEvent(f"oversized_{name}", f"{name} has {len(value)} chars, limit {MAX_ID_CHARS}")
    return value


def one_user_id(given: list[str], usage: str) -> str:
    """The one user id of a request that shows one user (ingest's id rules), or BadRequest with
    its reason code; `usage` says how to ask."""
    if len(given) != 1:
        code = "missing_user_id" if not given else "too_many_users"
        raise BadRequest(code, f"{len(given)} user_id parameters; give exactly one: {usage}")
    try:
        return check_id("user_id", given[0])
    except InvalidEvent as exc:
        raise BadRequest(exc.reason, exc.detail) from exc


def _check_field(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent("bad_field", f"{name} must be a string or null")
    if len(value) > MAX_FIELD_CHARS:
        raise InvalidEvent(f"oversized_{name}", f"{name} has {len(value)} chars, limit {MAX_FIELD_CHARS}")
    return value or None


def validate_event(record: dict[str, Any], now_ms: int) -> Event:
    """Check a decoded record against the contract; raise InvalidEvent with a DLQ reason."""
    event_type = record.get("event_type")
    if event_type not in EVENT_TYPES:
        raise InvalidEvent("unknown_event_type", f"event_type {event_type!r} is not one of {EVENT_TYPES}")
    event_time = record.get("event_time")
    if not isinstance(event_time, int) or isinstance(event_time, bool):
        raise InvalidEvent("bad_event_time", "event_time must be epoch milliseconds")
    if event_time < MIN_EVENT_TIME_MS:
        raise InvalidEvent("event_time_too_old", f"event_time {event_time} is before 2000-01-01")
    if event_time > now_ms + MAX_CLOCK_SKEW_MS:
        raise InvalidEvent(
            "event_time_in_future",
            f"event_time {event_time} is {(event_time - now_ms) / 1000:.0f}s ahead of this worker's clock "
            f"(at most {MAX_CLOCK_SKEW_MS // 1000}s allowed)",
        )
    text = record.get("text")
    if text is not None:
        if not isinstance(text, str):
            raise InvalidEvent("bad_field", "text must be a string or null")
        text = text[:MAX_TEXT_CHARS] or None
    return Event(
        event_id=check_id("event_id", record.get("event_id")),
        user_id=check_id("user_id", record.get("user_id")),
        event_time=event_time,
        event_type=event_type,
        advertiser_id=_check_field("advertiser_id", record.get("advertiser_id")),
        item_id=_check_field("item_id", record.get("item_id")),
        category=_check_field("category", record.get("category")),
        brand=_check_field("brand", record.get("brand")),
        text=text,
    )
