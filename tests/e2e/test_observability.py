"""The Grafana dashboard and the Prometheus alert rules in deploy/observability name only metrics
that adcast's running processes serve: both tiers as subprocesses from their own environments, and
`adcast serve`, on the real broker and Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from adcast.config import override, to_env
from adcast.kafka import create_topics
from adcast.local.services import free_port
from adcast.local.workers import start_worker, tier_binary

pytestmark = pytest.mark.e2e
pytest.importorskip("torch")

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
METRIC = re.compile(r"\badcast_[a-z_]+")
TYPE_LINE = re.compile(r"^# TYPE (adcast_[a-z_]+) ", re.M)


def _named(text: str) -> set[str]:
    """adcast metric families named in PromQL text (a histogram's _bucket, _sum and _count are its own)."""
    return {re.sub(r"_(bucket|sum|count)$", "", m) for m in METRIC.findall(text)}


def _served(port: int, timeout_s: float = 60) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                families = set(TYPE_LINE.findall(r.read().decode()))
            # prometheus_client types a counter by its name without _total
            return families | {f + "_total" for f in families}
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_dashboard_and_alerts_name_only_metrics_that_adcast_serves(settings, broker, redis_url, tiny_model, tmp_path):
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = [r for g in yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())["groups"] for r in g["rules"]]
    assert rules and all({"alert", "expr", "annotations"} <= set(r) for r in rules)
    named = _named("\n".join(exprs)) | _named("\n".join(r["expr"] for r in rules))
    assert {"adcast_freshness_seconds", "adcast_consumer_lag", "adcast_dead_letters_total"} <= named

    settings = override(settings, infer={"model_dir": str(tiny_model)})
    create_topics(settings)
    ports = {"stream": free_port(), "infer": free_port(), "serve": free_port()}
    env = to_env(settings)
    workers = [
        start_worker(tier, {**env, "ADCAST_METRICS_PORT": str(ports[tier])}, tmp_path / f"{tier}.log")
        for tier in ("stream", "infer")
    ]
    serve = subprocess.Popen(
        [tier_binary("infer"), "serve", "--port", str(ports["serve"])],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        served = set().union(*(_served(port) for port in ports.values()))
    finally:
        serve.terminate()
        serve.wait(30)
        for w in workers:
            w.stop()
    assert named <= served, f"not served by any adcast process: {sorted(named - served)}"
