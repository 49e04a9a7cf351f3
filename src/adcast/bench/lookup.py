"""`adcast bench lookup`: read latency of the online store, path by path.

Fills Redis with --users realistic records (top-K of `infer.top_k` advertisers out of
--advertisers, written through the real writer: AsyncAffinityStore and store.lua, pipelined in
chunks) under a key prefix of its own, then times --requests reads of one random user and of
--batch random users through each path, one request at a time (latency, not throughput), the
paths taking turns in rounds of ROUND requests so that load from other processes falls on all
alike (turns request by request made each path pay for the one before it: its garbage, the HTTP
server's work after answering):

  redis-py HMGET, HGETALL   raw commands on the same keys, no decoding: the floor
  sync client               AffinityClient.get / get_many (one round trip), decoded records
  async client              AsyncAffinityClient.get / get_many, awaited one at a time
  HTTP                      `adcast serve` in a subprocess on a free port, one keep-alive
                            connection, JSON parsed by the caller

Runs against the configured Redis (ADCAST_REDIS__URL, Redis Cluster with ADCAST_REDIS__CLUSTER;
`adcast up` starts a local one). The bench keys expire after an hour and are deleted at the end
unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

from adcast.config import Settings, override, redact_url, to_env
from adcast.core.affinities import Affinities
from adcast.core.clock import now_ms
from adcast.core.ranking import percentile
from adcast.errors import ServiceError
from adcast.local.services import free_port

PATHS = {
    "raw_hmget": "redis-py HMGET (raw)",
    "raw_hgetall": "redis-py HGETALL (raw)",
    "sync_client": "AffinityClient (sync)",
    "async_client": "AsyncAffinityClient",
    "http": "HTTP adcast serve",
}
FILL_CHUNK = 1000
ROUND = 25


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=100_000, help="users written to Redis (default: 100000)")
    p.add_argument("--batch", type=int, default=100, help="users per batch read (default: 100)")
    p.add_argument("--requests", type=int, default=2000, help="timed reads per path and size (default: 2000)")
    p.add_argument("--warmup", type=int, default=100, help="untimed reads first (default: 100)")
    p.add_argument("--advertisers", type=int, default=20_000, help="advertiser ids drawn from (default: 20000)")
    p.add_argument("--top-k", type=int, default=None, help="advertisers per user (default: infer.top_k)")
    p.add_argument("--key-prefix", default="adcast:bench:aff:", help="where the bench records live")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="leave the bench records in Redis")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def records(n: int, advertisers: int, top_k: int, seed: int) -> Iterator[Affinities]:
    """Predictions shaped like the engine's: distinct advertisers, a long-tailed softmax mass."""
    rng = random.Random(seed)
    pool = [f"a{j:05d}" for j in range(advertisers)]
    now = now_ms()
    for i in range(n):
        weights = sorted((rng.random() ** 4 for _ in range(top_k)), reverse=True)
        mass = rng.uniform(0.3, 0.95) / sum(weights)  # the top-K of a softmax over all advertisers
        top = tuple(zip(rng.sample(pool, top_k), (w * mass for w in weights), strict=True))
        computed = now - rng.randrange(3_600_000)
        yield Affinities(f"u{i:07d}", rng.randrange(10**9), "bench-model", computed, computed - 800, top)


