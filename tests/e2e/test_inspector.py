"""The inspector in a real Chromium, on real parts: the broker, Redis, both tiers as subprocesses
(the stream worker serving its history page, each worker its metrics), a real tiny model, and
`adcast serve` with a token. A small world is replayed, then one more event whose brand is markup;
the page must show what Redis, the advertisers topic and the inference tier hold, as text."""

from __future__ import annotations

import asyncio
import itertools
import time
from urllib.parse import quote

import pytest
from browser import chromium, needs_browser, save_screenshot, serving
from kafka_reading import read_from_start
from produce import produce

from adcast.config import override, to_env
from adcast.core.affinities import Affinities
from adcast.core.prompt import advertiser_token, render
from adcast.core.requests import PredictionRequest
from adcast.data.files import read_records, write_records
from adcast.kafka import create_topics
from adcast.kafka.advertiser_names import read_advertiser_names
from adcast.local.demo import wait_for_versions
from adcast.local.services import free_port
from adcast.local.workers import start_worker
from adcast.replay import expected_versions, replay
from adcast.store import AffinityClient, AsyncAffinityStore, SlotAdmin
from adcast.wire import serde

pytestmark = [pytest.mark.e2e, pytest.mark.browser, needs_browser]
pytest.importorskip("torch")
TOKEN = "e2e-inspector-token"
SCRIPT = "<img src=x onerror=alert(1)>"


def markup_event(user: str, advertiser: str) -> bytes:
    record = {"event_id": "inspect-xss", "user_id": user, "event_time": int(time.time() * 1000), "event_type": "click"}
    record |= {"advertiser_id": advertiser, "item_id": None, "category": "shoes", "brand": SCRIPT, "text": SCRIPT}
    return serde.encode(serde.EVENT, record)


def shown_event(user: str, advertiser: str) -> bytes:
    record = {"event_id": "inspect-shown", "user_id": user, "event_time": int(time.time() * 1000)}
    record |= {"event_type": "impression", "advertiser_id": advertiser, "item_id": None, "category": "bags"}
    return serde.encode(serde.EVENT, record | {"brand": None, "text": None})


def page_marks_the_ad_shown_now(base: str, user: str, advertiser: str) -> None:
    """The ad shown after the user's newest event is marked as the prompt marks it."""
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{base}/ui?token={TOKEN}&user_id={quote(user)}")
        loaded(page)
        page.wait_for_selector("ul.chips li.now")
        marked = page.locator("ul.chips li.now").all_text_contents()
        assert len(marked) == 1 and advertiser in marked[0] and marked[0].endswith(" · bags · now"), marked


def scored_request(settings, user: str, version: int) -> PredictionRequest:
    """The request the inference tier read for the user's version, from the requests topic."""

    def found(messages) -> list[PredictionRequest]:
        requests = (PredictionRequest.from_record(serde.decode(serde.REQUEST, m.value())) for m in messages)
        return [r for r in requests if r.user_id == user and r.version == version]

    messages = read_from_start(settings.kafka.bootstrap_servers, settings.topics.name("requests"), found)
    (request, *_) = found(messages)
    return request


def write_candidate(settings, live: Affinities) -> list[str]:
    """A second slot's record for the user (its top-K reordered, one advertiser new), named the
    candidate; returns its advertisers in order."""
    top = [*reversed(live.top[1:]), ("a-new-one", 0.01)]
    record = Affinities(live.user_id, live.version, "shadow-m2", live.computed_at, live.newest_event_time, tuple(top))

    async def go():
        store = AsyncAffinityStore(settings.redis, "gb")
        try:
            assert await store.write_many([record]) == [True]
        finally:
            await store.close()

    asyncio.run(go())
    with SlotAdmin(settings.redis) as admin:
        admin.set_candidate("gb")
    return [a for a, _ in top]


