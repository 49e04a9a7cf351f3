"""The inspector's routes on `adcast serve`:

  GET /ui                     the page (HTML); /ui/inspector.js and /ui/inspector.css beside it
  GET /ui/api/user?user_id=U  the user view as JSON (`&slots=g1,g2`: those slots' columns)
  GET /ui/api/fleet           the fleet view as JSON

With `serve.token` set, every one of them needs the token: `Authorization: Bearer TOKEN` as the
lookups take it, or the inspector's cookie. A browser cannot send a header when it navigates, so
`/ui?token=TOKEN` answers the page and sets the cookie (HttpOnly, SameSite=Strict, Path=/ui; its
value is derived from the token, not the token itself, so it opens the inspector and nothing
else); the page then drops the token from its address. Without it: 401 and no data. Every answer
carries a Content-Security-Policy that allows no inline script and no other origin.

Errors are serve's JSON errors; an unreachable Redis is serve's 503 (its middleware).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from adcast.config import Settings
from adcast.core.clock import now_ms
from adcast.core.events import one_user_id
from adcast.core.slots import check_slot
from adcast.errors import BadRequest, ConfigError
from adcast.inspector import views
from adcast.inspector.sources import FleetSampler, LagReader, NamesFeed, fetch_history, read_pointer
from adcast.store import AsyncAffinityClient
from adcast.store.slots import WRITER_GONE_S

PAGE = "/ui"
API_USER = "/ui/api/user"
API_FLEET = "/ui/api/fleet"
ASSETS = {"/ui/inspector.js": ("inspector.js", "text/javascript"), "/ui/inspector.css": ("inspector.css", "text/css")}
PATHS = (PAGE, *ASSETS, API_USER, API_FLEET)
COOKIE = "adcast_inspector"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass
class Inspector:
    settings: Settings
    client: web.AppKey[AsyncAffinityClient]
    names: NamesFeed
    fleet: FleetSampler
    lag: LagReader
    files: dict[str, bytes] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None


INSPECTOR = web.AppKey("inspector", Inspector)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def session_cookie(token: str) -> str:
    """The cookie's value: derived from the token, so the cookie is no bearer token for the lookups."""
    return hmac.new(token.encode(), b"adcast inspector session", hashlib.sha256).hexdigest()


