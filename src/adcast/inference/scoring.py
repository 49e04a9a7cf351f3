"""Engine calls for the inference worker: each in a thread with a deadline, retried with
exponential backoff, and a batch whose error survives the retries halved until the failing
requests are found, so that one bad request cannot take its batch-mates down. Every wait for a
retry ends at once when the worker is told to stop (Interrupted: the batch stays uncommitted)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from adcast import metrics
from adcast.config import InferSettings
from adcast.engines.base import Scored, ScoringEngine
from adcast.errors import EngineFailure, FatalError, Interrupted

log = logging.getLogger(__name__)
T = TypeVar("T")
Item = TypeVar("Item")


async def backoff(stop: asyncio.Event, delay: float) -> None:
    """Wait `delay` seconds before a retry; a stop request ends the wait at once (Interrupted)."""
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        return
    raise Interrupted("told to stop while waiting to retry")


class Scorer:
    def __init__(self, settings: InferSettings, engine: ScoringEngine, stop: asyncio.Event) -> None:
        self.settings = settings
        self.engine = engine
        self.stop = stop
        self.retries = 0  # engine calls retried, since start
        # One engine call at a time: a call that timed out may still be running in its thread.
        self._engine_lock = threading.Lock()

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a daemon thread, awaited for at most engine_timeout_s. A timed-out call
        cannot be killed; a daemon thread at least never keeps the process from exiting."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if done.done():  # cancelled by the deadline
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

        def work() -> None:
            result: Any = None
            error: BaseException | None = None
            with self._engine_lock:
                try:
                    result = fn(*args)
                except BaseException as exc:
                    error = exc
            # RuntimeError: the loop has closed, the worker stopped and nobody waits for this call.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=work, name="adcast-engine", daemon=True).start()
        return await asyncio.wait_for(done, self.settings.engine_timeout_s)

    async def call(self, prompts: list[str], attempts: int) -> list[Scored]:
        """Score with up to `attempts` tries and exponential backoff; raises EngineFailure."""
        s = self.settings
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                scored = await self._in_thread(self.engine.score, prompts, s.top_k)
                if len(scored) != len(prompts):
                    raise ValueError(f"the engine returned {len(scored)} results for {len(prompts)} prompts")
            except FatalError:
                raise  # the engine says it cannot go on (e.g. the model is gone): no retry helps
            except TimeoutError:
                failure = EngineFailure("engine_timeout", f"no answer within {s.engine_timeout_s}s")
            except Exception as exc:
                failure = EngineFailure("engine_error", f"{type(exc).__name__}: {exc}")
            else:
                metrics.INFERENCE_SECONDS.labels(self.settings.slot).observe(time.monotonic() - started)
                return scored
            metrics.ENGINE_FAILURES.labels(self.settings.slot, failure.reason).inc()
            if self.stop.is_set():
                raise Interrupted("told to stop while the engine failed")
            if attempt == attempts:
                raise failure
            delay = s.engine_retry_base_s * 2 ** (attempt - 1)
            metrics.RETRIES.labels("engine_score").inc()
            self.retries += 1
            log.warning(
                "engine failed, retrying in %.2fs attempt=%s/%s prompts=%s error=%s",
                delay,
                attempt,
                attempts,
                len(prompts),
                failure,
            )
            await backoff(self.stop, delay)
        raise AssertionError("unreachable: attempts >= 1")

    async def score(
        self, batch: list[Item], prompt: Callable[[Item], str], attempts: int
    ) -> tuple[list[tuple[Item, Scored]], list[tuple[Item, EngineFailure]]]:
        """The items scored and those that failed (with why)."""
        try:
            scored = await self.call([prompt(p) for p in batch], attempts)
            return list(zip(batch, scored, strict=True)), []
        except EngineFailure as exc:
            # A timeout is the engine's state, not a request's: halving would multiply the waits.
            if len(batch) == 1 or exc.reason != "engine_error":
                return [], [(p, exc) for p in batch]
        # The error survived the retries, so it is not transient: it may be one request's fault.
        # Halve until the failing requests are found; their batch-mates are still scored.
        mid = len(batch) // 2
        left_ok, left_failed = await self.score(batch[:mid], prompt, 1)
        right_ok, right_failed = await self.score(batch[mid:], prompt, 1)
        return left_ok + right_ok, left_failed + right_failed
