"""adcast's topics: what each is (partitions, configuration), and creating the missing ones."""

from __future__ import annotations

import logging

from adcast import metrics
from adcast.config import Settings
from adcast.errors import ServiceError
from adcast.kafka.clients import confluent_config

log = logging.getLogger(__name__)

# Topics keyed by user share the partition count so one user's data stays on one worker: the
# stream tier reads events and profiles as co-partitioned inputs of one table.
KEYED_TOPICS = ("events", "requests", "affinities", "rollout")


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
