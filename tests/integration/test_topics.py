"""adcast's topics on the real broker: made as topic_specs says, and the dead-letter topic made
again by the workers when it is missing."""

import pytest
from confluent_kafka.admin import AdminClient

from adcast import metrics
from adcast.kafka import create_topics, ensure_dead_letter_topic, topic_specs

pytestmark = pytest.mark.integration


def _partitions(settings) -> dict[str, int]:
    topics = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers}).list_topics(timeout=10).topics
    return {name: len(t.partitions) for name, t in topics.items() if name.startswith(settings.topics.prefix)}


def test_a_missing_dead_letter_topic_is_made_as_adcast_up_makes_it(settings, broker):
    create_topics(settings, only=["events", "requests"])
    dead_letters = settings.topics.name("dead_letters")
    assert dead_letters not in _partitions(settings)
    before = metrics.TOPICS_CREATED.labels("dead_letters")._value.get()

    ensure_dead_letter_topic(settings)
    ensure_dead_letter_topic(settings)  # present now: nothing more to do

    assert _partitions(settings)[dead_letters] == topic_specs(settings)[dead_letters][0] == 1
    assert metrics.TOPICS_CREATED.labels("dead_letters")._value.get() == before + 1
    assert set(_partitions(settings)) == {settings.topics.name(t) for t in ("events", "requests", "dead_letters")}