def bench_lookup(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    s = override(
        settings,
        redis={"key_prefix": args.key_prefix, "ttl_seconds": 3600},  # a crashed run cleans up after itself
        serve={"max_users": max(settings.serve.max_users, args.batch)},
    )
    top_k = args.top_k or s.infer.top_k
    fill = _fill(s, args, top_k)
    try:
        rng = random.Random(args.seed + 1)
        calls = args.warmup + args.requests
        users = [f"u{i:07d}" for i in range(args.users)]
        singles = [rng.choice(users) for _ in range(calls)]
        batches = [rng.sample(users, args.batch) for _ in range(calls)]
        paths = asyncio.run(_measure(s, args.warmup, singles, batches))
    finally:
        if not args.keep:
            _delete(s, args.users)
    return {
        "redis": redact_url(s.redis.url),
        "cluster": s.redis.cluster,
        "users": args.users,
        "top_k": top_k,
        "batch": args.batch,
        "requests": args.requests,
        **fill,
        "paths": paths,
    }


def _fill(s: Settings, args: argparse.Namespace, top_k: int) -> dict[str, Any]:
    from tqdm import tqdm

    from adcast.store import AsyncAffinityStore

    async def go() -> tuple[int, int]:
        store = AsyncAffinityStore(s.redis)
        written = value_bytes = 0
        try:
            with tqdm(total=args.users, unit=" users", desc="fill", disable=args.quiet) as bar:
                chunk: list[Affinities] = []
                for a in records(args.users, args.advertisers, top_k, args.seed):
                    chunk.append(a)
                    value_bytes += sum(len(v.encode()) for v in a.to_hash().values())
                    if len(chunk) == FILL_CHUNK:
                        written += (await store.write_many(chunk)).count(True)
                        bar.update(len(chunk))
                        chunk = []
                if chunk:
                    written += (await store.write_many(chunk)).count(True)
                    bar.update(len(chunk))
        finally:
            await store.close()
        return written, value_bytes

    started = time.perf_counter()
    written, value_bytes = asyncio.run(go())
    seconds = time.perf_counter() - started
    # An earlier --keep run with the same seed leaves the same versions: nothing new to write.
    return {
        "fill_seconds": round(seconds, 2),
        "fill_users_per_s": round(args.users / seconds),
        "fill_written": written,
        "record_bytes_mean": round(value_bytes / max(1, args.users)),
    }


def _summary(single: list[float], batch: list[float]) -> dict[str, float]:
    return {
        "single_ms_p50": round(percentile(single, 50) * 1000, 3),
        "single_ms_p99": round(percentile(single, 99) * 1000, 3),
        "batch_ms_p50": round(percentile(batch, 50) * 1000, 3),
        "batch_ms_p99": round(percentile(batch, 99) * 1000, 3),
    }


async def _measure(s: Settings, warmup: int, singles: list[str], batches: list[list[str]]) -> dict[str, Any]:
    """Every path on the same reads, taking turns in rounds (see _timed), so that load from other
    processes on the machine falls on all paths alike. Sync paths block the (otherwise idle) loop."""
    from adcast.core.affinities import FIELDS
    from adcast.core.slots import DEFAULT_SLOT, user_key
    from adcast.store import AffinityClient, AsyncAffinityClient, redis_client

    def key(user_id: str) -> str:
        return user_key(s.redis.key_prefix, DEFAULT_SLOT, user_id)

    def raw_batch(command: str) -> Callable[[list[str]], Any]:
        def run(users: list[str]) -> Any:
            with raw.pipeline(transaction=False) as pipe:
                for u in users:
                    if command == "hmget":
                        pipe.hmget(key(u), FIELDS)
                    else:
                        pipe.hgetall(key(u))
                return pipe.execute()

        return run

    raw = redis_client(s.redis)
    client = AffinityClient(s.redis)
    aclient = AsyncAffinityClient(s.redis)
    try:
        if client.get(singles[0]) is None:
            raise ServiceError(f"bench record {key(singles[0])} is missing after the fill; is another run deleting it?")
        with _service(s) as port:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

            def http_get(users: list[str]) -> Any:
                conn.request("GET", "/v1/affinities?" + urlencode([("user_id", u) for u in users]))
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise ServiceError(f"adcast serve answered {response.status}: {body[:300]!r}")
                return json.loads(body)

            # path -> (one user, a batch); coroutine functions are awaited
            paths: dict[str, tuple[Callable[[str], Any], Callable[[list[str]], Any]]] = {
                "raw_hmget": (lambda u: raw.hmget(key(u), FIELDS), raw_batch("hmget")),
                "raw_hgetall": (lambda u: raw.hgetall(key(u)), raw_batch("hgetall")),
                "sync_client": (client.get, client.get_many),
                "async_client": (aclient.get, aclient.get_many),
                "http": (lambda u: http_get([u]), http_get),
            }
            # As a long-lived server does after start-up: the bench's inputs are not garbage, so
            # keep collections from walking them while timing.
            gc.freeze()
            try:
                single = await _timed([one for one, _ in paths.values()], singles, warmup)
                batch = await _timed([many for _, many in paths.values()], batches, warmup)
            finally:
                gc.unfreeze()
                conn.close()
    finally:
        await aclient.close()
        client.close()
        raw.close()
    return {name: _summary(single[i], batch[i]) for i, name in enumerate(paths)}


async def _timed(fns: list[Callable[[Any], Any]], inputs: list[Any], warmup: int) -> list[list[float]]:
    """Seconds per input after the first `warmup`, for each function: the functions take turns
    over the inputs in rounds of ROUND."""
    seconds: list[list[float]] = [[] for _ in fns]
    for start in range(0, len(inputs), ROUND):
        for fn, timings in zip(fns, seconds, strict=True):
            for n in range(start, min(start + ROUND, len(inputs))):
                started = time.perf_counter()
                result = fn(inputs[n])
                if asyncio.iscoroutine(result):
                    await result
                if n >= warmup:
                    timings.append(time.perf_counter() - started)
    return seconds


@contextmanager
def _service(s: Settings) -> Iterator[int]:
    """`adcast serve` as a subprocess with these settings, on a free port, until healthy."""
    port = free_port()
    env = {**os.environ, **to_env(s)}
    command = [sys.executable, "-m", "adcast.cli", "--log-level", "warning", "serve", "--host", "127.0.0.1"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([*command, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not _healthy(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise ServiceError(f"adcast serve did not become healthy:\n{log.read().decode(errors='replace')}")
                time.sleep(0.2)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _delete(s: Settings, users: int) -> None:
    from adcast.core.slots import DEFAULT_SLOT, user_key
    from adcast.store import redis_client

    raw = redis_client(s.redis)
    try:
        for start in range(0, users, FILL_CHUNK):
            with raw.pipeline(transaction=False) as pipe:
                for i in range(start, min(users, start + FILL_CHUNK)):
                    pipe.unlink(user_key(s.redis.key_prefix, DEFAULT_SLOT, f"u{i:07d}"))
                pipe.execute()
    finally:
        raw.close()


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"lookup latency on {r['redis']}{' (cluster)' if r['cluster'] else ''}: {r['users']:,} users, "
        f"top-{r['top_k']} (~{r['record_bytes_mean']} bytes each), {r['requests']:,} sequential requests per cell",
        f"fill through store.lua: {r['fill_seconds']:.1f} s ({r['fill_users_per_s']:,} users/s)",
        "",
        f"{'path':<26}{'1 user p50':>12}{'p99':>9}{str(r['batch']) + ' users p50':>16}{'p99':>9}   (ms)",
    ]
    for name, label in PATHS.items():
        p = r["paths"][name]
        lines.append(
            f"{label:<26}{p['single_ms_p50']:>12.3f}{p['single_ms_p99']:>9.3f}"
            f"{p['batch_ms_p50']:>16.3f}{p['batch_ms_p99']:>9.3f}"
        )
    return "\n".join(lines)
