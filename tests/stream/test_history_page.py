"""The history page (stream/history_page.py) of stream workers as an operator runs them, on the
real broker: what it answers for a user, the errors, and the forwarding between two workers."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from kafka_reading import read_from_start
from produce import produce

from adcast.config import Settings, override, to_env
from adcast.core.prompt import render
from adcast.core.requests import PredictionRequest
from adcast.kafka import create_topics
from adcast.local.services import free_port
from adcast.local.workers import WorkerProcess, start_worker
from adcast.wire import serde

pytestmark = pytest.mark.integration
NOW = int(time.time() * 1000)
SCRIPT = "<img src=x onerror=alert(1)>"


def event(n: int, user: str, kind: str, **extra: Any) -> bytes:
    record = {"event_id": f"e{n}", "user_id": user, "event_time": NOW + n, "event_type": kind}
    record |= {"advertiser_id": "a1", "item_id": None, "category": "shoes", "brand": None, "text": None}
    return serde.encode(serde.EVENT, record | extra)


def get(port: int, query: str, method: str = "GET") -> tuple[int, str, Any]:
    """Status, content type and decoded JSON of one request to the page."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/history?{query}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, exc.headers["Content-Type"], json.loads(body) if body.startswith(b"{") else body


def page_once_emitted(port: int, user: str, version: int, worker: WorkerProcess) -> dict[str, Any]:
    """The user's page once it shows `version` emitted (the table is written just after the request is sent)."""
    deadline = time.monotonic() + 30
    while True:
        status, _, page = get(port, f"user_id={user}")
        if status == 200 and page["version"] == page["pending"]["emitted_version"] == version:
            return page
        assert time.monotonic() < deadline, f"last answer {status} {page}\n{worker.tail()}"
        time.sleep(0.2)


def served(settings: Settings, port: int) -> Settings:
    return override(settings, stream={"web_port": port, "web_host": "127.0.0.1", "web_bind": "127.0.0.1"})


def newest_requests(settings: Settings, expected: dict[str, int]) -> dict[str, PredictionRequest]:
    """The requests the stream tier emitted, the newest per user, once each user's reached `expected`."""

    def newest(messages: list[Any]) -> dict[str, PredictionRequest]:
        out: dict[str, PredictionRequest] = {}
        for m in messages:
            r = PredictionRequest.from_record(serde.decode(serde.REQUEST, m.value()))
            if r.version >= out.get(r.user_id, r).version:
                out[r.user_id] = r
        return out

    def done(messages: list[Any]) -> bool:
        got = newest(messages)
        return all(u in got and got[u].version == v for u, v in expected.items())

    return newest(read_from_start(settings.kafka.bootstrap_servers, settings.topics.name("requests"), done))


def test_the_page_shows_a_users_history_and_the_prompt_the_engines_see(settings, broker, tmp_path):
    port = free_port()
    settings = served(settings, port)
    create_topics(settings)
    worker = start_worker("stream", to_env(settings), tmp_path / "stream.log")
    try:
        worker.wait_ready()
        user = "inspect-1"
        values = [
            (user, event(0, user, "search", text=SCRIPT, advertiser_id=None, category=None)),
            (user, event(1, user, "impression", advertiser_id="a7", category="bags")),
            (user, event(2, user, "view", brand=SCRIPT)),
            (user, event(3, user, "impression", advertiser_id="a9", category=SCRIPT)),
        ]
        delivered = produce(settings, values)
        version = delivered[3][1]  # the input offset of the newest change: the last ad shown
        request = newest_requests(settings, {user: version})[user]
        page = page_once_emitted(port, user, version, worker)

        assert page["user_id"] == user and page["served_by"] == f"http://127.0.0.1:{port}"
        assert [e["event_type"] for e in page["events"]] == ["search", "view"]  # oldest first
        newest = page["events"][-1]
        assert (newest["event_time"], newest["brand"], newest["category"]) == (NOW + 2, SCRIPT, "shoes")
        assert page["events"][0]["text"] == "img src x onerror alert 1"  # the words the history keeps of a text
        assert page["shown"] == [  # a9 was shown after the user's newest event (the view)
            {"advertiser_id": "a7", "category": "bags", "after": False},
            {"advertiser_id": "a9", "category": SCRIPT, "after": True},
        ]
        assert [i["advertiser_id"] for i in page["impressions"]] == ["a7", "a9"]
        assert page["impressions"][1]["category"] == SCRIPT
        assert [c["advertiser_id"] for c in page["counters"]] == page["own"] == ["a1"]
        assert page["pending"]["pending"] is False and page["pending"]["due_at"] is None
        assert page["prompt"] == render(request)  # as the inference tier renders the request it reads
        assert "<adv_a7> cat=bags now <adv_a9>" in page["prompt"] and not page["truncated"]

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/history?user_id={user}", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("application/json")
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert f'"brand":"{SCRIPT}"' in response.read().decode()  # a plain JSON string, as held

        status, content_type, body = get(port, "user_id=nobody")
        assert (status, body["error"]["code"]) == (404, "unknown_user")
        assert content_type.startswith("application/json")
        for query, code in [
            ("user_id=a&user_id=b", "too_many_users"),
            ("", "missing_user_id"),
            ("user_id=%20", "empty_user_id"),
            ("user_id=" + "u" * 129, "oversized_user_id"),
        ]:
            status, _, body = get(port, query)
            assert (status, body["error"]["code"]) == (400, code), query
        assert get(port, f"user_id={user}", method="POST")[0] == 405
        assert worker.proc.poll() is None, worker.tail()
    finally:
        assert worker.stop() in (0, -15), worker.tail()


@pytest.mark.timeout(240)
def test_either_worker_answers_for_every_user_from_the_worker_that_holds_it(settings, broker, tmp_path):
    """Two workers, a partition each: a request to either is answered by the owner of the user's
    partition (Faust's table_route forwards it), never from the other's standby copy."""
    create_topics(settings)
    ports = [free_port(), free_port()]
    workers = [
        start_worker(
            "stream",
            {**to_env(served(settings, port)), "ADCAST_STREAM__DATA_DIR": str(tmp_path / f"w{i}")},
            tmp_path / f"w{i}.log",
        )
        for i, port in enumerate(ports)
    ]
    try:
        for w in workers:
            w.wait_ready()
        users = [f"user-{i}" for i in range(8)]
        delivered = produce(settings, [(u, event(i, u, "click")) for i, u in enumerate(users)])
        partition_of = {u: p for u, (p, _) in zip(users, delivered, strict=True)}
        assert set(partition_of.values()) == {0, 1}, "the test needs users on both partitions"
        expected = {u: offset for u, (_, offset) in zip(users, delivered, strict=True)}
        newest_requests(settings, expected)

        deadline = time.monotonic() + 60
        while True:  # until the assignment has settled: one worker per partition
            answers = {(u, port): get(port, f"user_id={u}") for u in users for port in ports}
            owners = {
                partition_of[u]: page["served_by"] for (u, _), (status, _, page) in answers.items() if status == 200
            }
            settled = all(s == 200 and page["version"] == expected[u] for (u, _), (s, _, page) in answers.items())
            if settled and len(set(owners.values())) == 2:
                break
            assert time.monotonic() < deadline, f"{answers}\n{workers[0].tail()}\n{workers[1].tail()}"
            time.sleep(0.5)
        assert set(owners.values()) == {f"http://127.0.0.1:{port}" for port in ports}
        for (u, _), (_, _, page) in answers.items():
            assert page["served_by"] == owners[partition_of[u]], u  # the same worker, asked through either
    finally:
        for w in workers:
            assert w.stop() in (0, -15), w.tail()