@pytest.mark.timeout(300)
def test_the_inspector_shows_a_users_prediction_history_and_prompt_and_the_fleet(
    settings, broker, redis_url, tiny_model, small_world, tmp_path
):
    users = sorted({p["user_id"] for p in read_records(small_world, "profiles")})[:20]
    data = tmp_path / "data"
    write_records(data, "events", (e for e in read_records(small_world, "events") if e["user_id"] in users))
    write_records(data, "profiles", (p for p in read_records(small_world, "profiles") if p["user_id"] in users))
    write_records(data, "advertisers", read_records(small_world, "advertisers"))
    metrics = {"stream": free_port(), "infer": free_port()}
    web = free_port()
    settings = override(
        settings,
        infer={"model_dir": str(tiny_model)},
        stream={"web_port": web, "web_host": "127.0.0.1", "web_bind": "127.0.0.1"},
        serve={
            "token": TOKEN,
            "history_url": f"http://127.0.0.1:{web}",
            "worker_metrics_urls": ",".join(f"http://127.0.0.1:{p}/metrics" for p in metrics.values()),
        },
    )
    create_topics(settings)
    env = to_env(settings)
    workers = [
        start_worker(tier, {**env, "ADCAST_METRICS_PORT": str(port)}, tmp_path / f"{tier}.log")
        for tier, port in metrics.items()
    ]
    try:
        for w in workers:
            w.wait_ready()
        summary = replay(settings, data, live=True, collect=True, progress=False)
        expected = expected_versions(summary.delivered)
        user = users[0]
        advertiser, shown = (r["advertiser_id"] for r in itertools.islice(read_records(data, "advertisers"), 2))
        # A click, then an ad shown after it: the page the user browses now.
        events = [(user, markup_event(user, advertiser)), (user, shown_event(user, shown))]
        (_, (_, version)) = produce(settings, events)
        expected[user] = version
        with AffinityClient(settings.redis) as client:
            done = wait_for_versions(client, expected, timeout_s=120)
        assert len(done) == len(expected), "\n".join(w.tail() for w in workers)
        live = done[user]
        candidate = write_candidate(settings, live)
        names = read_advertiser_names(settings)
        prompt = render(scored_request(settings, user, version))
        assert f" now {advertiser_token(shown)} " in prompt
        with serving(settings, tmp_path / "serve.log") as (base, _):
            check_the_page(base, user, live, candidate, names, prompt, tmp_path)
            page_marks_the_ad_shown_now(base, user, shown)
        for w in workers:
            assert w.proc.poll() is None, w.tail()
    finally:
        for w in workers:
            w.stop()


def check_the_page(base, user, live, candidate, names, prompt, tmp_path) -> None:
    dialogs: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        # Without the token: 401, and no data, for the page and for its data calls.
        response = page.goto(f"{base}/ui?user_id={quote(user)}")
        assert response is not None and response.status == 401
        assert page.locator("#columns").count() == 0 and names[live.top[0][0]].name not in page.content()
        assert page.request.get(f"{base}/ui/api/user?user_id={quote(user)}").status == 401

        page.goto(f"{base}/ui?token={TOKEN}&user_id={quote(user)}")
        loaded(page)
        wait_for_names(page, base, user)

        # The live column: the user's top-K in Redis, named through the advertisers topic.
        served = page.locator(".column.base")
        assert served.locator(".slot").text_content() == "g0"
        assert served.locator("tbody .adv-name").all_text_contents() == [names[a].name for a, _ in live.top]
        assert served.locator("tbody .adv-id").all_text_contents() == [f"({a})" for a, _ in live.top]
        # Two slots side by side, what differs marked.
        assert page.locator(".column").count() == 2
        other = page.locator(".column:not(.base)")
        assert other.locator(".slot").text_content() == "gb" and other.locator(".role").text_content() == "candidate"
        assert other.locator("tbody .adv-id").all_text_contents()[:-1] == [f"({a})" for a in candidate[:-1]]
        assert other.locator("tr.row-new .adv-id").all_text_contents() == ["a-new-one"]
        # The history's newest event is the one just produced, its markup shown as text.
        newest = page.locator("#events li").last
        assert newest.locator(".type").text_content() == "click"
        labels, values = (newest.locator(f".fact {part}").all_text_contents() for part in (".label", ".value"))
        facts = dict(zip(labels, values, strict=True))
        assert facts["brand"] == SCRIPT and facts["category"] == "shoes"
        assert newest.locator(".text").text_content() == "img src x onerror alert 1"  # the words the history keeps
        assert page.locator("main img").count() == 0
        # The prompt exactly as the inference tier rendered it for this version.
        assert page.locator("#prompt").text_content() == prompt
        save_screenshot(page, tmp_path, "inspector-user.png")

        page.click("#tab-fleet")
        page.wait_for_selector("#fleet-body .figure")
        fleet = page.locator("#fleet-body").inner_text()
        assert "LLM calls per event" in fleet and "Unreachable workers" not in fleet
        freshness = page.locator(".card-freshness tbody tr")  # one row per slot
        assert freshness.first.locator("td").first.text_content() == "g0"
        save_screenshot(page, tmp_path, "inspector-fleet.png")
    assert dialogs == []


def loaded(page) -> None:
    """Wait for the user view, and its history, to show (or say why not)."""
    page.wait_for_selector("#user-body:not([hidden]), #user-status.error")
    assert page.locator("#events li").count(), page.locator("main").inner_text()


def wait_for_names(page, base: str, user: str) -> None:
    """Reload until serve has read the advertisers topic (it does so after it starts)."""
    deadline = time.monotonic() + 20
    while page.locator("#user-summary .warn").count():
        assert time.monotonic() < deadline, page.locator("#user-summary .warn").text_content()
        page.wait_for_timeout(300)
        page.goto(f"{base}/ui?user_id={quote(user)}")
        loaded(page)
