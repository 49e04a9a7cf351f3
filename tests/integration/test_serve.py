"""The HTTP lookup service in-process on a real port, over real HTTP, against the real redis-server."""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from aiohttp import ClientSession, web
from store_helpers import write

from adcast.config import override, to_env
from adcast.core.affinities import Affinities
from adcast.core.events import MAX_ID_CHARS
from adcast.local.services import free_port
from adcast.serve import create_app, handler_args
from adcast.store import AffinityClient

pytestmark = pytest.mark.integration


def aff(user: str, version: int) -> Affinities:
    now = int(time.time() * 1000)
    return Affinities(user, version, "m3", now - 1500, now - 2000, (("a0017", 0.412304), ("a0102", 0.081221)))


@contextlib.asynccontextmanager
async def serving(settings):
    runner = web.AppRunner(create_app(settings), **handler_args(settings))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with ClientSession(f"http://127.0.0.1:{port}") as http:
            yield http
    finally:
        await runner.cleanup()


def call(settings, *requests: tuple[str, str]) -> list[tuple[int, str, object]]:
    """(method, path) requests in order -> (status, content type, JSON or text body) each."""

    async def go():
        out = []
        async with serving(settings) as http:
            for method, path in requests:
                async with http.request(method, path) as r:
                    body = await (r.json() if r.content_type == "application/json" else r.text())
                    out.append((r.status, r.content_type, body))
        return out

    return asyncio.run(go())


def test_batch_lookup_returns_every_user_with_null_for_missing(settings, redis_url):
    write(settings, [aff("u1", 3), aff("u2", 8)])
    [(status, ctype, body)] = call(settings, ("GET", "/v1/affinities?user_id=u2&user_id=nobody&user_id=u1&user_id=u2"))
    assert (status, ctype) == (200, "application/json")
    users = body["users"]
    assert list(users) == ["u2", "nobody", "u1"] and users["nobody"] is None
    u1 = users["u1"]
    assert (u1["version"], u1["model_version"]) == (3, "m3")
    assert u1["top"] == [["a0017", 0.412304], ["a0102", 0.081221]]
    assert u1["computed_at"] - u1["newest_event_time"] == 500
    assert 1.4 <= u1["age_seconds"] < 60
    [(status, _, body)] = call(settings, ("GET", "/v1/affinities?user_id=u1"))
    assert status == 200 and list(body["users"]) == ["u1"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "missing_user_id"),
        ("?other=1", "missing_user_id"),
        ("?user_id=u1&user_id=", "empty_user_id"),
        ("?user_id=%20%20", "empty_user_id"),
        ("?" + "&".join(f"user_id=u{i}" for i in range(4)), "too_many_users"),
        ("?user_id=" + "x" * (MAX_ID_CHARS + 1), "oversized_user_id"),
    ],
)
def test_bad_requests_are_400_json_errors(settings, redis_url, query, code):
    settings = override(settings, serve={"max_users": 3})
    [(status, ctype, body)] = call(settings, ("GET", "/v1/affinities" + query))
    assert (status, ctype, body["error"]["code"]) == (400, "application/json", code)
    assert body["error"]["message"]


def test_the_largest_allowed_request_fits_the_request_line(settings, redis_url):
    # 1,000 ids of 128 four-byte characters is ~1.5 MB of query string, past aiohttp's 8 KiB line.
    users = [f"{i:04d}".ljust(MAX_ID_CHARS, "😀") for i in range(settings.serve.max_users)]
    write(settings, [aff(users[0], 1)])
    from urllib.parse import urlencode

    [(status, _, body)] = call(settings, ("GET", "/v1/affinities?" + urlencode([("user_id", u) for u in users])))
    assert status == 200 and len(body["users"]) == len(users)
    assert body["users"][users[0]]["version"] == 1 and body["users"][users[1]] is None


def test_wrong_paths_and_methods_are_json_errors(settings, redis_url):
    (s404, t404, b404), (s405, _, b405) = call(settings, ("GET", "/v2/nothing"), ("POST", "/v1/affinities"))
    assert (s404, t404, b404["error"]["code"]) == (404, "application/json", "not_found")
    assert (s405, b405["error"]["code"]) == (405, "method_not_allowed")
    assert "/v1/affinities" in b404["error"]["message"]


