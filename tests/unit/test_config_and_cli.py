import importlib.util
import json
import subprocess
import sys

from adcast.cli import main
from adcast.config import load_settings, masked, redact_url, to_env


def test_env_overrides_and_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("ADCAST_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("ADCAST_REDIS__PASSWORD", "hunter2")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.redis.password is not None and s.redis.password.get_secret_value() == "hunter2"
    assert "hunter2" not in json.dumps(masked(s))
    monkeypatch.setenv("ADCAST_REDIS__URL", "redis://user:pa55word@cache:6379/0")
    assert "pa55word" not in json.dumps(masked(load_settings()))
    assert redact_url("redis://user:pa55word@cache:6379/0") == "redis://user:**********@cache:6379/0"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_config_file_is_read_and_env_wins(tmp_path, monkeypatch):
    cfg = tmp_path / "adcast.toml"
    cfg.write_text("[infer]\ntop_k = 7\nmax_batch = 3\n")
    monkeypatch.setenv("ADCAST_CONFIG", str(cfg))
    monkeypatch.setenv("ADCAST_INFER__MAX_BATCH", "9")
    s = load_settings()
    assert (s.infer.top_k, s.infer.max_batch) == (7, 9)


def test_to_env_round_trips(monkeypatch):
    s = load_settings(topics={"prefix": "x."}, stream={"quiet_ms": 123})
    for k, v in to_env(s).items():
        monkeypatch.setenv(k, v)
    assert load_settings() == s


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adcast.cli", *args], capture_output=True, text=True)


def test_help_lists_the_subcommands():
    out = run_cli("--help")
    assert out.returncode == 0
    for cmd in ["up", "down", "stream", "infer", "generate", "replay", "train", "lookup", "demo"]:
        assert cmd in out.stdout


def _installed(module: str) -> bool:
    # Faust replaces its module object with a lazy one whose __spec__ is None once imported,
    # and find_spec raises on that: an imported module is installed by definition.
    return module in sys.modules or importlib.util.find_spec(module) is not None


def test_a_missing_tier_names_the_extra_to_install():
    # Each tier's environment lacks the other tier's engine; the CLI says what to install.
    if not _installed("faust"):
        out = run_cli("stream")
        assert out.returncode == 2 and "adcast[stream]" in out.stderr
    if not _installed("torch"):
        out = run_cli("infer")
        assert out.returncode == 2 and "adcast[infer-cpu]" in out.stderr
    assert not _installed("faust") or not _installed("torch")


def test_a_misspelt_setting_is_an_error_that_names_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ADCAST_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("ADCAST_KAFKA__BOOTSTRAP_SERVER", "kafka:9092")  # ..._SERVERS is the setting
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "ADCAST_KAFKA__BOOTSTRAP_SERVER is not a setting" in err
    monkeypatch.delenv("ADCAST_KAFKA__BOOTSTRAP_SERVER")
    (tmp_path / "adcast.toml").write_text("[stream]\nquiet_msec = 100\n")
    monkeypatch.setenv("ADCAST_CONFIG", str(tmp_path / "adcast.toml"))
    assert main(["config"]) == 2
    assert "ADCAST_STREAM__QUIET_MSEC is not a setting" in capsys.readouterr().err


def test_an_engine_or_device_that_does_not_exist_is_refused_when_the_settings_load(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ADCAST_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("ADCAST_INFER__ENGINE", "tensorrt")
    monkeypatch.setenv("ADCAST_INFER__DEVICE", "gpu")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "ADCAST_INFER__ENGINE: Input should be 'torch' or 'vllm'" in err
    assert "ADCAST_INFER__DEVICE: Input should be 'cpu' or 'cuda'" in err


def test_the_command_line_loads_a_benchmark_only_when_it_runs():
    code = (
        "import sys\n"
        "from adcast.cli import build_parser\n"
        "build_parser(['config'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('adcast.bench.') and m != 'adcast.bench._harness')\n"
        "assert loaded == [], loaded\n"
        "args = build_parser(['bench', 'state-size', '--json']).parse_args(['bench', 'state-size', '--json'])\n"
        "assert args.benchmark == 'state-size' and args.json\n"
        "print(sorted(m for m in sys.modules if m.startswith('adcast.bench.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['adcast.bench.state_size']"
