"""adcast_consumer_lag of the stream worker as an operator runs it (`adcast stream`), on the real broker."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from adcast.config import override, to_env
from adcast.kafka import create_topics
from adcast.local.services import free_port
from adcast.local.workers import start_worker
from adcast.replay import event_producer
from adcast.wire import serde

pytestmark = pytest.mark.integration


def lag_of(port: int, topic: str) -> dict[str, float]:
    """partition -> adcast_consumer_lag of the stream tier for `topic`, scraped from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    pattern = re.compile(r"^adcast_consumer_lag\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)
    out = {}
    for m in pattern.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
        if labels["tier"] == "stream" and labels["topic"] == topic:
            out[labels["partition"]] = float(m["value"])
    return out


def test_stream_worker_exports_consumer_lag_that_drains_to_zero(settings, broker, tmp_path):
    create_topics(settings)
    port = free_port()
    settings = override(settings, metrics_port=port)
    events = settings.topics.name("events")
    now = int(time.time() * 1000)
    producer = event_producer(settings)
    for i in range(200):
        user = f"user-{i % 20}"
        record = {"event_id": f"e{i}", "user_id": user, "event_time": now + i, "event_type": "view"}
        record |= {"advertiser_id": "a1", "item_id": None, "category": None, "brand": None, "text": None}
        producer.produce(events, key=user.encode(), value=serde.encode(serde.EVENT, record))
    producer.flush(10)

    worker = start_worker("stream", to_env(settings), tmp_path / "stream.log")
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 60
        lag: dict[str, float] = {}
        while time.monotonic() < deadline:
            lag = lag_of(port, events)
            if len(lag) == settings.topics.partitions and set(lag.values()) == {0.0}:
                break
            time.sleep(0.5)
        assert lag == {str(p): 0.0 for p in range(settings.topics.partitions)}, (lag, worker.tail())
    finally:
        assert worker.stop() in (0, -15), worker.tail()
