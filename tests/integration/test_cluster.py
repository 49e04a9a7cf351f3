"""The store on a real Redis Cluster: three masters started on free loopback ports, users spread
over every node, the real writer path (store.lua through the cluster pipeline) and both readers."""

import asyncio
import subprocess
import time

import pytest
from store_helpers import write

from adcast.config import override
from adcast.core.affinities import Affinities
from adcast.core.slots import DEFAULT_SLOT
from adcast.errors import ConfigError
from adcast.local.services import free_port, redis_binary
from adcast.store import AffinityClient, AsyncAffinityClient

pytestmark = pytest.mark.integration


def _redis_cli(*args: str) -> str:
    cli = redis_binary("redis-cli")
    return subprocess.run([cli, *args], capture_output=True, text=True, timeout=30, check=True).stdout


def _wait(condition, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout_s:.0f}s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """Three cluster-enabled redis-servers joined into one cluster; yields their ports."""
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for _ in range(3):
            port, bus = free_port(), free_port()  # an explicit bus port: the default port+10000 may be taken
            folder = tmp_path_factory.mktemp(f"cluster-{port}")
            log = (folder / "redis.log").open("wb")
            flags = f"--bind 127.0.0.1 --port {port} --cluster-enabled yes --cluster-port {bus} --appendonly no"
            command = [redis_binary(), *flags.split(), "--daemonize", "no", "--save", ""]
            command += ["--cluster-config-file", str(folder / "nodes.conf"), "--dir", str(folder)]
            procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
            ports.append(port)
        for p in ports:
            _wait(lambda p=p: _ping(p), f"redis-server on port {p} did not answer")
        nodes = [f"127.0.0.1:{p}" for p in ports]
        _redis_cli("--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes")
        for p in ports:
            _wait(lambda p=p: "cluster_state:ok" in _redis_cli("-p", str(p), "cluster", "info"), f"no cluster on {p}")
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ping(port: int) -> bool:
    try:
        return _redis_cli("-p", str(port), "ping").strip() == "PONG"
    except subprocess.CalledProcessError:
        return False


@pytest.fixture
def cluster_settings(settings, cluster):
    return override(settings, redis={"url": f"redis://127.0.0.1:{cluster[0]}/0", "cluster": True})


def aff(user: str, version: int, top=(("a0017", 0.41), ("a0102", 0.08))) -> Affinities:
    return Affinities(user, version, "m1", 1_700_000_000_000 + version, 1_699_999_999_000, top)


def keys_per_node(ports: list[int], prefix: str) -> list[int]:
    return [len(_redis_cli("-p", str(p), "--scan", "--pattern", f"{prefix}*").split()) for p in ports]


def test_writes_and_reads_span_every_node(cluster_settings, cluster):
    users = [f"u{i:05d}" for i in range(300)]
    assert write(cluster_settings, [aff(u, 10) for u in users]) == [True] * len(users)
    per_node = keys_per_node(cluster, cluster_settings.redis.key_prefix)
    assert sum(per_node) == len(users) and min(per_node) > 0, per_node  # every master owns some users

    with AffinityClient(cluster_settings.redis) as client:
        assert client.ping()
        many = client.get_many([*users, "nobody", "nobody-else"])
        single = client.get(users[7])
        assert client.get("nobody") is None
    assert many["nobody"] is None and many["nobody-else"] is None
    assert all(many[u] is not None and many[u].version == 10 and many[u].top == aff(u, 10).top for u in users)
    assert single == many[users[7]]

    async def read_async():
        async with AsyncAffinityClient(cluster_settings.redis) as client:
            return await client.get_many([*users, "nobody"]), await client.get(users[3]), await client.ping()

    amany, asingle, pong = asyncio.run(read_async())
    assert amany == {u: many[u] for u in [*users, "nobody"]} and asingle == many[users[3]] and pong


def test_only_newer_versions_are_written_on_a_cluster(cluster_settings, cluster):
    users = [f"cas{i}" for i in range(30)]
    assert write(cluster_settings, [aff(u, 10) for u in users]) == [True] * 30
    assert write(cluster_settings, [aff(u, 9, (("old", 1.0),)) for u in users]) == [False] * 30
    assert write(cluster_settings, [aff(u, 10, (("same", 1.0),)) for u in users]) == [False] * 30
    # Out of order in one batch: the newest wins wherever each user lives.
    mixed = [aff(u, v, ((f"v{v}", 1.0),)) for u in users[:10] for v in (12, 15, 11)]
    assert write(cluster_settings, mixed) == [True, True, False] * 10
    with AffinityClient(cluster_settings.redis) as client:
        got = client.get_many(users)
        ttl = client.redis.ttl(client.key(users[0], DEFAULT_SLOT))
    assert all(got[u].version == 15 and got[u].top == (("v15", 1.0),) for u in users[:10])
    assert all(got[u].version == 10 and got[u].top == aff(u, 10).top for u in users[10:])
    assert 0 < ttl <= cluster_settings.redis.ttl_seconds


def test_a_node_without_the_script_is_reloaded(cluster_settings, cluster):
    users = [f"ns{i}" for i in range(60)]
    for p in cluster:
        _redis_cli("-p", str(p), "script", "flush")
    assert write(cluster_settings, [aff(u, 1) for u in users]) == [True] * 60
    _redis_cli("-p", str(cluster[1]), "script", "flush")  # as after a restart of one master
    assert write(cluster_settings, [aff(u, 2) for u in users]) == [True] * 60
    with AffinityClient(cluster_settings.redis) as client:
        assert {a.version for a in client.get_many(users).values() if a is not None} == {2}


def test_a_plain_client_on_a_cluster_says_what_to_set(cluster_settings):
    cluster_settings = override(cluster_settings, redis={"cluster": False})
    users = [f"plain{i}" for i in range(30)]  # some live on other nodes than the one in the URL
    with AffinityClient(cluster_settings.redis) as client, pytest.raises(ConfigError, match="CLUSTER=true"):
        client.get_many(users)


def test_the_lookup_service_reads_a_cluster(cluster_settings):
    from aiohttp import ClientSession, web

    from adcast.serve import create_app, handler_args

    write(cluster_settings, [aff(f"h{i}", 4) for i in range(20)])

    async def go():
        runner = web.AppRunner(create_app(cluster_settings), **handler_args(cluster_settings))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            query = "&".join(f"user_id=h{i}" for i in range(21))
            async with ClientSession() as http, http.get(f"http://127.0.0.1:{port}/v1/affinities?{query}") as r:
                return r.status, await r.json()
        finally:
            await runner.cleanup()

    status, body = asyncio.run(go())
    assert status == 200 and body["users"]["h20"] is None
    assert all(body["users"][f"h{i}"]["version"] == 4 for i in range(20))
