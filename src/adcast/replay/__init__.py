"""Replay events into a topic, from a data directory or from another topic.

Data directory: profiles and advertisers first, then events in event-time order (stable, so ties
keep file order), keyed by user id, Avro in the Confluent wire format. Events that break the
contract (adcast.core.events.validate_event) or do not encode are skipped and counted.

Topic: one partition range per source partition, either offsets (`start_offset` inclusive,
`end_offset` exclusive) or record timestamps (`start_time` inclusive, `end_time` exclusive, epoch
ms). Without an end, a partition is read up to its end when the replay reaches it. `offsets_for_times`
positions the start; each record's timestamp is then checked as well, so the range is exact even on
a broker whose time index is coarse (the local Tansu answers offset 0 for every timestamp), with
Kafka's meaning: from the first record at or after `start_time` to the first record at or after
`end_time`. Values are copied byte for byte (`live` re-stamps `event_time` through adcast.wire.serde);
records that do not decode or validate go to the dead-letter topic with the stream tier's stage and
reason codes. Partitions are merged by event time (a partition's own order is never changed), so
the output order is deterministic.

Both: keys are user ids (a topic's keys are copied; a record without one gets its user id),
partitioned with murmur2 (the Java client's default), and one idempotent producer keeps each
user's events in order. Pacing is `rate` (events per second) or `speedup`
(X times faster than the original event times; an event older than the one before it goes at once).
`live` re-stamps each event with the wall-clock time at which it is produced: that is how the demo
and benchmarks measure freshness from a historical world.
"""

from adcast.replay.common import (
    Delivered,
    Pacer,
    ReplaySummary,
    TopicRange,
    event_producer,
    expected_versions,
    format_summary,
    parse_time,
)
from adcast.replay.files import replay
from adcast.replay.topic import replay_topic

__all__ = [
    "Delivered",
    "Pacer",
    "ReplaySummary",
    "TopicRange",
    "event_producer",
    "expected_versions",
    "format_summary",
    "parse_time",
    "replay",
    "replay_topic",
]
