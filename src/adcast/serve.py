"""`adcast serve`: the HTTP lookup service for callers that don't speak Redis (aiohttp).

  GET /v1/affinities?user_id=u1&user_id=u2   up to `serve.max_users` ids per request; a user
                                             without a prediction is null, not an error. From
                                             the live slot; `&slot=g43` reads that slot, and
                                             `&slots=g42,g43` several, in one Redis round trip
  GET /healthz                               200 while Redis answers PING, else 503
  GET /metrics                               Prometheus text
  GET /openapi.json                          the OpenAPI 3 description of these endpoints
  GET /ui                                    the inspector, a page for people (adcast.inspector.routes)

Errors are JSON, `{"error": {"code": "...", "message": "..."}}`: 400 for a bad request (codes
missing_user_id, empty_user_id, oversized_user_id, too_many_users), 401 without the bearer token
`serve.token` asks for (lookups, metrics, the inspector; /healthz and /openapi.json stay open),
404/405 for a wrong path or method, 503 while Redis is unreachable. 5xx bodies are generic: the
detail (Redis's address, the exception) goes to the service log only. Works on Redis Cluster like
the client it uses (adcast.store.AsyncAffinityClient). No access log (one line per lookup costs more than the
lookup); the metrics count requests by endpoint and status.
"""

from __future__ import annotations

import gc
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adcast import metrics
from adcast.config import Settings
from adcast.core.clock import now_ms
from adcast.core.events import MAX_ID_CHARS
from adcast.core.slots import SLOT_NAME
from adcast.errors import AdcastError, BadRequest, StoreUnavailable
from adcast.inspector.routes import PATHS as INSPECTOR_PATHS
from adcast.inspector.routes import add_inspector
from adcast.store import AsyncAffinityClient, StoredAffinities

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
CLIENT = web.AppKey("client", AsyncAffinityClient)
ENDPOINTS = ("/v1/affinities", "/healthz", "/metrics", "/openapi.json", *INSPECTOR_PATHS)
PROTECTED = frozenset({"/v1/affinities", "/metrics"})  # with serve.token set (the inspector checks its own)
SLOT_NAME_RE = re.compile(SLOT_NAME)
_JSON = msgspec.json.Encoder()  # the lookup answers: ~10x faster than json.dumps, aiohttp's default
# Worst case: every character 4 bytes of UTF-8, each percent-encoded as 3.
_QUERY_BYTES_PER_USER = len("user_id=&") + 12 * MAX_ID_CHARS


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def user_ids_of(query: Any, max_users: int) -> list[str]:
    """The request's user ids, validated (same id limits as ingest, adcast.core.events)."""
    users: list[str] = query.getall("user_id", [])
    if not users:
        raise BadRequest("missing_user_id", "give at least one user id: /v1/affinities?user_id=u1&user_id=u2")
    if len(users) > max_users:
        raise BadRequest(
            "too_many_users", f"{len(users)} user ids in one request, limit {max_users}; split the request"
        )
    for u in users:
        if not u.strip():
            raise BadRequest("empty_user_id", "a user_id parameter is empty or blank")
        if len(u) > MAX_ID_CHARS:
            raise BadRequest(
                "oversized_user_id", f"user id {u[:32]!r}... has {len(u)} characters, limit {MAX_ID_CHARS}"
            )
    return list(dict.fromkeys(users))


def slots_of(query: Any) -> tuple[str | None, list[str]]:
    """The `slot` (one slot instead of the live one) and `slots` (several at once) parameters."""
    slot = query.get("slot")
    slots = [s for s in query.get("slots", "").split(",") if s]
    if slot is not None and slots:
        raise BadRequest("invalid_slot", "give either slot or slots, not both")
    for name in [*slots, *([slot] if slot is not None else [])]:
        if not SLOT_NAME_RE.fullmatch(name):
            raise BadRequest("invalid_slot", f"slot {name[:40]!r} is not 1-32 of [A-Za-z0-9_.-]")
    return slot, slots