def test_health_metrics_and_openapi(settings, redis_url):
    write(settings, [aff("u1", 1)])
    health, _, (mstatus, mtype, text), (ostatus, _, spec) = call(
        settings,
        ("GET", "/healthz"),
        ("GET", "/v1/affinities?user_id=u1&user_id=nobody"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    )
    assert health[:2] == (200, "application/json") and health[2] == {"status": "ok"}
    assert (mstatus, mtype) == (200, "text/plain")
    assert 'adcast_lookup_requests_total{endpoint="/v1/affinities",status="200"}' in text
    assert 'adcast_lookup_users_total{result="missing"}' in text and "adcast_lookup_seconds_bucket" in text
    assert ostatus == 200 and spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/v1/affinities", "/healthz", "/metrics", "/openapi.json"}
    param, *slot_params = spec["paths"]["/v1/affinities"]["get"]["parameters"]
    assert [p["name"] for p in slot_params] == ["slot", "slots"]
    assert param["schema"]["maxItems"] == settings.serve.max_users
    assert param["schema"]["items"]["maxLength"] == MAX_ID_CHARS
    refs = {ref.split("/")[-1] for ref in _refs(spec)}
    assert refs <= set(spec["components"]["schemas"])


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from ([v] if k == "$ref" else _refs(v))
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_redis_down_is_503(settings):
    settings = override(settings, redis={"url": f"redis://127.0.0.1:{free_port()}/0"})
    (hs, _, hbody), (ls, _, lbody) = call(settings, ("GET", "/healthz"), ("GET", "/v1/affinities?user_id=u1"))
    assert hs == 503 and hbody["status"] == "unavailable"
    assert ls == 503 and lbody["error"]["code"] == "store_unavailable"
    # where Redis is, and why it failed, stay in the service's log
    port = str(settings.redis.url.rsplit(":", 1)[1].split("/")[0])
    assert port not in json.dumps([hbody, lbody]) and "127.0.0.1" not in json.dumps([hbody, lbody])


def test_a_token_guards_lookups_and_metrics_but_not_the_probes(settings, redis_url):
    from pydantic import SecretStr

    write(settings, [aff("u1", 3)])
    settings = override(settings, serve={"token": SecretStr("s3cret")})

    async def go():
        async with serving(settings) as http:
            out = {}
            for name, headers in {
                "none": {},
                "wrong": {"Authorization": "Bearer nope"},
                "basic": {"Authorization": "Basic s3cret"},
                "right": {"Authorization": "Bearer s3cret"},
            }.items():
                for path in ("/v1/affinities?user_id=u1", "/metrics", "/healthz", "/openapi.json"):
                    async with http.get(path, headers=headers) as r:
                        out[name, path.split("?")[0]] = (r.status, r.headers.get("WWW-Authenticate"))
            return out

    got = asyncio.run(go())
    for name in ("none", "wrong", "basic"):
        assert got[name, "/v1/affinities"] == got[name, "/metrics"] == (401, "Bearer")
        assert got[name, "/healthz"][0] == got[name, "/openapi.json"][0] == 200
    assert {got["right", p][0] for p in ("/v1/affinities", "/metrics", "/healthz", "/openapi.json")} == {200}


def test_adcast_serve_command_answers(settings, redis_url):
    write(settings, [aff("u1", 2)])
    port = free_port()
    env = {**os.environ, **to_env(settings)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adcast.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/affinities?user_id=u1", timeout=2) as r:
                    body = r.read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert json.loads(body)["users"]["u1"]["version"] == 2
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode in (0, -15), out.decode()


@pytest.mark.bench
def test_bench_lookup_runs_every_path(settings, redis_url):
    # A smoke run of `adcast bench lookup` (figures are not asserted: benchmarks are commands).
    env = {**os.environ, **to_env(settings)}
    prefix = settings.redis.key_prefix + "bench:"
    command = [sys.executable, "-m", "adcast.cli", "bench", "lookup", "--users", "300", "--requests", "20"]
    command += ["--warmup", "2", "--batch", "10", "--key-prefix", prefix, "--quiet", "--json"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["users"] == 300 and report["fill_written"] == 300
    assert set(report["paths"]) == {"raw_hmget", "raw_hgetall", "sync_client", "async_client", "http"}
    assert all(0 < cell["single_ms_p50"] <= cell["single_ms_p99"] for cell in report["paths"].values())
    with AffinityClient(settings.redis) as client:
        assert client.redis.keys(prefix + "*") == []  # the bench cleaned up


def test_a_named_slot_and_several_slots_in_one_request(settings, redis_url):
    write(settings, [aff("u1", 3)])  # the default slot, live while no pointer names another
    write(settings, [aff("u1", 9), aff("u2", 9)], "g5")
    (live, named, both, bad, twice) = call(
        settings,
        ("GET", "/v1/affinities?user_id=u1&user_id=u2"),
        ("GET", "/v1/affinities?user_id=u1&user_id=u2&slot=g5"),
        ("GET", "/v1/affinities?user_id=u1&slots=g0,g5"),
        ("GET", "/v1/affinities?user_id=u1&slot=g%7B1%7D"),
        ("GET", "/v1/affinities?user_id=u1&slot=g0&slots=g5"),
    )
    assert live[0] == 200 and live[2]["users"]["u1"]["version"] == 3 and live[2]["users"]["u2"] is None
    assert named[0] == 200 and {u: r["version"] for u, r in named[2]["users"].items()} == {"u1": 9, "u2": 9}
    assert both[0] == 200 and {s: r["u1"]["version"] for s, r in both[2]["slots"].items()} == {"g0": 3, "g5": 9}
    assert bad[0] == twice[0] == 400 and bad[2]["error"]["code"] == twice[2]["error"]["code"] == "invalid_slot"
