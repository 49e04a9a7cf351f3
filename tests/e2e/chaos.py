"""Helpers of the failure tests (test_failures.py): data slices, the clean reference result computed
in-process, a redis-server whose data directory the test chooses, and restartable worker slots for
the chaos loop (Kafka reads that join no group are in tests/kafka_reading.py).

The reference is what a run without failures must end at: each user's delivered events folded by
the stream tier's own code (adcast.core.history) at the offsets they were delivered at, rendered by
the serving renderer and scored by the same torch engine on the same checkpoint."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adcast.config import Settings
from adcast.core.events import validate_event
from adcast.core.history import HistoryLimits, UserHistory, bounded_profile, fold_event
from adcast.core.prompt import render
from adcast.core.requests import PredictionRequest
from adcast.data.files import read_records, write_records
from adcast.local.services import Service, free_port
from adcast.local.workers import WorkerProcess, start_worker
from adcast.replay import Delivered
from adcast.store import StoredAffinities
from adcast.wire import serde

SCORE_TOLERANCE = 1e-4


# -- data ---------------------------------------------------------------------------------------


def write_new_click_per_user(world: Path, earlier: Path, out: Path) -> Path:
    """One new salient event (a click, a minute after the user's last event) for every user of
    `earlier`, so that every one of them needs a new prediction."""
    advertisers = list(read_records(world, "advertisers"))
    last: dict[str, int] = {}
    for e in read_records(earlier, "events"):
        last[e["user_id"]] = max(last.get(e["user_id"], 0), e["event_time"])
    events = []
    for n, user in enumerate(sorted(last)):
        adv = advertisers[n % len(advertisers)]
        events.append(
            {
                "event_id": f"again-{user}",
                "user_id": user,
                "event_time": last[user] + 60_000,
                "event_type": "click",
                "advertiser_id": adv["advertiser_id"],
                "item_id": None,
                "category": adv["category"],
                "brand": adv["name"].lower(),
                "text": None,
            }
        )
    write_records(out, "events", events)
    write_records(out, "profiles", (p for p in read_records(earlier, "profiles") if p["user_id"] in last))
    write_records(out, "advertisers", advertisers)
    return out


# -- the clean result ----------------------------------------------------------------------------


def reference_requests(
    settings: Settings, slices: list[Path], delivered: list[Delivered]
) -> dict[str, PredictionRequest]:
    """Per user, the request a run without failures ends with: the user's delivered events folded in
    offset order, as the stream tier folds them. `slices` in the order they were replayed; each
    replay sends a slice's events in event-time order (stable), so a user's records in that order
    are the user's delivered offsets in ascending order."""
    s = settings.stream
    limits = HistoryLimits(min_events=s.history_events, dedupe_window=s.dedupe_window)
    now = int(time.time() * 1000)
    records: dict[str, list[dict[str, Any]]] = defaultdict(list)
    profiles: dict[str, dict[str, str]] = {}
    for folder in slices:
        for p in read_records(folder, "profiles"):
            profiles[p["user_id"]] = p["attributes"]
        for e in sorted(read_records(folder, "events"), key=lambda e: e["event_time"]):
            records[e["user_id"]].append(e)
    offsets: dict[str, list[Delivered]] = defaultdict(list)
    for d in delivered:
        offsets[d.user_id].append(d)
    out = {}
    for user, events in records.items():
        at = sorted(offsets[user], key=lambda d: d.offset)
        assert len(at) == len(events), f"{user}: {len(events)} events in the slices, {len(at)} delivered"
        assert len({d.partition for d in at}) == 1, f"{user}'s events landed in several partitions"
        history = UserHistory(user_id=user, profile=bounded_profile(profiles.get(user, {})))
        for e, d in zip(events, at, strict=True):
            assert e["event_type"] == d.event_type, f"{user}: replay order differs at offset {d.offset}"
            fold_event(history, validate_event(e, now), d.offset, limits)
        if history.events:
            out[user] = PredictionRequest.from_history(history, "reference", now, limits)
    return out


@dataclass
class Comparison:
    users: int = 0
    mismatches: list[str] = field(default_factory=list)
    max_score_diff: float = 0.0


def compare_with_reference(
    engine: Any,
    requests: dict[str, PredictionRequest],
    expected: dict[str, int],
    stored: dict[str, StoredAffinities | None],
    k: int,
) -> Comparison:
    """Redis against the clean result: version == expected, the reference request's version equal
    too, and the stored top-K the same set as the in-process score of the reference prompt, each
    probability within SCORE_TOLERANCE. Advertisers tied within the tolerance at the K-th place may
    swap across the boundary (the engine's batching changes the last float bits)."""
    users = sorted(expected)
    assert set(requests) == set(expected), "the reference and the expected versions name other users"
    scored = engine.score([render(requests[u]) for u in users], k + 5)
    result = Comparison(users=len(users))
    for user, ref in zip(users, scored, strict=True):
        a = stored.get(user)
        if a is None:
            result.mismatches.append(f"{user}: missing from Redis")
            continue
        if a.version != expected[user] or requests[user].version != expected[user]:
            result.mismatches.append(
                f"{user}: version {a.version} in Redis, reference {requests[user].version}, expected {expected[user]}"
            )
            continue
        ref_prob = dict(ref)
        kth = ref[k - 1][1]
        got = dict(a.top)
        if len(got) != k:
            result.mismatches.append(f"{user}: {len(got)} advertisers stored, not {k}")
            continue
        for adv in set(got) ^ {x for x, _ in ref[:k]}:
            if abs(ref_prob.get(adv, 0.0) - kth) >= SCORE_TOLERANCE:
                result.mismatches.append(f"{user}: top-{k} sets differ at {adv}")
                break
        else:
            diffs = [abs(p - ref_prob[adv]) for adv, p in got.items() if adv in ref_prob]
            worst = max(diffs, default=0.0)
            result.max_score_diff = max(result.max_score_diff, worst)
            if worst >= SCORE_TOLERANCE:
                result.mismatches.append(f"{user}: a probability differs by {worst:.2e}")
    return result


def requests_in(messages: list[Any]) -> list[tuple[int, int, PredictionRequest]]:
    """(partition, offset, request) of each requests-topic message."""
    return [
        (m.partition(), m.offset(), PredictionRequest.from_record(serde.decode(serde.REQUEST, m.value())))
        for m in messages
    ]


def affinity_versions(messages: list[Any]) -> list[tuple[str, int]]:
    """(user, version) of each AffinityUpdate published."""
    out = []
    for m in messages:
        r = serde.decode(serde.AFFINITY, m.value())
        out.append((r["user_id"], r["version"]))
    return out


def written_before_commit(
    requests: list[tuple[int, int, PredictionRequest]], committed: dict[int, int], versions: dict[str, int]
) -> list[str]:
    """Requests below the committed offsets whose version Redis (`versions`) did not hold: each one
    was committed before its write succeeded. A request replaced by a newer one in its micro-batch
    is covered by that one's write, which was committed with it."""
    return [
        f"{r.user_id} v{r.version} (partition {p} offset {o}, committed {committed.get(p, 0)}, "
        f"stored {versions.get(r.user_id)})"
        for p, o, r in requests
        if o < committed.get(p, 0) and versions.get(r.user_id, -1) < r.version
    ]


def prometheus_value(port: int, name: str) -> dict[str, float]:
    """A metric's samples from a worker's /metrics, by label text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        out[m.group(1) or ""] = float(m.group(2))
    return out


# -- redis-server with a data directory of the test's choosing ------------------------------------


@dataclass(frozen=True)
class RedisServer(Service):
    """redis-server in `data_dir` that saves on shutdown (SIGTERM), so a restart in the same
    directory finds the data again; a restart in an empty directory finds none."""

    data_dir: Path = Path(".")

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--dir") + 1] = str(self.data_dir)
        cmd[cmd.index("--save") + 1] = "3600 1"
        return cmd

    @classmethod
    def create(cls, run_dir: Path, data_dir: Path, port: int | None = None) -> RedisServer:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls("redis", port or free_port(), run_dir, data_dir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def versions_in_snapshot(data_dir: Path, scratch: Path, key_prefix: str) -> dict[str, int]:
    """The stored version per user in the RDB file redis-server saved in `data_dir` when it stopped,
    read through a throwaway redis-server on a copy."""
    import redis

    copy = scratch / "snapshot"
    shutil.copytree(data_dir, copy)
    server = RedisServer.create(scratch / "snapshot-run", copy)
    server.start()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            keys = list(client.scan_iter(match=f"{key_prefix}*", count=1000))
            values = [client.hget(k, "v") for k in keys]
        finally:
            client.close()
    finally:
        server.stop()
    return {k[len(key_prefix) :]: int(v) for k, v in zip(keys, values, strict=True) if v is not None}


# -- restartable workers -------------------------------------------------------------------------


@dataclass
class Slot:
    """One worker position: the process now in it and every earlier one (with their logs)."""

    tier: str
    env: dict[str, str]
    log_dir: Path
    name: str
    processes: list[WorkerProcess] = field(default_factory=list)
    ready: bool = False

    def start(self) -> WorkerProcess:
        w = start_worker(self.tier, self.env, self.log_dir / f"{self.name}-{len(self.processes)}.log")
        self.processes.append(w)
        self.ready = False
        return w

    @property
    def current(self) -> WorkerProcess:
        return self.processes[-1]

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        if not self.ready:
            self.current.wait_ready(timeout_s)
            self.ready = True

    def kill(self) -> int:
        return self.current.stop(kill=True)

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.tail(lines)}" for w in self.processes)

    def stop_all(self) -> list[int]:
        return [w.stop() for w in self.processes]


def stop_together(*slots: Slot, timeout_s: float = 30.0) -> list[int]:
    """SIGTERM to each slot's current worker at once, then their exit codes (in order)."""
    procs = [slot.current.proc for slot in slots]
    for p in procs:
        if p.poll() is None:
            p.terminate()
    codes = []
    for slot, p in zip(slots, procs, strict=True):
        try:
            codes.append(p.wait(timeout_s))
        except subprocess.TimeoutExpired:
            codes.append(slot.current.stop(kill=True))
    return codes
