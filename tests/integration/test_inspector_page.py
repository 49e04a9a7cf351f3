"""The inspector of `adcast serve` (a subprocess) on the real broker and Redis, no tiers running:
its token (header, the page's query, the cookie), its headers, what its data calls answer when a
source is missing, and, in a real Chromium, that text from outside shows as text and never runs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

import pytest
from browser import chromium, needs_browser, save_screenshot, serving
from store_helpers import write

from adcast.config import override
from adcast.core.affinities import Affinities
from adcast.inspector.routes import COOKIE, CSP
from adcast.kafka import confluent_config, create_topics
from adcast.local.services import free_port
from adcast.wire import serde

pytestmark = pytest.mark.integration
TOKEN = "inspector-t0ken"
SCRIPT = "<img src=x onerror=alert(1)>"
USER = 'u"><script>alert(3)</script>'  # ids come from outside too


def produce_advertisers(settings, records: dict[str, tuple[str, str | None]]) -> None:
    from confluent_kafka import Producer

    producer = Producer(confluent_config(settings))
    for key, (name, category) in records.items():
        value = serde.encode(serde.ADVERTISER, {"advertiser_id": key, "name": name, "category": category})
        producer.produce(settings.topics.name("advertisers"), key=key.encode(), value=value)
    assert producer.flush(10) == 0


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """Status, headers and body (JSON decoded when it is JSON) of a GET."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            status, h, body = r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        status, h, body = exc.code, exc.headers, exc.read()
    return status, h, json.loads(body) if h.get_content_type() == "application/json" else body.decode()


def user_view(url: str, headers: dict[str, str]) -> tuple[int, Any, Any]:
    """The user view once serve has read the advertiser names (it reads them after it starts)."""
    deadline = time.monotonic() + 20
    while True:
        status, h, body = get(url, headers)
        if status != 200 or body["names_error"] is None:
            return status, h, body
        assert time.monotonic() < deadline, body["names_error"]
        time.sleep(0.2)


@pytest.fixture
def inspected(settings, broker, redis_url, tmp_path):
    """serve with a token, names on the topic, a user's record in Redis, no stream tier (its page's
    port is closed), no worker metrics."""
    settings = override(settings, serve={"token": TOKEN, "history_url": f"http://127.0.0.1:{free_port()}"})
    create_topics(settings)
    produce_advertisers(settings, {"a1": (SCRIPT, "<b>bold</b>"), "a2": ("Velora", "shoes")})
    now = int(time.time() * 1000)
    write(settings, [Affinities(USER, 5, "m1", now - 1000, now - 3000, (("a1", 0.6), ("a2", 0.3), ("a3", 0.1)))])
    with serving(settings, tmp_path / "serve.log") as (base, serve):
        yield settings, base, serve


def test_the_token_guards_the_page_and_its_data_and_the_cookie_opens_only_the_inspector(inspected):
    settings, base, serve = inspected
    user = f"{base}/ui/api/user?user_id={quote(USER)}"
    for url in (f"{base}/ui", f"{base}/ui?token=wrong", user, f"{base}/ui/api/fleet", f"{base}/ui/inspector.js"):
        status, headers, body = get(url)
        assert (status, body["error"]["code"]) == (401, "unauthorized"), url
        assert headers["WWW-Authenticate"] == "Bearer" and "a1" not in json.dumps(body)
    assert get(f"{base}/ui/api/user?user_id=u1&token={TOKEN}")[0] == 401  # the query opens the page only

    status, headers, page = get(f"{base}/ui?token={TOKEN}")
    assert status == 200 and headers.get_content_type() == "text/html"
    assert headers["Content-Security-Policy"] == CSP and "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and TOKEN not in cookie
    assert {"HttpOnly", "Path=/ui", "SameSite=Strict"} <= {part.strip() for part in cookie.split(";")}
    assert "<script" not in page.replace('<script src="ui/inspector.js" defer></script>', "")  # no inline script
    session = {"Cookie": cookie.split(";")[0]}

    status, headers, body = user_view(user, session)
    assert status == 200 and headers["Content-Security-Policy"] == CSP
    (column,) = body["columns"]
    assert (column["slot"], column["role"], column["base"]) == ("g0", "live", True)
    assert [r["advertiser_id"] for r in column["record"]["top"]] == ["a1", "a2", "a3"]
    assert body["names"] == {
        "a1": {"name": SCRIPT, "category": "<b>bold</b>"},
        "a2": {"name": "Velora", "category": "shoes"},
    }
    assert body["history"] is None and body["history_error"].startswith("cannot reach the stream tier's page")
    for asset, kind in (("inspector.js", "text/javascript"), ("inspector.css", "text/css")):
        status, headers, _ = get(f"{base}/ui/{asset}", session)
        assert (status, headers.get_content_type(), headers["X-Content-Type-Options"]) == (200, kind, "nosniff")
    # The cookie is the inspector's: the lookups still need the bearer token.
    assert get(f"{base}/v1/affinities?user_id=u1", session)[0] == 401
    assert get(user, {"Authorization": f"Bearer {TOKEN}"})[0] == 200

    status, _, fleet = get(f"{base}/ui/api/fleet", session)
    assert status == 200 and fleet["workers"] is None and fleet["figures"] is None  # no worker metrics URLs set
    assert fleet["pointer"]["live"] is None and fleet["pointer"]["writers"] == []  # no inference worker ran
    lag = {(r["tier"], r["topic"]): r for r in fleet["lag"]}
    assert lag[("infer", settings.topics.name("requests"))]["lag"] == 0  # read from Kafka, nothing on it
    assert "unexpected_error" not in serve.log_text()


@pytest.mark.browser
@needs_browser
def test_text_from_outside_shows_as_text_and_nothing_runs(inspected, tmp_path):
    _, base, _ = inspected
    user_view(f"{base}/ui/api/user?user_id=u1", {"Authorization": f"Bearer {TOKEN}"})  # names read
    dialogs: list[str] = []
    csp_errors: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)

        response = page.goto(f"{base}/ui?user_id={quote(USER)}")
        assert response is not None and response.status == 401
        assert "Velora" not in page.content() and page.locator("#columns").count() == 0

        page.goto(f"{base}/ui?token={TOKEN}&user_id={quote(USER)}")
        page.wait_for_selector(".column table.top")
        assert "token" not in page.url  # dropped from the address once the cookie is set
        names = page.locator(".column tbody .adv-name").all_text_contents()
        assert names == [SCRIPT, "Velora"]  # a3 has no name: its id stands in
        assert page.locator(".column tbody .adv-id").all_text_contents() == ["(a1)", "(a2)", "a3"]
        assert page.locator(".column tbody td.cat").all_text_contents() == ["<b>bold</b>", "shoes", "–"]
        assert page.locator("#user-summary .user").text_content() == USER
        assert page.locator("main img, main b, main script").count() == 0
        assert page.locator("#history .unavailable").text_content().startswith("history unavailable: cannot reach")
        save_screenshot(page, tmp_path, "inspector-no-history.png")

        page.click("#tab-fleet")
        page.wait_for_selector("#fleet-body .card")
        assert "no worker metrics: set serve.worker_metrics_urls" in page.locator("#fleet-body").inner_text()
        page.wait_for_timeout(300)
    assert dialogs == [] and csp_errors == []
