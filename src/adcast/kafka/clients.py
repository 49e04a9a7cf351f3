"""Kafka client configuration from adcast's settings, for librdkafka (confluent-kafka) and aiokafka
alike: bootstrap servers, SASL and TLS, checked once with an error that says what to set."""

from __future__ import annotations

import ssl
from typing import Any

from adcast.config import KafkaSettings, Settings
from adcast.errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# What every client of both tiers (aiokafka, librdkafka, Faust) supports with a username and password.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def check_security(k: KafkaSettings) -> None:
    """Refuse settings the clients would silently ignore or fail on later with a vaguer error."""
    protocol = k.security_protocol.upper()
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"ADCAST_KAFKA__SECURITY_PROTOCOL={k.security_protocol!r} is not one of {', '.join(PROTOCOLS)}"
        )
    if protocol.startswith("SASL"):
        if (k.sasl_mechanism or "").upper() not in SASL_MECHANISMS:
            raise ConfigError(
                f"{protocol} needs ADCAST_KAFKA__SASL_MECHANISM, one of {', '.join(SASL_MECHANISMS)} "
                f"(got {k.sasl_mechanism!r})"
            )
        if not k.sasl_username or k.sasl_password is None:
            raise ConfigError(f"{protocol} needs ADCAST_KAFKA__SASL_USERNAME and ADCAST_KAFKA__SASL_PASSWORD")
    elif k.sasl_mechanism:
        raise ConfigError(
            f"ADCAST_KAFKA__SASL_MECHANISM is set but the protocol is {protocol}: use SASL_SSL (or SASL_PLAINTEXT)"
        )
    files = [n for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(k, n)]
    if files and not protocol.endswith("SSL"):
        # The clients would connect in clear text; a CA or certificate means TLS was intended.
        raise ConfigError(
            f"{', '.join(f'ADCAST_KAFKA__{n.upper()}' for n in files)} set but the protocol is {protocol}: "
            "use SSL or SASL_SSL"
        )
    if bool(k.ssl_certfile) != bool(k.ssl_keyfile):
        raise ConfigError("set both ADCAST_KAFKA__SSL_CERTFILE and ADCAST_KAFKA__SSL_KEYFILE for a client certificate")


def ssl_context(k: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of the Python clients (aiokafka, Faust), or None without TLS."""
    check_security(k)
    if not k.security_protocol.upper().endswith("SSL"):
        return None
    try:
        context = ssl.create_default_context(cafile=k.ssl_cafile)
        if k.ssl_certfile:
            password = k.ssl_key_password.get_secret_value() if k.ssl_key_password else None
            context.load_cert_chain(k.ssl_certfile, k.ssl_keyfile, password)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the Kafka TLS files (ADCAST_KAFKA__SSL_*): {exc}") from exc
    return context


def confluent_config(settings: Settings) -> dict[str, Any]:
    k = settings.kafka
    check_security(k)
    conf: dict[str, Any] = {"bootstrap.servers": k.bootstrap_servers, "security.protocol": k.security_protocol.upper()}
    if k.sasl_mechanism:
        conf["sasl.mechanism"] = k.sasl_mechanism.upper()
        conf["sasl.username"] = k.sasl_username or ""
        conf["sasl.password"] = k.sasl_password.get_secret_value() if k.sasl_password else ""
    if k.ssl_cafile:
        conf["ssl.ca.location"] = k.ssl_cafile
    if k.ssl_certfile:
        conf["ssl.certificate.location"] = k.ssl_certfile
        conf["ssl.key.location"] = k.ssl_keyfile
    if k.ssl_key_password:
        conf["ssl.key.password"] = k.ssl_key_password.get_secret_value()
    return conf


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    k = settings.kafka
    conf: dict[str, Any] = {"bootstrap_servers": k.bootstrap_servers, "security_protocol": k.security_protocol.upper()}
    context = ssl_context(k)
    if context is not None:
        conf["ssl_context"] = context
    if k.sasl_mechanism:
        # aiokafka names them "plain" but uses them for the SCRAM mechanisms too.
        conf["sasl_mechanism"] = k.sasl_mechanism.upper()
        conf["sasl_plain_username"] = k.sasl_username
        conf["sasl_plain_password"] = k.sasl_password.get_secret_value() if k.sasl_password else None
    return conf
