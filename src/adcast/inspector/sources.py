"""Where the inspector's figures come from, none of them a copy of its own: the slot pointer in
Redis, the stream tier's history page (which routes to the worker holding the user), the
workers' Prometheus endpoints, Kafka's committed offsets, and the advertisers topic for names.

Each source fails on its own: the page says what is unavailable and why, and shows the rest.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from adcast.config import Settings
from adcast.core.slots import SlotPointer, pointer_key
from adcast.errors import AdcastError, OffsetsUnreadable
from adcast.inspector.views import counters_since, merged
from adcast.kafka.advertiser_names import AdvertiserName, AdvertiserNames
from adcast.kafka.lag import group_offsets
from adcast.scrape import Scrape, parse
from adcast.store import AsyncAffinityClient
from adcast.store.connection import mapped_errors

log = logging.getLogger(__name__)

HISTORY_TIMEOUT_S = 2.0
MAX_HISTORY_BYTES = 256 * 1024  # the page caps its answers at 64 KiB
SCRAPE_TIMEOUT_S = 2.0
MAX_SCRAPE_BYTES = 4 * 1024 * 1024
FLEET_WINDOW_S = 300.0  # "the last minutes" of the fleet view
MIN_WINDOW_S = 30.0  # less watched than this: totals since the workers started
SAMPLE_EVERY_S = 15.0  # between the fleet view's own scrapes when nobody asks
LAG_TIMEOUT_S = 3.0
# The consumer groups the fleet view reads lag of: the groups of serve's settings, on their inputs.
LAG_TOPICS = {"stream": ("events", "profiles"), "infer": ("requests", "rollout")}


async def read_pointer(client: AsyncAffinityClient) -> SlotPointer:
    """The whole slot pointer (candidate and writers too; readers need only live and previous)."""
    with mapped_errors(client.settings):
        return SlotPointer.from_hash(await client.redis.hgetall(pointer_key(client.settings.key_prefix)))


async def fetch_history(
    session: aiohttp.ClientSession, base_url: str, user_id: str, timeout_s: float = HISTORY_TIMEOUT_S
) -> tuple[dict[str, Any] | None, str | None]:
    """(the stream tier's page for the user, None), or (None, why there is none)."""
    if not base_url:
        return None, "serve.history_url is not set"
    url = f"{base_url.rstrip('/')}/v1/history"
    try:
        async with session.get(url, params={"user_id": user_id}, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            body = await r.content.read(MAX_HISTORY_BYTES + 1)
            if len(body) > MAX_HISTORY_BYTES:
                return None, f"the answer of {url} is over {MAX_HISTORY_BYTES} bytes"
            data = json.loads(body)
    except TimeoutError:
        return None, f"the stream tier's page at {url} did not answer within {timeout_s:g} s"
    except aiohttp.ClientError as exc:
        return None, f"cannot reach the stream tier's page at {url}: {type(exc).__name__}: {exc}"
    except ValueError:
        return None, f"{url} did not answer JSON"
    if r.status == 200 and isinstance(data, dict):
        return data, None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return None, f"{error.get('code')}: {error.get('message')}"
    return None, f"{url} answered {r.status}"


class NamesFeed:
    """Advertiser names from the advertisers topic, loaded and then followed by a daemon thread (a
    service never waits on Kafka to start or stop). While the broker or the topic is missing it
    logs one warning, the page shows ids, and it tries again every `retry_s`."""

    def __init__(self, settings: Settings, retry_s: float = 30.0, poll_s: float = 1.0) -> None:
        self.settings, self.retry_s, self.poll_s = settings, retry_s, poll_s
        self.names: Mapping[str, AdvertiserName] = MappingProxyType({})
        self.error: str | None = "not loaded yet"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="advertiser-names", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from adcast.wire.schema_registry import activate

        warned = False
        while not self._stop.is_set():
            reader = AdvertiserNames(self.settings, timeout_s=10.0)
            try:
                activate(self.settings)
                self.names, self.error = reader.load(), None
                log.info("inspector: %d advertiser names from %s", len(self.names), reader.topic)
                while not self._stop.is_set():
                    reader.poll_new(self.poll_s)
                    self.names = reader.names
            except Exception as exc:  # names are a convenience: ids stand in
                self.error = str(exc)
                if not warned:
                    log.warning("inspector: no advertiser names, ids shown (retry every %.0fs): %s", self.retry_s, exc)
                warned = True
            finally:
                reader.close()
            self._stop.wait(self.retry_s)


async def _addresses(url: str) -> list[str]:
    """`url` once per address its host resolves to (a headless Service: one per pod), or as is."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return [url]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 80, type=socket.SOCK_STREAM)
    found = sorted({str(info[4][0]) for info in infos})
    if len(found) < 2:
        return [url]
    hosts = [f"[{ip}]" if ":" in ip else ip for ip in found]  # IPv6 in brackets
    return [urlunsplit(parts._replace(netloc=f"{host}:{parts.port or 80}")) for host in hosts]


class FleetSampler:
    """The workers' metrics, scraped every SAMPLE_EVERY_S from serve's start and at most every
    `min_interval_s` when the fleet view asks, the scrapes of the last `window_s` kept: the
    figures are what changed over that window (once it spans MIN_WINDOW_S)."""

    def __init__(self, urls: list[str], window_s: float = FLEET_WINDOW_S, min_interval_s: float = 2.0) -> None:
        self.urls, self.window_s, self.min_interval_s = urls, window_s, min_interval_s
        self.snapshots: deque[tuple[float, dict[str, Scrape]]] = deque()
        self.errors: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def sample(self, session: aiohttp.ClientSession) -> None:
        async with self._lock:
            now = time.monotonic()
            if self.snapshots and now - self.snapshots[-1][0] < self.min_interval_s:
                return
            targets: list[str] = []
            errors: dict[str, str] = {}
            for url in self.urls:
                try:
                    targets += await _addresses(url)
                except OSError as exc:
                    errors[url] = f"cannot resolve: {exc}"
            results = await asyncio.gather(*(self._scrape(session, t) for t in targets))
            got = {t: r for t, r in zip(targets, results, strict=True) if isinstance(r, Scrape)}
            errors |= {t: r for t, r in zip(targets, results, strict=True) if isinstance(r, str)}
            self.errors = errors
            self.snapshots.append((now, got))
            while len(self.snapshots) > 2 and now - self.snapshots[1][0] >= self.window_s:
                self.snapshots.popleft()

    async def run(self, session: aiohttp.ClientSession, every_s: float = SAMPLE_EVERY_S) -> None:
        """Sample until cancelled, so that the window is there when someone opens the page."""
        while True:
            try:
                await self.sample(session)
            except Exception as exc:  # a figure is telemetry: the next round tries again
                log.warning("inspector: scraping the workers failed: %s", exc)
            await asyncio.sleep(every_s)

    @staticmethod
    async def _scrape(session: aiohttp.ClientSession, url: str) -> Scrape | str:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)) as r:
                if r.status != 200:
                    return f"answered {r.status}"
                return parse((await r.content.read(MAX_SCRAPE_BYTES)).decode("utf-8", "replace"))
        except TimeoutError:
            return f"no answer within {SCRAPE_TIMEOUT_S:g} s"
        except (aiohttp.ClientError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"

    def window(self) -> tuple[Scrape, float | None]:
        """The counters' changes since the oldest scrape inside the window, merged across workers,
        and the seconds that spans (None: under MIN_WINDOW_S watched, so totals since the workers
        started)."""
        if not self.snapshots:
            return Scrape({}), None
        t_last, last = self.snapshots[-1]
        first_t, first = next(((t, s) for t, s in self.snapshots if t_last - t <= self.window_s), (t_last, last))
        if t_last - first_t < MIN_WINDOW_S:
            return merged(counters_since(None, s) for s in last.values()), None
        return merged(counters_since(first.get(url), s) for url, s in last.items()), round(t_last - first_t, 1)


class LagReader:
    """Consumer lag per tier from Kafka (end minus committed offsets), read in a thread and kept
    `max_age_s`, so that a page refreshing every few seconds costs one read at a time."""

    def __init__(self, settings: Settings, max_age_s: float = 5.0) -> None:
        self.settings, self.max_age_s = settings, max_age_s
        self.rows: list[dict[str, Any]] = []
        self.read_at = -1e9
        self._lock = asyncio.Lock()

    async def read(self) -> list[dict[str, Any]]:
        async with self._lock:
            if time.monotonic() - self.read_at >= self.max_age_s:
                self.rows = await asyncio.to_thread(self._read_all)
                self.read_at = time.monotonic()
            return self.rows

    def _read_all(self) -> list[dict[str, Any]]:
        s = self.settings
        groups = {"stream": s.stream.app_id, "infer": s.infer.group_id}
        rows: list[dict[str, Any]] = []
        failed: str | None = None
        for tier, topics in LAG_TOPICS.items():
            for topic in (s.topics.name(t) for t in topics):
                row: dict[str, Any] = {"tier": tier, "group": groups[tier], "topic": topic}
                if failed is None:
                    try:
                        end, committed = group_offsets(s, groups[tier], topic, LAG_TIMEOUT_S)
                        row |= {"lag": max(0, end - committed), "end": end, "committed": committed}
                    except OffsetsUnreadable as exc:
                        row["error"] = failed = str(exc)
                    except AdcastError as exc:  # a missing topic: the other topics may still be read
                        row["error"] = str(exc)
                else:  # the broker did not answer: not once per topic
                    row["error"] = failed
                rows.append(row)
        return rows
