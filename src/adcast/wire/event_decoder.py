"""The stream tier's hot read: an EngagementEvent message decoded by hand.

fastavro's schemaless_reader costs ~13 us per call on this schema, almost all of it per-call
set-up, not decoding: most of what the stream tier spent on an event beyond Faust itself. This
reads the nine fields of schemas/engagement_event.avsc directly (~7 us on a 2-core AMD EPYC, where
fastavro took ~13), for any message whose writer schema is that one, compared as parsed schemas
whatever the id. It only ever answers for input it fully understands: anything else (another
writer schema, a bad union branch, a length past the end, invalid UTF-8, trailing bytes) is
handed to `serde.decode`, so the result, or the SerdeError and its dead-letter reason, is exactly
fastavro's (a test holds the two equal on random and on mangled messages).
"""

from __future__ import annotations

from typing import Any

from adcast.wire import serde

# The fields in schema order, by wire type.
_STRING, _LONG, _OPTIONAL = 0, 1, 2
_FIELDS = (
    ("event_id", _STRING),
    ("user_id", _STRING),
    ("event_time", _LONG),
    ("event_type", _STRING),
    ("advertiser_id", _OPTIONAL),
    ("item_id", _OPTIONAL),
    ("category", _OPTIONAL),
    ("brand", _OPTIONAL),
    ("text", _OPTIONAL),
)


# Headers whose writer schema is exactly adcast's (any id: a registry may assign several); serde
# adds one when it first decodes a message under it.
_NATIVE = serde.native_headers(serde.EVENT)


def decode_event(data: bytes | None) -> dict[str, Any]:
    """`serde.decode(serde.EVENT, data)`, faster: the same record or the same SerdeError."""
    if not data or data[:5] not in _NATIVE:
        return serde.decode(serde.EVENT, data)
    # One flat loop: on this path a helper call per field would cost as much as the decoding.
    record: dict[str, Any] = {}
    pos, size = 5, len(data)
    try:
        for name, kind in _FIELDS:
            if kind == _OPTIONAL:
                branch = data[pos]
                pos += 1
                if branch == 0:
                    record[name] = None
                    continue
                if branch != 2:  # union index 1, zig-zag encoded
                    return serde.decode(serde.EVENT, data)
            b = data[pos]  # an Avro long: base-128 varint of the zig-zag value
            pos += 1
            n, shift = b & 0x7F, 7
            while b >= 0x80:
                b = data[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
            if shift > 63:
                return serde.decode(serde.EVENT, data)
            n = (n >> 1) ^ -(n & 1)
            if kind == _LONG:
                record[name] = n
                continue
            end = pos + n
            if n < 0 or end > size:
                return serde.decode(serde.EVENT, data)
            record[name] = data[pos:end].decode()
            pos = end
    except (IndexError, UnicodeDecodeError):
        return serde.decode(serde.EVENT, data)
    if pos != size:
        return serde.decode(serde.EVENT, data)
    return record
