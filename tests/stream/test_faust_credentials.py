"""The Faust app gets the same Kafka SASL/TLS settings as the other clients. Settings only, no broker."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from adcast.config import load_settings
from adcast.errors import ConfigError
from adcast.kafka import aiokafka_config
from stream.app import faust_app
from stream.transport import broker_credentials


@pytest.fixture(scope="module")
def cafile(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(folder / "key.pem"), "-out", str(folder / "ca.pem"), "-days", "1", "-subj", "/CN=ca"],
        check=True,
        capture_output=True,
    )
    return str(folder / "ca.pem")


def settings(tmp_path, **kafka):
    return load_settings(stream={"data_dir": str(tmp_path / "data")}, kafka=kafka)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_becomes_faust_sasl_credentials_equal_to_the_aiokafka_settings(tmp_path, cafile, mechanism):
    s = settings(
        tmp_path,
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,
        sasl_username="adcast",
        sasl_password="kafka-s3cret",
        ssl_cafile=cafile,
    )
    creds = broker_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert "kafka-s3cret" not in repr(creds)
    # What Faust hands aiokafka equals what the inference tier's clients get.
    faust_auth = dict(credentials_to_aiokafka_auth(creds))
    ours = aiokafka_config(s)
    ours.pop("bootstrap_servers")
    faust_context, our_context = faust_auth.pop("ssl_context"), ours.pop("ssl_context")
    assert (
        faust_auth
        == ours
        == {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": mechanism,
            "sasl_plain_username": "adcast",
            "sasl_plain_password": "kafka-s3cret",
        }
    )
    for context in (faust_context, our_context):
        assert context.verify_mode == ssl.CERT_REQUIRED and [c["subject"] for c in context.get_ca_certs()] == [
            ((("commonName", "ca"),),)
        ]


def test_the_app_is_built_with_the_credentials(tmp_path, cafile):
    app = faust_app(settings(tmp_path, security_protocol="SSL", ssl_cafile=cafile))
    creds = app.conf.broker_credentials
    assert isinstance(creds, faust.SSLCredentials) and creds.context.get_ca_certs()
    assert credentials_to_aiokafka_auth(creds)["security_protocol"] == "SSL"
    sasl = faust_app(
        settings(
            tmp_path, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p"
        )
    )
    assert credentials_to_aiokafka_auth(sasl.conf.broker_credentials) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
        "ssl_context": None,
    }
    assert faust_app(settings(tmp_path)).conf.broker_credentials is None  # PLAINTEXT


def test_inconsistent_settings_stop_the_app_before_it_starts(tmp_path):
    with pytest.raises(ConfigError, match="needs ADCAST_KAFKA__SASL_MECHANISM"):
        faust_app(settings(tmp_path, security_protocol="SASL_SSL", sasl_username="u", sasl_password="p"))
