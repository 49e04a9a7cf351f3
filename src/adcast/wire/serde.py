"""Avro serde in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, body.

Schema ids are fixed in schemas/registry.json so any Schema Registry client can read the topics
once the same ids are registered. A record may have several versions, each with its own id: adcast
writes the newest (the highest id of its name) and reads an older one into the newest by Avro
schema resolution. Every decoding failure raises SerdeError with a short reason code (the DLQ
reason), never a bare fastavro exception.
"""

from __future__ import annotations

import io
import json
import os
import struct
from dataclasses import dataclass
from functools import cache
from importlib import resources
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
    """The schemas: $ADCAST_SCHEMA_DIR, else the copy installed with the package (package data;
    in a checkout, a link to the repository's schemas/ folder)."""
    env = os.environ.get("ADCAST_SCHEMA_DIR")
    path = Path(env) if env else Path(str(resources.files("adcast").joinpath("schemas")))
    if not (path / "registry.json").is_file():
        raise ConfigError(f"schemas not found in {path}; set ADCAST_SCHEMA_DIR to adcast's schemas/ folder")
    return path


@dataclass(frozen=True, slots=True)
class Schema:
    id: int
    name: str
    parsed: Any


@dataclass(frozen=True, slots=True)
class Registry:
    by_name: dict[str, Schema]  # the newest version of each record: what adcast writes and reads into
    by_id: dict[int, Schema]  # every version


@cache
def registry() -> Registry:
    folder = schema_dir()
    entries = sorted(json.loads((folder / "registry.json").read_text())["schemas"], key=lambda e: e["id"])
    newest = {e["name"]: e["id"] for e in entries}
    named: dict[str, Any] = {}
    by_id: dict[int, Schema] = {}
    # Parse in id order: a schema may reference named types an earlier one defined (an older
    # version's too), and a newer version's definitions replace an older one's.
    for entry in entries:
        raw = json.loads((folder / entry["file"]).read_text())
        parsed = fastavro.parse_schema(raw, named_schemas=named)
        by_id[entry["id"]] = Schema(entry["id"], entry["name"], parsed)
    return Registry({name: by_id[i] for name, i in newest.items()}, by_id)


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
    newest = reg.by_name[name]
    buf = io.BytesIO(data)
    buf.seek(_HEADER.size)
    try:
        record = fastavro.schemaless_reader(buf, schema.parsed, None if newest is schema else newest.parsed)
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


DEAD_LETTER_MAX_KEY_BYTES = 1024  # keys are user ids (at most 128 characters): more is garbage
DEAD_LETTER_MAX_DETAIL_CHARS = 2048


def dead_letter(
    message: Any, stage: str, reason: str, detail: str, now_ms: int, max_bytes: int
) -> tuple[bytes | None, bytes]:
    """(key, value) of the DeadLetter for a consumed message: anything with value, key, topic,
    partition and offset (an aiokafka record or a Faust message). The raw bytes travel unchanged
    unless the letter would not fit a produce request of `max_bytes`: then raw keeps its first
    bytes, the key its first DEAD_LETTER_MAX_KEY_BYTES, and `truncated` says so (a letter that
    cannot be sent would stop the worker on the same input after every restart)."""
    raw, key = message.value or b"", message.key
    text = f"{reason}: {detail}" if detail else reason
    if len(text) > DEAD_LETTER_MAX_DETAIL_CHARS:
        text = text[:DEAD_LETTER_MAX_DETAIL_CHARS] + "..."
    # The key travels twice (record and message key); half the request for raw leaves room for
    # both, the other fields and Kafka's record overhead.
    cut_key = key[:DEAD_LETTER_MAX_KEY_BYTES] if key is not None else None
    cut_raw = raw[: max(0, max_bytes // 2)]
    record = {
        "raw": cut_raw,
        "key": cut_key,
        "source_topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "stage": stage,
        "reason": text,
        "failed_at": now_ms,
        "truncated": len(cut_raw) < len(raw) or cut_key != key,
        "raw_size": len(raw),
        "key_size": -1 if key is None else len(key),
    }
    return cut_key, encode(DEAD_LETTER, record)
