"""Avro serde in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, body.

Schema ids are fixed in schemas/registry.json so any Schema Registry client can read the topics
once the same ids are registered. Every decoding failure raises SerdeError with a short reason
code (the DLQ reason), never a bare fastavro exception.
"""

from __future__ import annotations

import io
import json
import os
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from adcast.errors import ConfigError, SerdeError

MAGIC = 0
_HEADER = struct.Struct(">bI")

EVENT = "adcast.EngagementEvent"
PROFILE = "adcast.UserProfile"
ADVERTISER = "adcast.Advertiser"
REQUEST = "adcast.PredictionRequest"
AFFINITY = "adcast.AffinityUpdate"
DEAD_LETTER = "adcast.DeadLetter"
HISTORY = "adcast.UserHistory"


def schema_dir() -> Path:
    """The schemas/ folder: $ADCAST_SCHEMA_DIR, else the one beside the source tree."""
    env = os.environ.get("ADCAST_SCHEMA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "schemas"
    if not (path / "registry.json").is_file():
        raise ConfigError(f"schemas not found in {path}; set ADCAST_SCHEMA_DIR to the schemas/ folder")
    return path


@dataclass(frozen=True, slots=True)
class Schema:
    id: int
    name: str
    parsed: Any


@dataclass(frozen=True, slots=True)
class Registry:
    by_name: dict[str, Schema]
    by_id: dict[int, Schema]


@cache
def registry() -> Registry:
    folder = schema_dir()
    entries = json.loads((folder / "registry.json").read_text())["schemas"]
    named: dict[str, Any] = {}
    by_name: dict[str, Schema] = {}
    # Parse in id order: later schemas may reference named types defined by earlier ones.
    for entry in sorted(entries, key=lambda e: e["id"]):
        raw = json.loads((folder / entry["file"]).read_text())
        parsed = fastavro.parse_schema(raw, named_schemas=named)
        by_name[entry["name"]] = Schema(entry["id"], entry["name"], parsed)
    return Registry(by_name, {s.id: s for s in by_name.values()})


@cache  # the stream tier's hand-written codecs ask for it on every message
def header(name: str) -> bytes:
    """The 5-byte wire-format header of schema `name`."""
    return _HEADER.pack(MAGIC, registry().by_name[name].id)


def encode(name: str, record: dict[str, Any]) -> bytes:
    schema = registry().by_name[name]
    buf = io.BytesIO()
    buf.write(_HEADER.pack(MAGIC, schema.id))
    try:
        fastavro.schemaless_writer(buf, schema.parsed, record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SerdeError("encode_failed", f"{name}: {exc}") from exc
    return buf.getvalue()


def decode(name: str, data: bytes | None) -> dict[str, Any]:
    """Decode one message value that must carry schema `name`."""
    if not data:
        raise SerdeError("empty_value", "message has no value")
    if len(data) < _HEADER.size:
        raise SerdeError("truncated", f"{len(data)} bytes is shorter than the 5-byte header")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SerdeError("bad_magic", f"magic byte {magic}, expected {MAGIC}")
    reg = registry()
    schema = reg.by_id.get(schema_id)
    if schema is None:
        raise SerdeError("unknown_schema_id", f"schema id {schema_id} is not in schemas/registry.json")
    if schema.name != name:
        raise SerdeError("wrong_schema", f"schema id {schema_id} is {schema.name}, expected {name}")
    buf = io.BytesIO(data)
    buf.seek(_HEADER.size)
    try:
        record = fastavro.schemaless_reader(buf, schema.parsed, None)
    except EOFError as exc:
        raise SerdeError("truncated", f"{name} body ends early") from exc
    except Exception as exc:  # fastavro raises many types on garbage; map them all here
        if buf.tell() >= len(data):  # ran off the end inside a number: IndexError, not EOFError
            raise SerdeError("truncated", f"{name} body ends early") from exc
        raise SerdeError("corrupt_body", f"{name}: {type(exc).__name__}: {exc}") from exc
    if buf.tell() != len(data):
        raise SerdeError("trailing_bytes", f"{len(data) - buf.tell()} bytes after the {name} body")
    if not isinstance(record, dict):
        raise SerdeError("corrupt_body", f"{name} did not decode to a record")
    return record


def encode_dead_letter(message: Any, stage: str, reason: str, detail: str, now_ms: int) -> bytes:
    """A DeadLetter for a consumed message: anything with value, key, topic, partition and offset
    (an aiokafka record or a Faust message). The raw bytes travel unchanged."""
    record = {
        "raw": message.value or b"",
        "key": message.key,
        "source_topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "stage": stage,
        "reason": f"{reason}: {detail}" if detail else reason,
        "failed_at": now_ms,
    }
    return encode(DEAD_LETTER, record)
