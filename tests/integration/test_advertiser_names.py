"""Advertiser names from the real broker's compacted topic, and `adcast lookup` showing them beside
affinities written to the real Redis by the inference tier's writer."""

import json
import time

import pytest
from store_helpers import write

from adcast.cli import main
from adcast.core.affinities import Affinities
from adcast.errors import ServiceError
from adcast.kafka import confluent_config, create_topics
from adcast.kafka.advertiser_names import AdvertiserName, AdvertiserNames, read_advertiser_names
from adcast.wire import serde

pytestmark = pytest.mark.integration


def produce(settings, records):
    """(key, record or None for a tombstone, or raw bytes) to the advertisers topic, in order."""
    from confluent_kafka import Producer

    producer = Producer(confluent_config(settings))
    for key, value in records:
        if isinstance(value, dict):
            value = serde.encode(serde.ADVERTISER, {"advertiser_id": key, **value})
        producer.produce(settings.topics.name("advertisers"), key=key.encode(), value=value)
    assert producer.flush(10) == 0


def wait_for(reader, condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition(reader.names):
        assert time.monotonic() < deadline, dict(reader.names)
        reader.poll_new(timeout_s=0.2)


@pytest.fixture
def advertisers(settings, broker):
    create_topics(settings, only=["advertisers"])
    produce(
        settings,
        [
            ("a1", {"name": "Alpha", "category": "shoes"}),
            ("a2", {"name": "Beta", "category": "bags"}),
            ("a1", {"name": "Alpha Two", "category": "shoes"}),
            ("a3", {"name": "Gamma", "category": None}),
            ("bad", b"\x00\x00\x00"),  # not a record: skipped, counted
            ("a2", None),  # a tombstone
            ("a1", {"name": "Alpha Three", "category": "running"}),
        ],
    )
    return settings


def test_last_record_per_key_wins_and_tombstones_remove(advertisers):
    with AdvertiserNames(advertisers) as reader:
        names = reader.load()
        assert dict(names) == {"a1": AdvertiserName("Alpha Three", "running"), "a3": AdvertiserName("Gamma", None)}
        assert reader.skipped == {"truncated": 1}

        produce(advertisers, [("a4", {"name": "Delta", "category": "food"}), ("a3", None)])
        wait_for(reader, lambda n: "a4" in n and "a3" not in n)
        assert dict(names) == {"a1": AdvertiserName("Alpha Three", "running"), "a3": AdvertiserName("Gamma", None)}
    assert dict(read_advertiser_names(advertisers)) == {
        "a1": AdvertiserName("Alpha Three", "running"),
        "a4": AdvertiserName("Delta", "food"),
    }


def test_a_missing_topic_says_how_to_create_it(settings, broker):
    with AdvertiserNames(settings) as reader, pytest.raises(ServiceError, match=r"does not exist.*adcast up"):
        reader.load()


def use_settings(monkeypatch, tmp_path, settings, bootstrap=None):
    """`adcast` reads its settings from the environment: point it at this test's topics and keys."""
    monkeypatch.setenv("ADCAST_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("ADCAST_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("ADCAST_KAFKA__BOOTSTRAP_SERVERS", bootstrap or settings.kafka.bootstrap_servers)
    monkeypatch.setenv("ADCAST_TOPICS__PREFIX", settings.topics.prefix)
    monkeypatch.setenv("ADCAST_REDIS__URL", settings.redis.url)
    monkeypatch.setenv("ADCAST_REDIS__KEY_PREFIX", settings.redis.key_prefix)


def test_lookup_prints_names_and_keeps_its_json(advertisers, redis_url, monkeypatch, tmp_path, capsys):
    now = int(time.time() * 1000)
    stored = Affinities("u1", 7, "m1", now - 1_000, now - 240_000, (("a1", 0.5), ("a2", 0.25), ("a3", 0.125)))
    assert write(advertisers, [stored]) == [True]
    use_settings(monkeypatch, tmp_path, advertisers)

    assert main(["lookup", "u1", "nobody", "-k", "2"]) == 0
    user, nobody = capsys.readouterr().out.strip().split("\n\n")
    header, _, first, second = user.splitlines()
    assert header.startswith("u1  version 7  model m1  computed ") and header.endswith("  newest event 4 min ago")
    assert first.split() == ["1", "Alpha", "Three", "(a1)", "running", "50.0%"]
    assert second.split() == ["2", "a2", "-", "25.0%"]  # tombstoned: the id
    assert nobody == "nobody  no prediction (never scored, expired, or not in this slot)"

    assert main(["lookup", "--json", "u1", "nobody", "-k", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "u1": {
            "version": 7,
            "model_version": "m1",
            "computed_at": now - 1_000,
            "newest_event_time": now - 240_000,
            "top": [["a1", 0.5], ["a2", 0.25]],
        },
        "nobody": None,
    }


def test_lookup_works_without_the_broker(settings, redis_url, monkeypatch, tmp_path, capsys):
    now = int(time.time() * 1000)
    write(settings, [Affinities("u1", 7, "m1", now, now, (("a1", 0.5),))])
    use_settings(monkeypatch, tmp_path, settings, bootstrap="127.0.0.1:1")

    assert main(["lookup", "u1", "--no-names"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[2].split() == ["1", "a1", "-", "50.0%"] and captured.err == ""

    assert main(["lookup", "u1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[2].split() == ["1", "a1", "-", "50.0%"]
    [warning] = captured.err.splitlines()
    assert (
        warning.startswith("adcast: warning: no advertiser names, showing ids: cannot reach Kafka")
        and "adcast up" in warning
        and "--no-names" in warning
    )


def test_a_client_that_cannot_start_is_a_service_error(settings, tmp_path):
    from adcast.config import override

    broken = override(settings, kafka={"security_protocol": "SSL", "ssl_cafile": str(tmp_path / "missing.pem")})
    with AdvertiserNames(broken, timeout_s=2) as reader, pytest.raises(ServiceError, match="ssl.ca.location"):
        reader.load()
