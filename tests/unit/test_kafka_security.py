"""Kafka SASL/TLS and Redis ACL/TLS settings reach every client; secrets never show. No services."""

from __future__ import annotations

import json
import logging
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from adcast.config import load_settings, masked, override, to_env
from adcast.errors import ConfigError
from adcast.kafka import aiokafka_config, confluent_config
from adcast.store.connection import redis_connection_kwargs

SECRETS = ("kafka-s3cret", "k3y-s3cret", "redis-s3cret", "url-s3cret")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate (serving as CA and client certificate) and its encrypted key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + [
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-passout",
            "pass:k3y-s3cret",
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def secure_settings(tls_files: tuple[str, str], **kafka: str):
    cert, key = tls_files
    return load_settings(
        kafka={
            "bootstrap_servers": "k1:9093,k2:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "adcast",
            "sasl_password": "kafka-s3cret",
            "ssl_cafile": cert,
            "ssl_certfile": cert,
            "ssl_keyfile": key,
            "ssl_key_password": "k3y-s3cret",
            **kafka,
        },
        redis={"url": "rediss://app:url-s3cret@cache:6380/0", "username": "app", "password": "redis-s3cret"},
    )


def test_sasl_ssl_with_scram_and_a_client_certificate_reach_both_kafka_clients(tls_files):
    s = secure_settings(tls_files)
    conf = aiokafka_config(s)
    assert conf["security_protocol"] == "SASL_SSL" and conf["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (conf["sasl_plain_username"], conf["sasl_plain_password"]) == ("adcast", "kafka-s3cret")
    context = conf["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs()  # the CA file was loaded
    cert, key = tls_files
    assert confluent_config(s) == {
        "bootstrap.servers": "k1:9093,k2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "adcast",
        "sasl.password": "kafka-s3cret",
        "ssl.ca.location": cert,
        "ssl.certificate.location": cert,
        "ssl.key.location": key,
        "ssl.key.password": "k3y-s3cret",
    }


def test_tls_alone_uses_the_system_cas_and_plaintext_has_no_tls():
    conf = aiokafka_config(load_settings(kafka={"security_protocol": "ssl"}))
    assert conf["security_protocol"] == "SSL" and isinstance(conf["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in conf
    plain = aiokafka_config(load_settings())
    assert plain == {"bootstrap_servers": "127.0.0.1:19092", "security_protocol": "PLAINTEXT"}
    assert confluent_config(load_settings()) == {
        "bootstrap.servers": "127.0.0.1:19092",
        "security.protocol": "PLAINTEXT",
    }


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ({"security_protocol": "TLS"}, "is not one of PLAINTEXT, SSL"),
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p"},
            "needs ADCAST_KAFKA__SASL_MECH",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u", "sasl_password": "p"},
            "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        ),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}, "needs ADCAST_KAFKA__SASL_USERNAME"),
        ({"sasl_mechanism": "PLAIN"}, "use SASL_SSL"),
        ({"ssl_cafile": "/etc/ca.pem"}, "ADCAST_KAFKA__SSL_CAFILE set but the protocol is PLAINTEXT"),
        ({"security_protocol": "SSL", "ssl_certfile": "/etc/c.pem"}, "set both ADCAST_KAFKA__SSL_CERTFILE"),
        ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "cannot load the Kafka TLS files"),
    ],
)
def test_inconsistent_kafka_security_settings_are_refused_with_what_to_set(kafka, message):
    s = load_settings(kafka=kafka)
    with pytest.raises(ConfigError, match=message):
        aiokafka_config(s)
    if "/nonexistent/" not in str(kafka):  # librdkafka reads the files itself, later
        with pytest.raises(ConfigError, match=message):
            confluent_config(s)


def test_a_wrong_key_password_is_a_config_error(tls_files):
    with pytest.raises(ConfigError, match="cannot load the Kafka TLS files"):
        aiokafka_config(secure_settings(tls_files, ssl_key_password="wrong"))


def test_redis_credentials_and_tls_files_fit_redis_py(tls_files):
    import redis
    import redis.asyncio

    cert, key = tls_files
    s = load_settings(redis={"url": "rediss://cache:6380/0", "username": "app", "password": "pw", "ssl_ca_certs": cert})
    kwargs = redis_connection_kwargs(s.redis)
    assert kwargs == {"username": "app", "password": "pw", "ssl_ca_certs": cert}
    # redis-py accepts exactly these names for a rediss:// URL (no connection is made here).
    for client in (redis.Redis.from_url(s.redis.url, **kwargs), redis.asyncio.Redis.from_url(s.redis.url, **kwargs)):
        assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == cert
    assert redis_connection_kwargs(override(s.redis, ssl_certfile=cert, ssl_keyfile=key))["ssl_keyfile"] == key
    assert redis_connection_kwargs(load_settings().redis) == {}


def test_redis_tls_files_without_a_rediss_url_are_refused():
    s = load_settings(redis={"url": "redis://:url-s3cret@cache:6379/0", "ssl_ca_certs": "/etc/ca.pem"})
    with pytest.raises(ConfigError, match="not rediss://") as info:
        redis_connection_kwargs(s.redis)
    assert "url-s3cret" not in str(info.value)
    s = load_settings(redis={"url": "rediss://cache:6379/0", "ssl_keyfile": "/etc/k.pem"})
    with pytest.raises(ConfigError, match="set both ADCAST_REDIS__SSL_CERTFILE"):
        redis_connection_kwargs(s.redis)


def test_secrets_never_show_in_repr_logs_or_masked_config(tls_files, caplog):
    s = secure_settings(tls_files)
    log = logging.getLogger("adcast.test")
    with caplog.at_level(logging.INFO):
        log.info("settings %s", s)
        log.info("settings %r kafka=%s redis=%r", s, s.kafka, s.redis)
    shown = [repr(s), str(s), json.dumps(masked(s)), caplog.text]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text
    assert "**********" in json.dumps(masked(s))


def test_to_env_is_the_one_place_secrets_are_revealed_for_the_workers_it_starts(tls_files, monkeypatch):
    # Workers run as subprocesses and get their settings through the environment: they need the
    # real values. to_env's result goes to subprocess env only, never to a log.
    s = secure_settings(tls_files)
    env = to_env(s)
    assert env["ADCAST_KAFKA__SASL_PASSWORD"] == "kafka-s3cret" and env["ADCAST_REDIS__PASSWORD"] == "redis-s3cret"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings() == s


def test_adcast_config_prints_settings_with_every_secret_masked(tls_files, monkeypatch):
    for name, value in to_env(secure_settings(tls_files)).items():
        monkeypatch.setenv(name, value)
    out = subprocess.run([sys.executable, "-m", "adcast.cli", "config"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "SCRAM-SHA-512" in out.stdout and Path(tls_files[0]).name in out.stdout
    for secret in SECRETS:
        assert secret not in out.stdout + out.stderr