def _error(status: int, code: str, message: str) -> web.Response:
    """serve's error shape, with the inspector's headers."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=HEADERS)


def access(request: web.Request, token: str | None, page: bool) -> tuple[bool, bool]:
    """(allowed, by the query's token): a bearer header or the cookie; on the page, `?token=` too."""
    if token is None:
        return True, False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True, False
    cookie = request.cookies.get(COOKIE, "")
    if cookie and hmac.compare_digest(cookie.encode(), session_cookie(token).encode()):
        return True, False
    query = request.query.get("token", "")
    if page and query and hmac.compare_digest(query.encode(), token.encode()):
        return True, True
    return False, False


def guarded(handler: Handler, page: bool = False) -> Handler:
    """The token's check and the inspector's headers around a handler."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        secret = request.app[INSPECTOR].settings.serve.token
        token = None if secret is None else secret.get_secret_value()
        allowed, by_query = access(request, token, page)
        if not allowed:
            hint = "the inspector needs the token: open /ui?token=TOKEN, or send Authorization: Bearer TOKEN"
            refused = _error(401, "unauthorized", hint)
            refused.headers["WWW-Authenticate"] = "Bearer"
            return refused
        response = await handler(request)
        response.headers.update(HEADERS)
        if by_query and token is not None:
            response.set_cookie(
                COOKIE, session_cookie(token), path=PAGE, httponly=True, samesite="Strict", secure=request.secure
            )
        return response

    return wrapped


def _static(name: str) -> bytes:
    return resources.files("adcast.inspector").joinpath("static").joinpath(name).read_bytes()


async def page(request: web.Request) -> web.Response:
    return web.Response(body=request.app[INSPECTOR].files["index.html"], content_type="text/html", charset="utf-8")


def asset(name: str, content_type: str) -> Handler:
    async def serve_asset(request: web.Request) -> web.Response:
        return web.Response(body=request.app[INSPECTOR].files[name], content_type=content_type, charset="utf-8")

    return serve_asset


def query_of(query: Any) -> tuple[str, list[str]]:
    """The one user id (ingest's id rules) and the slots asked for, or BadRequest."""
    user_id = one_user_id(query.getall("user_id", []), f"{API_USER}?user_id=U")
    try:
        slots = [check_slot(s) for s in query.get("slots", "").split(",") if s]
    except ConfigError as exc:
        raise BadRequest("invalid_slot", str(exc)) from exc
    return user_id, slots


async def user(request: web.Request) -> web.Response:
    state = request.app[INSPECTOR]
    try:
        user_id, asked = query_of(request.query)
    except BadRequest as exc:
        return _error(400, exc.code, exc.message)
    client = request.app[state.client]
    now = now_ms()
    pointer = await read_pointer(client)
    running = [s for s, t in pointer.writers.items() if now - t < WRITER_GONE_S * 1000]
    shown = views.slots_to_show(pointer, asked, running)
    by_slot = await client.get_many_slots([user_id], [s for s, _ in shown])
    found = {slot: users[user_id] for slot, users in by_slot.items()}
    assert state.session is not None
    history, history_error = await fetch_history(state.session, state.settings.serve.history_url, user_id)
    body = views.user_view(
        user_id,
        pointer,
        views.columns(shown, found, now),
        history,
        history_error,
        state.names.names,
        state.names.error,
        now,
    )
    return web.json_response(body)


async def fleet(request: web.Request) -> web.Response:
    state = request.app[INSPECTOR]
    now = now_ms()
    pointer = await read_pointer(request.app[state.client])
    body: dict[str, Any] = {"now": now, "pointer": views.pointer_view(pointer, now, WRITER_GONE_S)}
    if state.fleet.urls:
        assert state.session is not None
        await state.fleet.sample(state.session)
        window, seconds = state.fleet.window()
        body["workers"] = {
            "urls": state.fleet.urls,
            "read": sorted(state.fleet.snapshots[-1][1]),
            "errors": [{"url": u, "error": e} for u, e in sorted(state.fleet.errors.items())],
            "window_seconds": seconds,
            "window_limit_seconds": state.fleet.window_s,
        }
        body["figures"] = views.fleet_figures(window)
    else:
        body["workers"] = None  # the page says to set serve.worker_metrics_urls
        body["figures"] = None
    body["lag"] = await state.lag.read()
    return web.json_response(body)


def add_inspector(app: web.Application, settings: Settings, client: web.AppKey[AsyncAffinityClient]) -> None:
    """Register the inspector's routes on serve's app; `client` is the app's Redis reader."""
    files = {name: _static(name) for name in ("index.html", *(n for n, _ in ASSETS.values()))}
    fleet_sampler = FleetSampler(settings.serve.metrics_urls())
    app[INSPECTOR] = Inspector(settings, client, NamesFeed(settings), fleet_sampler, LagReader(settings), files)
    app.cleanup_ctx.append(_running)
    app.router.add_get(PAGE, guarded(page, page=True))
    for path, (name, content_type) in ASSETS.items():
        app.router.add_get(path, guarded(asset(name, content_type)))
    app.router.add_get(API_USER, guarded(user))
    app.router.add_get(API_FLEET, guarded(fleet))


async def _running(app: web.Application) -> AsyncIterator[None]:
    state = app[INSPECTOR]
    state.session = aiohttp.ClientSession()  # on the serving loop
    state.names.start()
    sampling = asyncio.create_task(state.fleet.run(state.session)) if state.fleet.urls else None
    yield
    state.names.stop()
    if sampling is not None:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
    await state.session.close()
