"""Prometheus metrics of both tiers and the lookup service. Each worker serves them on
`ADCAST_METRICS_PORT` when set; `adcast serve` on its own port, at /metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_IN = Counter("adcast_events_in_total", "Events consumed by the stream tier.")
DUPLICATES = Counter("adcast_duplicates_dropped_total", "Events dropped as duplicates by event id.")
DEAD_LETTERS = Counter("adcast_dead_letters_total", "Inputs sent to the dead-letter topic.", ["stage", "reason"])
REQUESTS_EMITTED = Counter("adcast_requests_emitted_total", "Prediction requests emitted.", ["reason"])
INGEST_BATCH_SIZE = Histogram(
    "adcast_ingest_batch_size", "Messages per stream-tier batch.", buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000)
)
HISTORIES_WRITTEN = Counter(
    "adcast_histories_written_total", "User histories written to the state table (one changelog record each)."
)
PENDING_USERS = Gauge("adcast_pending_users", "Users waiting for a trigger on this worker.")

BATCH_SIZE = Histogram(
    "adcast_batch_size", "Requests per scored micro-batch.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
)
SUPERSEDED = Counter("adcast_requests_superseded_total", "Requests replaced by a newer one for the same user.")
# The inference tier's own figures carry the store slot it writes (a shadow is metered apart).
INFERENCE_SECONDS = Histogram("adcast_inference_seconds", "Engine time per micro-batch.", ["slot"])
FRESHNESS_SECONDS = Histogram(
    "adcast_freshness_seconds",
    "Newest event time to Redis write.",
    ["slot"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
WRITES = Counter("adcast_store_writes_total", "Redis writes by slot and outcome.", ["slot", "outcome"])
STORE_KEY_ERRORS = Counter(
    "adcast_store_key_errors_total",
    "Redis reads or writes of one key that failed while the rest of their batch went through.",
    ["op", "reason"],
)
TOPICS_CREATED = Counter(
    "adcast_topics_created_total", "Topics a worker found missing and created (the dead-letter topic).", ["topic"]
)
RETRIES = Counter("adcast_retries_total", "Retried operations.", ["operation"])
ENGINE_FAILURES = Counter(
    "adcast_engine_failures_total", "Engine calls that raised or ran past infer.engine_timeout_s.", ["slot", "reason"]
)
ROLLOUT_SKIPPED = Counter(
    "adcast_rollout_requests_skipped_total",
    "Rollout requests for another slot than the worker's (consumed, not scored).",
)

# The lookup service (adcast serve).
LOOKUP_REQUESTS = Counter("adcast_lookup_requests_total", "HTTP lookup service requests.", ["endpoint", "status"])
LOOKUP_SECONDS = Histogram(
    "adcast_lookup_seconds",
    "Time to answer a /v1/affinities request.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
LOOKUP_USERS = Counter("adcast_lookup_users_total", "Users looked up, by whether a prediction was found.", ["result"])

# Both tiers, per assigned partition: the high watermark minus the consumer's position.
CONSUMER_LAG = Gauge(
    "adcast_consumer_lag", "Messages in a partition not yet consumed by this worker.", ["tier", "topic", "partition"]
)


def forget_lag(labels: Iterable[tuple[str, str, str]]) -> None:
    """Drop the lag series of partitions this worker no longer owns (a stale value would lie)."""
    for values in labels:
        with contextlib.suppress(KeyError):  # another worker in this process dropped it already
            CONSUMER_LAG.remove(*values)


def serve(port: int) -> None:
    if port:
        start_http_server(port, addr="0.0.0.0")
