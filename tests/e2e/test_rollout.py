"""A model rollout under live load, end to end: model A live on slot ga under a steady replay, a
shadow worker with model B on slot gb, `adcast rollout` (killed -9 and resumed, its worker killed
-9 and restarted), `adcast compare`, `adcast promote`, `adcast retire`; readers sampled all along."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from kafka_reading import committed_offsets

from adcast.config import Settings, override, to_env
from adcast.data.files import read_records, write_records
from adcast.kafka import create_topics
from adcast.lifecycle.rollout import coverage, rollout_group
from adcast.lifecycle.state import changelog_topic
from adcast.local.demo import wait_for_versions
from adcast.local.workers import start_worker, tier_binary
from adcast.replay import expected_versions, replay
from adcast.store import AffinityClient, SlotAdmin

pytestmark = pytest.mark.e2e
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_b(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another real tiny model: the same world, another seed."""
    from adcast.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("model-b") / "tiny-b"
    train(small_world, out, TrainConfig(epochs=2, seed=1), progress=False)
    return out


def split_world(world: Path, users: list[str], out: Path) -> tuple[Path, Path]:
    """The users' events before the 80% time quantile, and after it (with profiles and advertisers)."""
    events = [e for e in read_records(world, "events") if e["user_id"] in users]
    cut = sorted(e["event_time"] for e in events)[len(events) * 4 // 5]
    parts = []
    for name, keep in (("early", lambda t: t < cut), ("late", lambda t: t >= cut)):
        d = out / name
        write_records(d, "events", (e for e in events if keep(e["event_time"])))
        write_records(d, "profiles", (p for p in read_records(world, "profiles") if p["user_id"] in users))
        write_records(d, "advertisers", read_records(world, "advertisers"))
        parts.append(d)
    return parts[0], parts[1]


class Sampler(threading.Thread):
    """Reads every user through the live slot, as a ranking server does, until stopped; notes
    every user that had a record and then, at some sampled moment, had none."""

    def __init__(self, settings: Settings, users: list[str]) -> None:
        super().__init__(daemon=True)
        self.settings, self.users = settings, users
        self.samples, self.missing = 0, set()
        self.halt = threading.Event()

    def run(self) -> None:
        with AffinityClient(self.settings.redis) as client:
            while not self.halt.is_set():
                found = client.get_many(self.users)
                self.missing |= {u for u, a in found.items() if a is None}
                self.samples += 1
                time.sleep(0.05)


def cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tier_binary("infer"), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )


def saved_position(settings, slot: str) -> dict[int, int]:
    """partition -> the changelog offset a resumed rollout of the slot starts at (none saved: {})."""
    group, topic = rollout_group(settings, slot), changelog_topic(settings)
    found = committed_offsets(settings.kafka.bootstrap_servers, group, topic, settings.topics.partitions)
    return {p: offset for p, offset in found.items() if offset > 0}


