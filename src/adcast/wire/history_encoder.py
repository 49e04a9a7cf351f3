"""What the stream tier writes in Avro, by hand: its state (adcast.UserHistory) and the prediction
requests it emits, byte for byte what fastavro writes for schemas/user_history.avsc and
schemas/prediction_request.avsc (tests hold them equal on random values).

Why not fastavro: the stream tier writes a changed history once per batch, and fastavro spends
about 5 us per history event on it, re-encoding events that never change. Here each history event
is encoded once and its bytes reused (a history event is immutable), so a write costs little
more than the few fields that do change. A request carries the same events as the history it was
taken from, encoded in the same batch: it reuses that history's encoded events whole. Reading
stays with fastavro (adcast.wire.serde): reads are rare, the stream tier keeps decoded histories in
memory.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from adcast.core.history import HistoryEvent, UserHistory
from adcast.core.requests import PredictionRequest
from adcast.wire import serde

_DOUBLE = struct.Struct("<d")
_NULL = b"\x00"  # union branch 0 of ["null", "string"]; also the end of an array or map
_EVENT_CACHE_MAX = 1_000_000
# id(event) -> (event, its bytes). Keyed by identity, not by value: a HistoryEvent's own hash is
# a Python-level call over six fields, several times the cost of the lookup. Holding the event
# in the entry keeps its id from being reused while the entry lives.
_event_bytes: dict[int, tuple[HistoryEvent, bytes]] = {}
# Zig-zag varints already written, of the small numbers (lengths, counts, flags): most fields.
_varints: dict[int, bytes] = {}
_VARINTS_MAX = 200_000
# The rest are mostly epoch-millisecond timestamps, too many to keep: a large value's low 28 bits
# are four continued base-128 digits, two per entry of this table, and the digits above them
# change only every few days, so they are kept.
_LOW14 = [bytes(((i & 0x7F) | 0x80, (i >> 7) | 0x80)) for i in range(1 << 14)]
_high_digits: dict[int, bytes] = {}
# user id -> (its history's events when last encoded, the encoded array items). Many writes of a
# history leave its events as they were (impressions, triggers): comparing the tuples (identity
# first, then value: equal events encode equally) costs far less than joining the bytes again.
_event_blocks: dict[str, tuple[tuple[HistoryEvent, ...], bytes]] = {}
_BLOCKS_MAX = 50_000  # as many users as the processor keeps decoded, by default


def _varint(z: int) -> bytes:
    """Base-128 varint of a non-negative number, low digits first."""
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _long(n: int) -> bytes:
    """Avro int/long: zig-zag, then base-128 varint."""
    done = _varints.get(n)
    if done is not None:
        return done
    z = (n << 1) ^ (n >> 63)
    if z >> 28:
        high = _high_digits.get(z >> 28)
        if high is None:
            if len(_high_digits) >= _VARINTS_MAX:
                _high_digits.clear()
            high = _high_digits[z >> 28] = _varint(z >> 28)
        return _LOW14[z & 0x3FFF] + _LOW14[(z >> 14) & 0x3FFF] + high
    if len(_varints) >= _VARINTS_MAX:
        _varints.clear()
    done = _varints[n] = _varint(z)
    return done


def _string(s: str) -> bytes:
    b = s.encode()
    return _long(len(b)) + b


# Advertiser ids as Avro strings: the counters name the same few advertisers on every write.
_known_string = lru_cache(maxsize=100_000)(_string)


def _optional(s: str | None) -> bytes:
    return _NULL if s is None else b"\x02" + _string(s)


def _event(e: HistoryEvent) -> bytes:
    cached = _event_bytes.get(id(e))
    if cached is not None and cached[0] is e:
        return cached[1]
    if len(_event_bytes) >= _EVENT_CACHE_MAX:
        _event_bytes.clear()
    encoded = b"".join(
        (
            _long(e.event_time),
            _string(e.event_type),
            _optional(e.advertiser_id),
            _optional(e.category),
            _optional(e.brand),
            _optional(e.text),
        )
    )
    _event_bytes[id(e)] = (e, encoded)
    return encoded


def _events_block(user_id: str, events: tuple[HistoryEvent, ...]) -> bytes:
    memo = _event_blocks.get(user_id)
    if memo is not None and memo[0] == events:
        return memo[1]
    block = b"".join(map(_event, events))
    if len(_event_blocks) >= _BLOCKS_MAX:
        _event_blocks.clear()
    _event_blocks[user_id] = (events, block)
    return block


def _add_profile_and_events(
    parts: list[bytes], user_id: str, profile: dict[str, str], events: tuple[HistoryEvent, ...]
) -> None:
    """The map of profile attributes, then the array of events (both end with a zero count)."""
    if profile:
        parts.append(_long(len(profile)))
        parts.extend(_string(k) + _string(v) for k, v in profile.items())
    parts.append(_NULL)
    if events:
        parts.append(_long(len(events)))
        parts.append(_events_block(user_id, events))
    parts.append(_NULL)


def encode_request(r: PredictionRequest) -> bytes:
    """A PredictionRequest in the Confluent wire format, as serde.encode(serde.REQUEST, r.to_record())."""
    parts = [
        serde.header(serde.REQUEST),
        _string(r.user_id),
        _long(r.version),
        _string(r.reason),
        _long(r.newest_event_time),
        _long(r.enqueued_at),
    ]
    _add_profile_and_events(parts, r.user_id, r.profile, r.events)
    if r.own:
        parts.append(_long(len(r.own)))
        parts.extend(map(_known_string, r.own))
    parts.append(_NULL)
    if r.shown:
        parts.append(_long(len(r.shown)))
        parts.extend(
            _known_string(ad.advertiser_id) + _optional(ad.category) + (b"\x01" if ad.after else b"\x00")
            for ad in r.shown
        )
    parts.append(_NULL)
    return b"".join(parts)


def encode_history(h: UserHistory) -> bytes:
    """A UserHistory in the Confluent wire format, as serde.encode(serde.HISTORY, h.to_record())."""
    parts = [serde.header(serde.HISTORY), _string(h.user_id), _long(h.version), _long(h.partition)]
    _add_profile_and_events(parts, h.user_id, h.profile, tuple(h.events))
    if h.counters:
        parts.append(_long(len(h.counters)))
        pack = _DOUBLE.pack
        for c in h.counters:
            parts += (_known_string(c.advertiser_id), pack(c.weight), _long(c.updated_at))
    parts.append(_NULL)
    parts += (
        _long(len(h.seen_ids)),
        h.seen_ids,
        _long(h.newest_event_time),
        _long(h.pending_since),
        _long(h.last_event_at),
        b"\x01" if h.pending_high_value else b"\x00",
        _long(h.last_emit_at),
        _long(h.emitted_version),
    )
    if h.impressions:
        parts.append(_long(len(h.impressions)))
        parts.extend(_long(i.offset) + _known_string(i.advertiser_id) + _optional(i.category) for i in h.impressions)
    parts.append(_NULL)
    parts.append(b"\x01" if h.pending_engaged else b"\x00")
    parts.append(_long(h.engaged_offset))
    return b"".join(parts)
