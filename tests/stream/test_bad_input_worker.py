"""Bad input against the real Faust worker (`adcast stream`) on the real broker: every kind lands on
the dead-letter topic, raw and with its reason, is counted in the worker's Prometheus metrics, and
the worker goes on processing. The pure processor's cases are in tests/unit/test_bad_input.py."""

from __future__ import annotations

import io
import json
import struct
import time
import urllib.request

import fastavro
import pytest
from produce import produce
from prometheus_client.parser import text_string_to_metric_families

from adcast.config import to_env
from adcast.core.text import MAX_TEXT_WORDS
from adcast.kafka import create_topics
from adcast.local.services import free_port
from adcast.local.workers import start_worker
from adcast.wire import serde

pytestmark = pytest.mark.integration
NOW = int(time.time() * 1000)
DAY_MS = 86_400_000


def record(event_id: str, user: str, kind: str = "click", t: int = NOW, **extra: object) -> dict:
    return {
        "event_id": event_id,
        "user_id": user,
        "event_time": t,
        "event_type": kind,
        "advertiser_id": "a1",
        "item_id": None,
        "category": "shoes",
        "brand": None,
        "text": None,
        **extra,
    }


def encoded(event_id: str, user: str, kind: str = "click", t: int = NOW, **extra: object) -> bytes:
    return serde.encode(serde.EVENT, record(event_id, user, kind, t, **extra))


def without_event_type() -> bytes:
    """A producer's body written with a schema lacking the required event_type, under id 1's header."""
    full = json.loads((serde.schema_dir() / "engagement_event.avsc").read_text())
    reduced = fastavro.parse_schema({**full, "fields": [f for f in full["fields"] if f["name"] != "event_type"]})
    body = io.BytesIO()
    rec = record("bad-missing", "junk")
    del rec["event_type"]
    fastavro.schemaless_writer(body, reduced, rec)
    return serde.header(serde.EVENT) + body.getvalue()


def bad_inputs() -> list[tuple[str, bytes | None, tuple[str, str]]]:
    """(key, value, (stage, reason)): one of each kind of bad input."""
    good = encoded("bad-body", "junk", category="running-shoes")
    return [
        ("junk", good[: good.index(b"running") + 3], ("decode", "truncated")),
        ("junk", b"\x01" + good[1:], ("decode", "bad_magic")),
        ("junk", struct.pack(">bI", 0, 99) + good[5:], ("decode", "unknown_schema_id")),
        ("junk", struct.pack(">bI", 0, 2) + good[5:], ("decode", "wrong_schema")),
        ("junk", good + b"\x00", ("decode", "trailing_bytes")),
        ("junk", without_event_type(), ("decode", "corrupt_body")),
        ("junk", None, ("decode", "empty_value")),  # a tombstone
        ("junk", encoded("bad-type", "junk", "poke"), ("validate", "unknown_event_type")),
        ("junk", encoded("bad-future", "junk", t=NOW + 30 * DAY_MS), ("validate", "event_time_in_future")),
        ("junk", encoded("bad-old", "junk", t=946_684_799_999), ("validate", "event_time_too_old")),
        ("junk", encoded("bad-empty", ""), ("validate", "empty_user_id")),
        ("junk", encoded("bad-long", "u" * 129), ("validate", "oversized_user_id")),
    ]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("adcast_") and s.name.endswith("_total")
    }


def latest_requests(messages) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for m in messages:
        r = serde.decode(serde.REQUEST, m.value())
        if r["version"] >= latest.get(r["user_id"], {"version": -1})["version"]:
            latest[r["user_id"]] = r
    return latest