def test_rollout_promote_and_retire_under_live_load(
    settings, broker, redis_url, tiny_model, model_b, small_world, tmp_path
):
    users = sorted({p["user_id"] for p in read_records(small_world, "profiles")})[:60]
    early, late = split_world(small_world, users, tmp_path)
    group = settings.infer.group_id
    settings = override(settings, infer={"model_dir": str(tiny_model), "slot": "ga", "group_id": f"{group}-ga"})
    create_topics(settings)
    env_a = to_env(settings)
    shadow = override(
        settings, infer={"model_dir": str(model_b), "slot": "gb", "start_at": "latest", "group_id": f"{group}-gb"}
    )
    env_b = to_env(shadow)

    logs = tmp_path / "logs"
    stream = start_worker("stream", env_a, logs / "stream.log")
    infer_a = start_worker("infer", env_a, logs / "infer-a.log")
    workers = [stream, infer_a]
    sampler = None
    try:
        for w in workers:
            w.wait_ready()
        first = replay(settings, early, collect=True, progress=False)
        known_early = expected_versions(first.delivered)
        with AffinityClient(settings.redis) as client:
            assert len(wait_for_versions(client, known_early, timeout_s=120)) == len(known_early)
        with SlotAdmin(settings.redis) as admin:
            assert admin.pointer().live == "ga"  # the first slot written became live by itself

        sampler = Sampler(settings, sorted(known_early))
        sampler.start()
        infer_b = start_worker("infer", env_b, logs / "infer-b.log")
        workers.append(infer_b)
        infer_b.wait_ready()

        # Live traffic keeps flowing while the rollout runs, stamped now (compare judges predictions on it).
        second: list = []
        live = threading.Thread(
            target=lambda: second.append(replay(settings, late, rate=150, live=True, collect=True, progress=False))
        )
        live.start()

        rollout_args = (tier_binary("infer"), "rollout", "--slot", "gb", "--rate", "10", "--wait", "0", "--quiet")
        killed = subprocess.Popen(rollout_args, env={**os.environ, **env_b}, start_new_session=True)
        deadline = time.monotonic() + 60
        while not saved_position(shadow, "gb") and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert killed.poll() is None, "the rollout ended before it could be killed mid-way"
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        infer_b.stop(kill=True)  # a shadow worker dies mid-rollout too
        infer_b = start_worker("infer", env_b, logs / "infer-b-restarted.log")
        workers.append(infer_b)
        infer_b.wait_ready()
        resumed = cli(env_b, "rollout", "--slot", "gb", "--rate", "40", "--wait", "0", "--quiet")
        assert resumed.returncode == 0, resumed.stderr
        assert "(resumed)" in resumed.stdout, resumed.stdout
        # One request per user at most, however many changelog records a user has.
        requested = int(re.search(r"([\d,]+) requests", resumed.stdout).group(1).replace(",", ""))
        assert 0 < requested <= len(users), resumed.stdout
        live.join(timeout=120)
        expected = expected_versions(first.delivered + second[0].delivered)

        with AffinityClient(settings.redis, slot="gb") as client:
            caught_up = wait_for_versions(client, expected, timeout_s=120)
            in_b = client.get_many(sorted(expected))
        assert len(caught_up) == len(expected), [w.tail() for w in workers]
        # No stale write: every user of slot gb ends at exactly their newest salient offset.
        assert {u: a.version for u, a in in_b.items() if a} == expected
        c = coverage(shadow, "gb")
        assert c.known == c.held == c.current == len(expected)

        compared = cli(env_b, "compare", "ga", "gb", "--json")
        assert compared.returncode == 0, compared.stderr
        report = json.loads(compared.stdout)
        assert report["agreement"]["users"] == len(expected)
        assert 0 <= report["agreement"]["overlap@10"] <= 1
        assert report["slots"]["gb"]["coverage"] == 1.0 and report["slots"]["ga"]["known_users"] == len(expected)
        assert report["slots"]["ga"]["online"]["engagements_judged"] > 0  # the late events followed ga's predictions

        listed = cli(env_b, "slots", "--coverage", "--count")
        assert listed.returncode == 0, listed.stderr
        slots = json.loads(listed.stdout)
        assert (slots["live"], slots["candidate"]) == ("ga", "gb")
        assert slots["slots"]["gb"]["current"] == slots["slots"]["gb"]["keys"] == len(expected)
        promoted = cli(env_b, "promote", "gb")
        assert promoted.returncode == 0, promoted.stderr
        assert infer_a.stop() in (0, -15)  # the old deployment goes away before its slot does
        retired = cli(env_b, "retire", "ga", "--force", "--quiet")
        assert retired.returncode == 0, retired.stderr
        time.sleep(1)
    finally:
        if sampler is not None:
            sampler.halt.set()
            sampler.join()
        codes = [w.stop() for w in workers]
    tails = "\n".join(w.tail() for w in workers)
    assert all(code in (0, -15, -9) for code in codes), tails

    assert sampler.samples > 20 and not sampler.missing, (sampler.samples, sorted(sampler.missing)[:5])
    with SlotAdmin(settings.redis) as admin:
        pointer = admin.pointer()
        assert (pointer.live, pointer.previous, pointer.candidate) == ("gb", None, None)
        assert admin.count("ga") == 0 and admin.count("gb") == len(expected)
    with AffinityClient(settings.redis) as client:
        assert {u: a.version for u, a in client.get_many(sorted(expected)).items() if a} == expected
