"""Kafka for both tiers and the tools: client configuration (clients) and topics (topics)."""

from adcast.kafka.clients import aiokafka_config, check_security, confluent_config, ssl_context
from adcast.kafka.topics import KEYED_TOPICS, create_topics, ensure_dead_letter_topic, require_topics, topic_specs

__all__ = [
    "KEYED_TOPICS",
    "aiokafka_config",
    "check_security",
    "confluent_config",
    "create_topics",
    "ensure_dead_letter_topic",
    "require_topics",
    "ssl_context",
    "topic_specs",
]