def test_every_kind_of_bad_input_is_dead_lettered_counted_and_survived(settings, broker, tmp_path, topic_reader):
    create_topics(settings)
    port = free_port()
    worker = start_worker("stream", {**to_env(settings), "ADCAST_METRICS_PORT": str(port)}, tmp_path / "stream.log")
    try:
        worker.wait_ready()
        bad = bad_inputs()
        long_text = " ".join(f"w{i}" for i in range(5000))  # 28,889 characters: truncated, not rejected
        good: list[tuple[str, bytes]] = [
            ("good-0", encoded("g0", "good-0", "view", NOW - 10)),
            ("good-1", encoded("g1", "good-1", "click", NOW - 10)),
            ("dup", encoded("d0", "dup", "save", NOW - 10)),
            ("late", encoded("l300", "late", "click", NOW - 100)),  # out of order: newest time first
            ("late", encoded("l100", "late", "view", NOW - 300)),
            ("text", encoded("t0", "text", "search", NOW - 10, text=long_text)),
            ("dup", encoded("d0", "dup", "save", NOW - 10)),  # the same event again: a duplicate
            ("late", encoded("l200", "late", "save", NOW - 200)),
            ("good-0", encoded("g2", "good-0", "click", NOW - 5)),
        ]
        values: list[tuple[str, bytes | None]] = []
        bad_at: list[int] = []  # index in values of each bad input
        good_at: list[int] = []  # index in values of each good event
        for i in range(max(len(bad), len(good))):  # bad and good interleaved
            if i < len(bad):
                bad_at.append(len(values))
                values.append(bad[i][:2])
            if i < len(good):
                good_at.append(len(values))
                values.append(good[i])
        delivered = produce(settings, values)

        expected_letters = {delivered[j]: (sr, v or b"") for j, (_, v, sr) in zip(bad_at, bad, strict=True)}
        dead = topic_reader(
            settings.kafka.bootstrap_servers,
            settings.topics.name("dead_letters"),
            lambda out: len(out) >= len(bad),
        )
        got = {}
        for m in dead:
            d = serde.decode(serde.DEAD_LETTER, m.value())
            assert d["source_topic"] == settings.topics.name("events")
            got[(d["partition"], d["offset"])] = ((d["stage"], d["reason"].split(":")[0]), d["raw"])
            assert d["reason"].startswith(d["reason"].split(":")[0] + ": "), d["reason"]  # code, then detail
        assert got == expected_letters
        assert {sr for sr, _ in got.values()} == {sr for _, _, sr in bad}

        # The worker is alive and still processing: good events after the bad ones are scored.
        after = [("after-0", encoded("a0", "after-0", "click")), ("after-1", encoded("a1", "after-1", "save"))]
        after_at = produce(settings, after)
        expected_versions = {
            "good-0": delivered[good_at[8]][1],
            "good-1": delivered[good_at[1]][1],
            "dup": delivered[good_at[2]][1],  # the first copy: the duplicate moves nothing
            "late": delivered[good_at[7]][1],  # the newest salient event read, not the newest by time
            "text": delivered[good_at[5]][1],
            "after-0": after_at[0][1],
            "after-1": after_at[1][1],
        }
        requests = topic_reader(
            settings.kafka.bootstrap_servers,
            settings.topics.name("requests"),
            lambda out: {u: r["version"] for u, r in latest_requests(out).items()} == expected_versions,
        )
        latest = latest_requests(requests)
        assert {u: r["version"] for u, r in latest.items()} == expected_versions
        assert [(e["event_time"] - NOW, e["event_type"]) for e in latest["late"]["events"]] == [
            (-300, "view"),
            (-200, "save"),
            (-100, "click"),
        ]
        assert [e["event_type"] for e in latest["dup"]["events"]] == ["save"]
        assert [e["text"] for e in latest["text"]["events"]] == [" ".join(long_text.split()[:MAX_TEXT_WORDS])]

        total_events = len(values) + len(after)
        expected_metrics = {
            ("adcast_events_in_total", ()): float(total_events),
            ("adcast_duplicates_dropped_total", ()): 1.0,
            **{
                ("adcast_dead_letters_total", (("reason", reason), ("stage", stage))): 1.0
                for _, _, (stage, reason) in bad
            },
        }
        deadline = time.monotonic() + 30
        while True:
            metrics = scrape(port)
            seen = {k: v for k, v in metrics.items() if k[0] in {name for name, _ in expected_metrics}}
            if seen == expected_metrics or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert seen == expected_metrics

        # Nothing more reached the dead-letter topic meanwhile (exactly one letter per bad input).
        dead = topic_reader(
            settings.kafka.bootstrap_servers, settings.topics.name("dead_letters"), lambda out: False, 2
        )
        assert len(dead) == len(bad)
        assert worker.proc.poll() is None and "Crashed" not in worker.log_text(), worker.tail()
    finally:
        assert worker.stop() in (0, -15), worker.tail()
