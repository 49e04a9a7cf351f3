"""GET /v1/history?user_id=U: the history the stream tier holds for one user, and its prompt.

Read-only, for the inspector. Faust's web server serves it on `stream.web_port`, and
`table_route` forwards each request to the worker whose partition holds the user (every worker's
address, `stream.web_host`:`web_port`, travels with the consumer group's assignment), so any
worker answers for any user, from the table where the state lives, never from a copy. The table
is written through at the end of every batch, so it holds what the decoded-history cache holds,
less only the batch in flight.

The prompt is rendered as the inference tier renders a request (`PredictionRequest.from_history`,
then `adcast.core.prompt.render`): the prompt of the next request, and of the last one sent unless
the profile changed since.

200: the answer (`answer`). 400 `missing_user_id`, `too_many_users`, `empty_user_id`,
`oversized_user_id`; 404 `unknown_user`; 502 `owner_unreachable`; 503 `state_moving` while
partitions move; errors are `{"error": {"code": ..., "message": ...}}`. Answers stay under
MAX_ANSWER_BYTES (`encode`).
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import aiohttp
import faust
from faust import web
from faust.web.exceptions import ServiceUnavailable

from adcast.core.events import one_user_id
from adcast.core.history import HistoryLimits, UserHistory
from adcast.core.prompt import PROMPT_FORMAT_VERSION, render
from adcast.core.requests import PredictionRequest
from adcast.errors import BadRequest
from stream.processor import StreamProcessor, decode_history
from stream.transport import Producer

log = logging.getLogger(__name__)

PATH = "/v1/history"
# A history is bounded, but its bounds allow about 200 KB of JSON (24 events of 128-character
# fields of characters JSON escapes to 6 bytes): past this, `encode` cuts every string.
MAX_ANSWER_BYTES = 64 * 1024
CUT_CHARS = 16
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def user_of(query: Any) -> str:
    """The one user id of the query string (the ids' rules of ingest), or BadRequest."""
    return one_user_id(query.getall("user_id", []), f"{PATH}?user_id=U")


def answer(history: UserHistory, limits: HistoryLimits, due_at: int | None, served_by: str) -> dict[str, Any]:
    """The page's JSON for one history. `due_at`: when the worker next checks the user's trigger
    (wall-clock ms; None when nothing is pending); `served_by`: the worker's URL."""
    request = PredictionRequest.from_history(history, "inspect", 0, limits)
    return {
        "user_id": history.user_id,
        "served_by": served_by,
        "version": history.version,
        "partition": history.partition,
        "newest_event_time": history.newest_event_time,
        "profile": history.profile,
        "events": [e.to_record() for e in history.events],  # oldest first
        "shown": [ad._asdict() for ad in request.shown],
        "impressions": [i._asdict() for i in history.impressions],
        "counters": [
            {"advertiser_id": c.advertiser_id, "weight": c.weight, "updated_at": c.updated_at} for c in history.counters
        ],
        "own": list(request.own),
        "pending": {
            "pending": history.pending,
            "since": history.pending_since,
            "last_event_at": history.last_event_at,
            "high_value": history.pending_high_value,
            "due_at": due_at,
            "last_emit_at": history.last_emit_at,
            "emitted_version": history.emitted_version,
        },
        "prompt": render(request),
        "prompt_format": PROMPT_FORMAT_VERSION,
        "truncated": False,
    }


def _cut(value: Any) -> Any:
    if isinstance(value, str):
        return value[:CUT_CHARS]
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v) for v in value]
    return value


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def encode(page: dict[str, Any]) -> bytes:
    """`page` as JSON; past MAX_ANSWER_BYTES, with every string (the prompt too) cut to CUT_CHARS
    characters and `truncated` true. Still past it (a history far beyond its bounds): ValueError."""
    body = _json(page)
    if len(body) > MAX_ANSWER_BYTES:
        body = _json({**_cut(page), "truncated": True})
        if len(body) > MAX_ANSWER_BYTES:
            raise ValueError(f"history page of {page['user_id']!r}: {len(body)} bytes cut, limit {MAX_ANSWER_BYTES}")
    return body


def _error(view: web.View, status: int, code: str, message: str) -> web.Response:
    return view.json({"error": {"code": code, "message": message}}, status=status, headers=dict(_HEADERS))


def add_history_page(app: faust.App, table: Any, processor: StreamProcessor, limits: HistoryLimits) -> None:
    """Serve PATH from `app`'s web server, from `table` (bytes user id -> encoded history)."""
    changelog = table.changelog_topic.get_topic_name()

    @app.page(PATH, name="history")
    class History(web.View):
        async def get(self, request: web.Request) -> web.Response:
            try:
                user_id = user_of(request.query)
            except BadRequest as exc:
                return _error(self, 400, exc.code, exc.message)
            if app.rebalancing or app.in_recovery:
                return _error(self, 503, "state_moving", "partitions are moving between workers; retry in seconds")
            try:
                # Faust's routing places the key with the producer's partitioner: it needs the changelog's partitions.
                await cast(Producer, app.producer).partitions_known(changelog)
                return await self.owner(request)
            except ServiceUnavailable:
                return _error(self, 503, "state_moving", "no worker holds the user's partition now; retry in seconds")
            except aiohttp.ClientError as exc:
                log.warning("history page: the worker holding user=%r did not answer: %s", user_id, exc)
                return _error(self, 502, "owner_unreachable", "the worker holding the user did not answer; retry")
            except Exception:
                log.exception("history page failed user=%r", user_id)
                return _error(self, 500, "internal_error", "the history page failed; see the stream worker's log")

        @app.table_route(table=table, query_param="user_id")
        async def owner(self: web.View, request: web.Request) -> web.Response:
            """Runs on the worker that holds the user (Faust forwards the request there)."""
            user_id = request.query["user_id"]  # the one `get` checked
            raw = table.get(user_id.encode())
            if raw is None:
                return _error(self, 404, "unknown_user", f"the stream tier holds no history for user {user_id!r}")
            history = decode_history(raw)
            due_at = processor.pending.get(history.partition, {}).get(user_id)
            body = encode(answer(history, limits, due_at, str(app.conf.canonical_url)))
            return self.text(body.decode(), content_type="application/json", headers=dict(_HEADERS))
