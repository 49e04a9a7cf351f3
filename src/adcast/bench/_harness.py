"""What the benchmarks that run the tiers share: the local services, a worker's Prometheus
metrics and CPU time, and cleaning up a run's topics."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from adcast.config import Settings
from adcast.errors import ServiceError
from adcast.local.services import local_services
from adcast.scrape import Scrape, scrape_url

log = logging.getLogger(__name__)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # exited meanwhile
    return total


def scrape(port: int) -> Scrape:
    """A loopback worker's metrics (adcast.scrape reads them)."""
    return scrape_url(f"http://127.0.0.1:{port}/metrics")


def delete_run_topics(settings: Settings) -> None:
    """Best effort: the run's topics, Faust's internal ones included (the local broker keeps
    everything in memory)."""
    from confluent_kafka.admin import AdminClient

    from adcast.kafka import confluent_config

    admin = AdminClient({**confluent_config(settings), "log_level": 2})
    try:
        names = [
            t
            for t in admin.list_topics(timeout=10).topics
            if t.startswith(settings.topics.prefix) or t.startswith(settings.stream.app_id)
        ]
        for name, fut in admin.delete_topics(names, operation_timeout=10).items():
            with contextlib.suppress(Exception):
                fut.result(timeout=10)
                continue
            log.warning("could not delete topic %s", name)
    except Exception as exc:
        log.warning("could not delete the run's topics: %s", exc)


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def start_local_services(settings: Settings) -> list[Any]:
    """Start the local broker and redis-server where the settings point at loopback ports nobody
    listens on; returns those this call started (to stop at the end)."""

    hosts = {
        "broker": settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[0],
        "redis": urlparse(settings.redis.url).hostname or "127.0.0.1",
    }
    started = []
    for service in local_services(settings):
        host = hosts[service.name]
        if host not in LOOPBACK or (service.pid() is None and _listening(host, service.port)):
            continue  # remote, or a local one this checkout does not manage (a test fixture's)
        if service.start():
            started.append(service)
    return started


def consumer_lag(settings: Settings, group: str, topic: str, produced: int) -> int:
    """Messages of this run's `topic` not yet committed by `group`: the end offsets minus the
    committed offsets, summed over partitions (one without a commit counts from its start).

    The topic is fresh, so its end offsets sum to the messages produced to it; `produced` (known
    to the caller) stands in where the broker reports less: the local Tansu answers ListOffsets
    with the base offset of a partition's last record batch plus one, not the offset after it."""
    from adcast.kafka.lag import group_offsets

    end, done = group_offsets(settings, group, topic)
    return max(0, max(end, produced) - done)


def read_topic(settings: Settings, topic: str, expected: int, timeout_s: float = 60.0) -> list[Any]:
    """Every message of `topic` (confluent-kafka Messages), at least `expected` of them. End offsets cannot say when
    the topic has been read (see consumer_lag), so reading goes on until `expected` messages have
    arrived and then until the topic stays quiet for a moment."""
    from confluent_kafka import Consumer, TopicPartition

    from adcast.kafka import confluent_config

    conf = {**confluent_config(settings), "group.id": f"{settings.infer.group_id}-bench-reader", "log_level": 2}
    consumer = Consumer({**conf, "enable.auto.commit": False})
    values: list[Any] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while True:
            messages = consumer.consume(1000, timeout=0.5)
            values.extend(m for m in messages if m.error() is None and m.value() is not None)
            if len(values) >= expected and not messages:
                return values
            if time.monotonic() > deadline:
                raise ServiceError(f"read {len(values)} messages of {topic} in {timeout_s:.0f}s, expected {expected}")
    finally:
        consumer.close()
