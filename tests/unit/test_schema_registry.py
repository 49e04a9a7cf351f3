"""Schema ids from a Schema Registry: confluent-kafka's own client, its in-memory registry
(mock://) standing in for the server, and a real connection to a closed port for an outage."""

from __future__ import annotations

import io
import itertools
import json
import struct

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema

from adcast.config import load_settings, masked
from adcast.core.requests import PredictionRequest
from adcast.errors import ConfigError, SerdeError
from adcast.local.services import free_port
from adcast.wire import schema_registry, serde
from adcast.wire.event_decoder import decode_event
from adcast.wire.history_encoder import encode_request

_names = itertools.count()
EVENT = {
    "event_id": "e1",
    "user_id": "u1",
    "event_time": 1_767_225_600_000,
    "event_type": "click",
    "advertiser_id": "a1",
    "item_id": None,
    "category": "shoes",
    "brand": "acme",
    "text": None,
}


@pytest.fixture
def settings():
    return load_settings(schema_registry={"url": f"mock://unit-{next(_names)}"})


def _adcast_event_schema() -> dict:
    return json.loads(serde.schema_text(serde.EVENT))


def _framed(schema_id: int, schema: dict, record: dict) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return struct.pack(">bI", 0, schema_id) + body.getvalue()


def _register(settings, subject: str, schema: dict) -> int:
    client = schema_registry.registry_client(settings.schema_registry)
    return int(client.register_schema(subject, Schema(json.dumps(schema), "AVRO")))


def test_a_producer_schema_with_an_added_optional_field_decodes_into_adcasts(settings):
    schema_registry.activate(settings)
    base = _adcast_event_schema()
    evolved = {**base, "fields": [*base["fields"], {"name": "campaign", "type": ["null", "string"], "default": None}]}
    schema_id = _register(settings, "producer-events-value", evolved)
    data = _framed(schema_id, evolved, {**EVENT, "campaign": "spring"})
    assert decode_event(data) == serde.decode(serde.EVENT, data) == EVENT
    assert data[:5] not in serde.native_headers(serde.EVENT)  # not adcast's schema: fastavro reads it


def test_a_producer_schema_without_a_field_adcast_defaults_decodes_with_the_default(settings):
    schema_registry.activate(settings)
    base = _adcast_event_schema()
    older = {**base, "fields": [f for f in base["fields"] if f["name"] != "brand"]}
    schema_id = _register(settings, "producer-events-value", older)
    record = {k: v for k, v in EVENT.items() if k != "brand"}
    assert decode_event(_framed(schema_id, older, record)) == {**EVENT, "brand": None}


def test_an_incompatible_producer_schema_is_a_clear_serde_error(settings):
    schema_registry.activate(settings)
    base = _adcast_event_schema()
    no_user = {**base, "fields": [f for f in base["fields"] if f["name"] != "user_id"]}
    schema_id = _register(settings, "producer-events-value", no_user)
    with pytest.raises(SerdeError) as caught:
        decode_event(_framed(schema_id, no_user, {k: v for k, v in EVENT.items() if k != "user_id"}))
    assert caught.value.reason == "incompatible_schema"
    assert "user_id" in str(caught.value) and str(schema_id) in str(caught.value)


def test_an_id_the_registry_does_not_hold_and_another_record_are_dead_letter_reasons(settings):
    schema_registry.activate(settings)
    profile_id = _register(settings, "profiles-value", json.loads(serde.schema_text(serde.PROFILE)))
    body = serde.encode(serde.EVENT, EVENT)[5:]
    for schema_id, reason in [(profile_id + 100, "unknown_schema_id"), (profile_id, "wrong_schema")]:
        with pytest.raises(SerdeError) as caught:
            decode_event(struct.pack(">bI", 0, schema_id) + body)
        assert caught.value.reason == reason