def _users(found: dict[str, StoredAffinities | None], now_ms: float) -> dict[str, Any]:
    hits = sum(1 for a in found.values() if a is not None)
    metrics.LOOKUP_USERS.labels("found").inc(hits)
    metrics.LOOKUP_USERS.labels("missing").inc(len(found) - hits)
    return {u: None if a is None else record(a, now_ms) for u, a in found.items()}


def record(a: StoredAffinities, now_ms: float) -> dict[str, Any]:
    return {
        "version": a.version,
        "model_version": a.model_version,
        "computed_at": a.computed_at,
        "newest_event_time": a.newest_event_time,
        "age_seconds": round(a.age_seconds(now_ms), 3),
        "top": [[adv, p] for adv, p in a.top],
    }


async def affinities(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        users = user_ids_of(request.query, request.app[SETTINGS].serve.max_users)
        slot, slots = slots_of(request.query)
    except BadRequest as exc:
        return _error(400, exc.code, exc.message)
    client = request.app[CLIENT]
    now = now_ms()
    body: dict[str, Any]
    if slots:
        by_slot = await client.get_many_slots(users, slots)
        body = {"slots": {s: _users(found, now) for s, found in by_slot.items()}}
    else:
        body = {"users": _users(await client.get_many(users, slot), now)}
    response = web.Response(body=_JSON.encode(body), content_type="application/json")
    metrics.LOOKUP_SECONDS.observe(time.perf_counter() - started)
    return response


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[CLIENT].ping()
    except AdcastError as exc:
        log.warning("health check failed: %s", exc)
        return web.json_response(
            {"status": "unavailable", "error": "Redis does not answer; see the service log"}, status=503
        )
    return web.json_response({"status": "ok"})


async def prometheus_metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi(request.app[SETTINGS]))


