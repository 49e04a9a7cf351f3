"""What the benchmarks that run the tiers share: the local services, a worker's Prometheus
metrics and CPU time, and cleaning up a run's topics."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from adcast.config import Settings
from adcast.errors import ServiceError
from adcast.local.services import local_services

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


@dataclass
class Scrape:
    samples: dict[str, list[tuple[dict[str, str], float]]]

    def total(self, name: str, **labels: str) -> float:
        return sum(v for lab, v in self.samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for lab, v in self.samples.get(name, []):
            out[lab.get(label, "")] = out.get(lab.get(label, ""), 0.0) + v
        return out

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of a histogram, in order."""
        return sorted((float(lab["le"]), v) for lab, v in self.samples.get(f"{name}_bucket", []))


def scrape(port: int) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError as exc:
        raise ServiceError(f"cannot read a worker's metrics on port {port}: {exc}") from exc
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return Scrape(samples)


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
    from confluent_kafka import Consumer, TopicPartition

    from adcast.kafka import confluent_config

    # committed() asks the group coordinator for offsets; only subscribe() would join the group.
    consumer = Consumer({**confluent_config(settings), "group.id": group, "enable.auto.commit": False, "log_level": 2})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        end = done = 0
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            end += high
            done += tp.offset if tp.offset >= 0 else low
        return max(0, max(end, produced) - done)
    except Exception as exc:
        raise ServiceError(f"cannot read the offsets of group {group} on {topic}: {exc}") from exc
    finally:
        consumer.close()


def read_topic(settings: Settings, topic: str, expected: int, timeout_s: float = 60.0) -> list[bytes]:
    """Every message value of `topic`, at least `expected` of them. End offsets cannot say when
    the topic has been read (see consumer_lag), so reading goes on until `expected` messages have
    arrived and then until the topic stays quiet for a moment."""
    from confluent_kafka import Consumer, TopicPartition

    from adcast.kafka import confluent_config

    conf = {**confluent_config(settings), "group.id": f"{settings.infer.group_id}-bench-reader", "log_level": 2}
    consumer = Consumer({**conf, "enable.auto.commit": False})
    values: list[bytes] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while True:
            messages = consumer.consume(1000, timeout=0.5)
            values.extend(v for m in messages if m.error() is None and (v := m.value()) is not None)
            if len(values) >= expected and not messages:
                return values
            if time.monotonic() > deadline:
                raise ServiceError(f"read {len(values)} messages of {topic} in {timeout_s:.0f}s, expected {expected}")
    finally:
        consumer.close()
