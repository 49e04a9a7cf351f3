"""Avro serde in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, body.

Where a schema id comes from is the active `SchemaSource`. By default it is the file registry,
schemas/registry.json, whose ids are fixed: a record may have several versions, each with its own
id, and adcast writes the newest (the highest id of its name). With a Schema Registry configured
(adcast.wire.schema_registry), writer schemas are looked up by id there and adcast writes under
the ids the registry assigns. Either way a record is read into adcast's own newest version of it
by Avro schema resolution. Every decoding failure raises SerdeError with a short reason code (the
DLQ reason), never a bare fastavro exception.
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
from typing import Any, Protocol

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form

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
    canonical: str  # Avro's parsing canonical form: equal forms read the same bytes the same way


def parsed_schema(schema_id: int, parsed: Any) -> Schema:
    """A Schema of a record schema fastavro has parsed."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise SerdeError("not_a_record", f"schema id {schema_id} is not an Avro record")
    return Schema(schema_id, parsed["name"], parsed, to_parsing_canonical_form(parsed))


@dataclass(frozen=True, slots=True)
class Registry:
    by_name: dict[str, Schema]  # the newest version of each record: what adcast writes and reads into
    by_id: dict[int, Schema]  # every version
    text: dict[str, str]  # the newest version's schema file, as written (what a registry is given)


@cache
def registry() -> Registry:
    folder = schema_dir()
    entries = sorted(json.loads((folder / "registry.json").read_text())["schemas"], key=lambda e: e["id"])
    newest = {e["name"]: e["id"] for e in entries}
    named: dict[str, Any] = {}
    by_id: dict[int, Schema] = {}
    text: dict[str, str] = {}
    # Parse in id order: a schema may reference named types an earlier one defined (an older
    # version's too), and a newer version's definitions replace an older one's.
    for entry in entries:
        text[entry["name"]] = (folder / entry["file"]).read_text()
        raw = json.loads(text[entry["name"]])
        parsed = fastavro.parse_schema(raw, named_schemas=named)
        by_id[entry["id"]] = parsed_schema(entry["id"], parsed)
    return Registry({name: by_id[i] for name, i in newest.items()}, by_id, text)


def schema_text(name: str) -> str:
    """The Avro schema (JSON) adcast writes record `name` with."""
    return registry().text[name]


class SchemaSource(Protocol):
    """Where schema ids come from: the writer schema of an id, and the id adcast writes a record under."""

    where: str  # for messages: "schemas/registry.json", or the registry's URL

    def writer(self, schema_id: int) -> Schema | None:
        """The schema written under `schema_id`; None when the source has no such id. Raises
        SerdeError("schema_registry_unavailable") when it cannot tell."""

    def write_id(self, name: str) -> int:
        """The id adcast writes record `name` under (its newest version)."""


class FileSchemas:
    """The embedded default: schemas/registry.json's fixed ids."""

    where = "schemas/registry.json"

    def writer(self, schema_id: int) -> Schema | None:
        return registry().by_id.get(schema_id)

    def write_id(self, name: str) -> int:
        return registry().by_name[name].id


_source: SchemaSource = FileSchemas()
# Per record name, the headers whose writer schema is adcast's own (same parsing canonical form):
# the hand-written decoder reads those itself. Sets mutated in place, so holders keep them.
_native: dict[str, set[bytes]] = {}


def use(source: SchemaSource) -> None:
    """Make `source` the one every encode and decode of this process uses."""
    global _source
    _source = source
    header.cache_clear()
    for headers in _native.values():
        headers.clear()


def native_headers(name: str) -> set[bytes]:
    """The live set of 5-byte headers known to carry exactly adcast's schema of `name`; it grows as
    `decode` meets new writer ids."""
    return _native.setdefault(name, set())


@cache  # the stream tier's hand-written codecs ask for it on every message
def header(name: str) -> bytes:
    """The 5-byte wire-format header of schema `name`."""
    return _HEADER.pack(MAGIC, _source.write_id(name))


def encode(name: str, record: dict[str, Any]) -> bytes:
    schema = registry().by_name[name]
    buf = io.BytesIO()
    buf.write(header(name))
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
    schema = _source.writer(schema_id)
    if schema is None:
        raise SerdeError("unknown_schema_id", f"schema id {schema_id} is not in {_source.where}")
    if schema.name != name:
        raise SerdeError("wrong_schema", f"schema id {schema_id} is {schema.name}, expected {name}")
    newest = registry().by_name[name]
    same = schema is newest or schema.canonical == newest.canonical
    if same:
        native_headers(name).add(bytes(data[: _HEADER.size]))
    buf = io.BytesIO(data)
    buf.seek(_HEADER.size)
    try:
        record = fastavro.schemaless_reader(buf, schema.parsed, None if same else newest.parsed)
    except SchemaResolutionError as exc:
        raise SerdeError("incompatible_schema", f"schema id {schema_id} cannot be read as {name}: {exc}") from exc
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