@web.middleware
async def errors_and_metrics(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """JSON for every error, and a request count by endpoint and status."""
    endpoint = request.path if request.path in ENDPOINTS else "other"
    token = request.app[SETTINGS].serve.token
    response: web.StreamResponse
    try:
        if token is not None and request.path in PROTECTED and not _authorized(request, token.get_secret_value()):
            response = _error(401, "unauthorized", "this service needs `Authorization: Bearer <token>` (serve.token)")
            response.headers["WWW-Authenticate"] = "Bearer"
        else:
            response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        hint = f"the endpoints are {', '.join(ENDPOINTS)} (GET)"
        response = _error(exc.status, code, f"{request.method} {request.path}: {exc.reason}; {hint}")
    except StoreUnavailable as exc:
        log.warning("lookup failed, redis unavailable: %s", exc)
        response = _error(503, "store_unavailable", "Redis is unavailable; see the service log")
    except Exception:
        log.exception("lookup failed path=%s", request.path)
        response = _error(500, "internal_error", "the lookup failed; see the service log")
    metrics.LOOKUP_REQUESTS.labels(endpoint, str(response.status)).inc()
    return response


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


# function-length: declarative (one literal document; tools/function_length.py)
def openapi(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3 description, with this deployment's limits."""
    error = {"$ref": "#/components/schemas/Error"}

    def json_content(schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    return {
        "openapi": "3.0.3",
        "info": {
            "title": "adcast lookup",
            "version": "1",
            "description": "Each user's predicted next advertisers, read from the Redis online store.",
        },
        "paths": {
            "/v1/affinities": {
                "get": {
                    "summary": "Affinities of one or more users",
                    "operationId": "getAffinities",
                    "parameters": [
                        {
                            "name": "user_id",
                            "in": "query",
                            "required": True,
                            "style": "form",
                            "explode": True,
                            "description": "Repeat for each user; duplicates are answered once.",
                            "schema": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": settings.serve.max_users,
                                "items": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
                            },
                        },
                        {
                            "name": "slot",
                            "in": "query",
                            "required": False,
                            "description": "Read this model slot instead of the live one.",
                            "schema": {"type": "string", "pattern": SLOT_NAME},
                        },
                        {
                            "name": "slots",
                            "in": "query",
                            "required": False,
                            "description": "Comma-separated slots, all read in one round trip; the answer is "
                            'then {"slots": {slot: {user: ...}}}.',
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Every requested user; null for a user without a prediction.",
                            "content": json_content({"$ref": "#/components/schemas/Lookup"}),
                        },
                        "400": {
                            "description": "missing_user_id, empty_user_id, oversized_user_id, too_many_users or "
                            "invalid_slot.",
                            "content": json_content(error),
                        },
                        "503": {"description": "Redis is unreachable.", "content": json_content(error)},
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and Redis reachability (PING)",
                    "operationId": "health",
                    "responses": {
                        "200": {"description": "Redis answers.", "content": json_content({"type": "object"})},
                        "503": {"description": "Redis does not answer.", "content": json_content({"type": "object"})},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "responses": {"200": {"description": "Prometheus text format.", "content": {"text/plain": {}}}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {"200": {"description": "OpenAPI 3.", "content": json_content({"type": "object"})}},
                }
            },
        },
        "components": {
            "schemas": {
                "Lookup": {
                    "type": "object",
                    "properties": {
                        "users": {
                            "type": "object",
                            "additionalProperties": {"$ref": "#/components/schemas/Affinities"},
                        },
                        "slots": {
                            "type": "object",
                            "description": "With `slots`: slot -> user -> affinities.",
                            "additionalProperties": {
                                "type": "object",
                                "additionalProperties": {"$ref": "#/components/schemas/Affinities"},
                            },
                        },
                    },
                },
                "Affinities": {
                    "type": "object",
                    "nullable": True,
                    "required": ["version", "model_version", "computed_at", "newest_event_time", "age_seconds", "top"],
                    "properties": {
                        "version": {"type": "integer", "description": "Input offset of the newest scored event."},
                        "model_version": {"type": "string"},
                        "computed_at": {"type": "integer", "description": "When it was scored, epoch ms."},
                        "newest_event_time": {"type": "integer", "description": "Newest scored event, epoch ms."},
                        "age_seconds": {"type": "number", "description": "Seconds since computed_at."},
                        "top": {
                            "type": "array",
                            "description": "[advertiser_id, probability] pairs, most likely first; "
                            "probabilities are over all advertisers, so they sum to at most 1.",
                            "items": {
                                "type": "array",
                                "minItems": 2,
                                "maxItems": 2,
                                "items": {"oneOf": [{"type": "string"}, {"type": "number"}]},
                            },
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                },
            }
        },
    }


async def _client(app: web.Application) -> AsyncIterator[None]:
    # Created on the serving loop: redis.asyncio connections belong to one event loop.
    app[CLIENT] = AsyncAffinityClient(app[SETTINGS].redis)
    yield
    await app[CLIENT].close()


async def _freeze_startup_heap(app: web.Application) -> None:
    # Everything loaded so far lives as long as the process: keep garbage collections (which
    # otherwise walk it all now and then, a latency spike) to the objects requests create.
    gc.freeze()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors_and_metrics])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_client)
    app.on_startup.append(_freeze_startup_heap)
    app.router.add_get("/v1/affinities", affinities)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_get("/openapi.json", openapi_json)
    add_inspector(app, settings, CLIENT)
    return app


def handler_args(settings: Settings) -> dict[str, Any]:
    """Server options: a request line long enough for `max_users` ids (aiohttp's default is 8 KiB)."""
    return {"max_line_size": max(8190, settings.serve.max_users * _QUERY_BYTES_PER_USER + 1024)}


def run(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    host = host or settings.serve.host
    port = settings.serve.port if port is None else port
    log.info("lookup service on http://%s:%s (GET /v1/affinities, /healthz, /metrics, /openapi.json)", host, port)
    log.info("inspector on http://%s:%s/ui", host, port)
    web.run_app(
        create_app(settings), host=host, port=port, access_log=None, print=None, handler_args=handler_args(settings)
    )