def test_any_id_whose_schema_is_adcasts_takes_the_hand_written_decoder(settings):
    schema_registry.activate(settings)
    _register(settings, "profiles-value", json.loads(serde.schema_text(serde.PROFILE)))  # takes id 1
    ids = [_register(settings, subject, _adcast_event_schema()) for subject in ("a-value", "b-value")]
    assert len(set(ids)) == 2 and 1 not in ids
    for schema_id in ids:
        data = _framed(schema_id, _adcast_event_schema(), EVENT)
        assert serde.decode(serde.EVENT, data) == EVENT  # the first read learns the schema ...
        assert data[:5] in serde.native_headers(serde.EVENT)  # ... is adcast's own
        assert decode_event(data) == EVENT
    serde.use(serde.FileSchemas())
    assert not serde.native_headers(serde.EVENT)  # another source: nothing is known to be native


def test_adcast_registers_what_it_writes_under_topic_subjects_and_writes_those_ids(settings):
    schema_registry.activate(settings, writes=(serde.REQUEST, serde.HISTORY))
    client = schema_registry.registry_client(settings.schema_registry)
    subjects = schema_registry.subjects(settings)
    assert subjects[serde.REQUEST] == settings.topics.name("requests") + "-value"
    for name in (serde.REQUEST, serde.HISTORY):
        latest = client.get_latest_version(subjects[name])
        assert json.loads(latest.schema.schema_str) == json.loads(serde.schema_text(name))
        assert serde.header(name) == struct.pack(">bI", 0, latest.schema_id)
    request = PredictionRequest("u1", 3, "salient", 1_000, 2_000, {}, (), own=("a1",))
    data = encode_request(request)  # the stream tier's hand-written encoder
    assert data[:5] == serde.header(serde.REQUEST)
    assert PredictionRequest.from_record(serde.decode(serde.REQUEST, data)) == request


def test_a_registry_that_cannot_be_reached_at_start_is_a_clear_error():
    closed = load_settings(schema_registry={"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 2})
    with pytest.raises(ConfigError, match=r"cannot reach the schema registry at http://127\.0\.0\.1"):
        schema_registry.activate(closed, writes=(serde.REQUEST,))


def test_cached_ids_keep_working_while_the_registry_is_down(settings):
    source = schema_registry.activate(settings)
    assert isinstance(source, schema_registry.RegistrySchemas)
    base = _adcast_event_schema()
    evolved = {**base, "fields": [*base["fields"], {"name": "campaign", "type": ["null", "string"], "default": None}]}
    known = _register(settings, "producer-events-value", evolved)
    unseen = _register(settings, "other-events-value", {**evolved, "doc": "a later producer version"})
    assert serde.decode(serde.EVENT, _framed(known, evolved, {**EVENT, "campaign": None})) == EVENT
    # The registry goes away: the client now talks to a port nothing listens on.
    down = load_settings(schema_registry={"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 2})
    source.client = schema_registry.registry_client(down.schema_registry)
    assert serde.decode(serde.EVENT, _framed(known, evolved, {**EVENT, "campaign": "x"})) == EVENT
    with pytest.raises(SerdeError) as caught:
        serde.decode(serde.EVENT, _framed(unseen, evolved, EVENT | {"campaign": None}))
    assert caught.value.reason == "schema_registry_unavailable"


def test_credentials_and_tls_reach_the_client_and_never_the_printed_settings():
    s = load_settings(
        schema_registry={
            "url": "https://key:inline@registry.example:8081",
            "username": "key",
            "password": "s3cret",
            "ssl_cafile": "/etc/ca.pem",
        }
    )
    conf = schema_registry.client_config(s.schema_registry)
    assert conf["basic.auth.user.info"] == "key:s3cret" and conf["ssl.ca.location"] == "/etc/ca.pem"
    shown = json.dumps(masked(s))
    assert "s3cret" not in shown and "inline" not in shown
    for half in ({"username": "key"}, {"ssl_certfile": "/c.pem"}):
        with pytest.raises(ConfigError, match="set both"):
            schema_registry.client_config(load_settings(schema_registry={"url": "mock://x", **half}).schema_registry)


def test_without_a_url_the_fixed_ids_stay():
    schema_registry.activate(load_settings())
    assert serde.header(serde.EVENT) == struct.pack(">bI", 0, 1)
    assert decode_event(serde.encode(serde.EVENT, EVENT)) == EVENT
