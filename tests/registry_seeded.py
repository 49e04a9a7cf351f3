"""Run an adcast worker whose mock:// Schema Registry is seeded first.

confluent-kafka's in-memory registry lives inside one client object, so each process has its
own. Seeding every process with the same registrations in the same order (adcast's own subjects
first, then the producers') gives every process the same ids, as one shared registry would.

    python tests/registry_seeded.py SEED_JSON TIER [ARGS...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def seed(settings, registrations: list[list[str]]) -> list[int]:
    """Register each (subject, schema JSON) in order; returns the ids."""
    from confluent_kafka.schema_registry import Schema

    from adcast.wire.schema_registry import registry_client

    client = registry_client(settings.schema_registry)
    return [int(client.register_schema(subject, Schema(text, "AVRO"))) for subject, text in registrations]


if __name__ == "__main__":
    from adcast.cli import main
    from adcast.config import load_settings

    seed(load_settings(), json.loads(Path(sys.argv[1]).read_text()))
    sys.exit(main(sys.argv[2:]))
