"""Start and stop the tier workers (and `adcast serve`) as subprocesses, exactly as an operator runs them.

Each tier lives in its own virtual environment, so each worker is started through that
environment's `adcast` executable: $ADCAST_STREAM_BIN and $ADCAST_INFER_BIN (the Makefile sets
both), else the checkout's `.venv-stream` / `.venv-infer`, else `adcast` beside this interpreter.
`adcast serve` needs neither tier's extra; it runs from the inference tier's environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from adcast.errors import ServiceError

READY_MARKERS = {"stream": "[^Worker]: Ready", "infer": "inference worker started", "serve": "inspector on http://"}
ENVIRONMENT_OF = {"serve": "infer"}  # a command outside the tiers, and the environment it runs from


def tier_binary(tier: str) -> str:
    env = os.environ.get(f"ADCAST_{tier.upper()}_BIN")
    if env:
        return env
    checkout = Path(__file__).resolve().parents[3] / f".venv-{tier}" / "bin" / "adcast"  # src/adcast/local/
    if checkout.exists():
        return str(checkout)
    return str(Path(sys.executable).with_name("adcast"))


@dataclass
class WorkerProcess:
    tier: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        marker = READY_MARKERS[self.tier]
        deadline = time.monotonic() + timeout_s
        while marker not in self.log_text():
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"{self.tier} worker exited with {self.proc.returncode}; last log lines:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.tier} worker not ready after {timeout_s:.0f}s; see {self.log_path}")
            time.sleep(0.2)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0, kill: bool = False) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_worker(tier: str, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> WorkerProcess:
    binary = tier_binary(ENVIRONMENT_OF.get(tier, tier))
    if not Path(binary).exists():
        raise ServiceError(
            f"no adcast executable for the {tier} tier at {binary}; create its environment "
            f"(`make venvs`) or set ADCAST_{tier.upper()}_BIN"
        )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [binary, tier, *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return WorkerProcess(tier, proc, log_path)
