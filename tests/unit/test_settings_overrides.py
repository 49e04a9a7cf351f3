"""Settings are frozen; `override` is the one way to change a copy, and it validates. The local
services' file (`adcast up`) sits below the config file and the environment."""

import pytest
from pydantic import ValidationError

from adcast.config import load_settings, override
from adcast.errors import ConfigError
from adcast.local.services import LOCAL_BROKER_TIMINGS, remove_local_settings, write_local_settings


def test_settings_and_their_groups_cannot_be_changed_in_place():
    s = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.infer.max_batch = 2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        s.metrics_port = 1  # type: ignore[misc]


def test_override_returns_a_validated_copy_and_leaves_the_original_alone():
    s = load_settings()
    t = override(s, infer={"max_batch": 2, "slot": "g7"}, metrics_port=9100)
    assert (t.infer.max_batch, t.infer.slot, t.metrics_port) == (2, "g7", 9100)
    assert (s.infer.max_batch, s.infer.slot, s.metrics_port) == (64, "g0", 0)
    assert t.infer.top_k == s.infer.top_k and t.kafka == s.kafka  # the rest is carried over


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"infer": {"max_batch": "many"}}, "max_batch"),
        ({"infer": {"slot": "not a slot!"}}, "slot"),
        ({"infer": {"engine": "tensorrt"}}, "engine"),
        ({"kafka": {"session_timeout_ms": 5}}, "session_timeout_ms"),
        ({"infer": {"max_batchh": 2}}, "max_batchh"),
        ({"metrics_prot": 1}, "metrics_prot"),
    ],
)
def test_override_refuses_what_loading_would_refuse(changes, named):
    with pytest.raises(ConfigError, match=named):
        override(load_settings(), **changes)


def test_the_local_services_file_sits_below_the_config_file_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ADCAST_HOME", str(tmp_path))
    monkeypatch.setenv("ADCAST_CONFIG", str(tmp_path / "absent.toml"))
    assert load_settings().kafka.session_timeout_ms == 45_000  # Kafka's default
    write_local_settings(tmp_path)
    kafka = load_settings().kafka
    assert {name: getattr(kafka, name) for name in LOCAL_BROKER_TIMINGS} == LOCAL_BROKER_TIMINGS
    (tmp_path / "adcast.toml").write_text("[kafka]\nsession_timeout_ms = 20000\n")
    monkeypatch.setenv("ADCAST_CONFIG", str(tmp_path / "adcast.toml"))
    assert (load_settings().kafka.session_timeout_ms, load_settings().kafka.heartbeat_interval_ms) == (20_000, 1_000)
    monkeypatch.setenv("ADCAST_KAFKA__SESSION_TIMEOUT_MS", "30000")
    assert load_settings().kafka.session_timeout_ms == 30_000
    remove_local_settings(tmp_path)
    monkeypatch.delenv("ADCAST_KAFKA__SESSION_TIMEOUT_MS")
    assert load_settings().kafka.heartbeat_interval_ms == 3_000
