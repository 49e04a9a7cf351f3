"""Kafka client settings and topic administration, shared by both tiers and the tools."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from adcast import metrics
from adcast.config import KafkaSettings, Settings
from adcast.errors import ConfigError, ServiceError

log = logging.getLogger(__name__)

# Topics keyed by user share the partition count so one user's data stays on one worker: the
# stream tier reads events and profiles as co-partitioned inputs of one table.
KEYED_TOPICS = ("events", "requests", "affinities")


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


def topic_specs(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """name -> (partitions, config) for every topic adcast owns."""
    t = settings.topics
    specs: dict[str, tuple[int, dict[str, str]]] = {}
    for topic in KEYED_TOPICS:
        specs[t.name(topic)] = (t.partitions, {})
    specs[t.name("profiles")] = (t.partitions, {"cleanup.policy": "compact"})
    specs[t.name("advertisers")] = (1, {"cleanup.policy": "compact"})
    specs[t.name("dead_letters")] = (1, {})
    # Co-partitioned with the events: a tick on partition p wakes the users of partition p.
    specs[t.name("ticks")] = (t.partitions, {"retention.ms": str(3600 * 1000)})
    return specs


def _existing_topics(settings: Settings, timeout_s: float) -> set[str]:
    from confluent_kafka.admin import AdminClient

    # librdkafka logs every failed connection attempt; the error raised below says it once.
    admin = AdminClient({**confluent_config(settings), "log_level": 2})
    try:
        return set(admin.list_topics(timeout=timeout_s).topics)
    except Exception as exc:
        raise ServiceError(
            f"cannot reach Kafka at {settings.kafka.bootstrap_servers} ({exc}); start the local broker with "
            "`adcast up` or set ADCAST_KAFKA__BOOTSTRAP_SERVERS"
        ) from exc


def require_topics(settings: Settings, topics: list[str], timeout_s: float = 10.0) -> None:
    """Fail fast, with what to do, when the broker is down or a topic is missing."""
    missing = [
        name for name in (settings.topics.name(t) for t in topics) if name not in _existing_topics(settings, timeout_s)
    ]
    if missing:
        raise ServiceError(
            f"missing topics {missing} at {settings.kafka.bootstrap_servers}: create them with "
            "`adcast up` (local broker) or your cluster's tooling (see README, Contracts)"
        )


def create_topics(settings: Settings, timeout_s: float = 30.0, only: list[str] | None = None) -> list[str]:
    """Create adcast's topics that do not exist yet (`only`: of these, by setting name, e.g.
    ["dead_letters"]); returns the names created."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({**confluent_config(settings), "log_level": 2})
    existing = _existing_topics(settings, timeout_s)
    names = None if only is None else {settings.topics.name(t) for t in only}
    wanted = [
        NewTopic(name, num_partitions=n, replication_factor=settings.topics.replication_factor, config=cfg)
        for name, (n, cfg) in topic_specs(settings).items()
        if name not in existing and (names is None or name in names)
    ]
    if not wanted:
        return []
    futures = admin.create_topics(wanted, request_timeout=timeout_s)
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                continue
            raise ServiceError(f"could not create topic {name}: {exc}") from exc
    log.info("topics created=%s", created)
    return created


def ensure_dead_letter_topic(settings: Settings) -> None:
    """Create the dead-letter topic if it is missing (as Kafka Connect does for its own), so that
    a dead letter is never lost to a topic that was deleted or never made. Called before each
    batch of dead letters: they are rare, and a producer does not notice a deleted topic by itself.
    A failure is logged, not raised: the send that follows fails loudly if the topic is still gone."""
    try:
        created = create_topics(settings, timeout_s=10.0, only=["dead_letters"])
    except ServiceError as exc:
        log.error("the dead-letter topic is missing and could not be created: %s", exc)
        return
    if created:
        metrics.TOPICS_CREATED.labels("dead_letters").inc()
        log.warning("the dead-letter topic was missing: created %s", created[0])
