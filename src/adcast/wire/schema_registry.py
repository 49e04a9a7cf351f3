"""Schema ids from a Confluent-compatible Schema Registry, through confluent-kafka's own client.

With `schema_registry.url` set, every process of adcast resolves the schema id in a message's
header to its writer schema by asking the registry, once per id (the answer is cached for the
life of the process), and writes its own records under the ids the registry assigns when adcast
registers its schemas under TopicNameStrategy subjects (`<topic>-value`). Records are read into
adcast's own schemas by Avro schema resolution, so a producer may add fields or drop ones adcast
gives a default. Without a URL the fixed ids of schemas/registry.json stay in use.

An id first met while the registry is unreachable cannot be read: its message is dead-lettered
with reason `schema_registry_unavailable`, raw bytes kept for a replay; ids already cached keep
working through an outage.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import fastavro

from adcast.config import SchemaRegistrySettings, Settings, redact_url
from adcast.errors import ConfigError, DependencyMissing, SerdeError
from adcast.wire import serde

log = logging.getLogger(__name__)

# The topic (a TopicSettings field) each record adcast may write goes to; the history's is the
# stream tier's changelog, named by Faust after the app id and the table.
_TOPIC_OF = {
    serde.EVENT: "events",
    serde.PROFILE: "profiles",
    serde.ADVERTISER: "advertisers",
    serde.REQUEST: "requests",
    serde.AFFINITY: "affinities",
    serde.DEAD_LETTER: "dead_letters",
}


def subjects(settings: Settings) -> dict[str, str]:
    """The registry subject of each record adcast writes (TopicNameStrategy: `<topic>-value`)."""
    names = {name: f"{settings.topics.name(field)}-value" for name, field in _TOPIC_OF.items()}
    names[serde.HISTORY] = f"{settings.stream.app_id}-history-changelog-value"
    return names


def client_config(settings: SchemaRegistrySettings) -> dict[str, Any]:
    """confluent-kafka's SchemaRegistryClient configuration from adcast's settings."""
    if not settings.url:
        raise ConfigError("ADCAST_SCHEMA_REGISTRY__URL is not set")
    conf: dict[str, Any] = {"url": settings.url, "timeout": settings.timeout_s}
    user, password = settings.username, settings.password
    if bool(user) != bool(password):
        raise ConfigError("set both ADCAST_SCHEMA_REGISTRY__USERNAME and ADCAST_SCHEMA_REGISTRY__PASSWORD")
    if user and password:
        conf["basic.auth.user.info"] = f"{user}:{password.get_secret_value()}"
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        raise ConfigError(
            "set both ADCAST_SCHEMA_REGISTRY__SSL_CERTFILE and ADCAST_SCHEMA_REGISTRY__SSL_KEYFILE for a client "
            "certificate"
        )
    files = {
        "ssl.ca.location": settings.ssl_cafile,
        "ssl.certificate.location": settings.ssl_certfile,
        "ssl.key.location": settings.ssl_keyfile,
    }
    return {**conf, **{k: v for k, v in files.items() if v}}


class RegistrySchemas:
    """A serde.SchemaSource backed by a Schema Registry client."""

    def __init__(self, client: Any, subject_of: dict[str, str], where: str) -> None:
        self.client = client
        self._subject_of = dict(subject_of)
        self.where = f"the schema registry at {where}"  # the URL, password redacted
        self._writers: dict[int, serde.Schema | None] = {}
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()  # the inference tier decodes in more than one thread

    def writer(self, schema_id: int) -> serde.Schema | None:
        try:
            return self._writers[schema_id]
        except KeyError:
            pass
        from confluent_kafka.schema_registry import SchemaRegistryError

        with self._lock:
            if schema_id in self._writers:
                return self._writers[schema_id]
            try:
                found = self.client.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    raise self._unavailable(exc) from exc
                self._writers[schema_id] = None  # ids are never reused: one that is not there never was
                return None
            except Exception as exc:  # the HTTP client's connection and timeout errors
                raise self._unavailable(exc) from exc
            schema = _parse(schema_id, found)
            self._writers[schema_id] = schema
            log.info("schema id %s is %s (from %s)", schema_id, schema.name, self.where)
            return schema

    def write_id(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            pass
        from confluent_kafka.schema_registry import Schema

        subject = self._subject_of[name]
        text = serde.schema_text(name)
        with self._lock:
            try:
                schema_id = int(self.client.register_schema(subject, Schema(text, "AVRO")))
            except Exception as exc:
                raise ConfigError(
                    f"{self.where} did not register adcast's {name} under subject {subject}: {exc}"
                ) from exc
            self._ids[name] = schema_id
            # adcast reads its own records back (requests, history): it knows their schema already.
            self._writers.setdefault(schema_id, serde.registry().by_name[name])
        log.info("%s is written under schema id %s (subject %s)", name, schema_id, subject)
        return schema_id

    def _unavailable(self, exc: BaseException) -> SerdeError:
        return SerdeError("schema_registry_unavailable", f"{self.where}: {type(exc).__name__}: {exc}")


def _parse(schema_id: int, found: Any) -> serde.Schema:
    kind = found.schema_type or "AVRO"
    if kind != "AVRO":
        raise SerdeError("wrong_schema", f"schema id {schema_id} is a {kind} schema; adcast reads Avro")
    if found.references:
        raise SerdeError("wrong_schema", f"schema id {schema_id} has schema references, which adcast does not follow")
    try:
        parsed = fastavro.parse_schema(json.loads(found.schema_str))
    except Exception as exc:
        raise SerdeError("wrong_schema", f"schema id {schema_id} does not parse as Avro: {exc}") from exc
    return serde.parsed_schema(schema_id, parsed)


_clients: dict[str, Any] = {}  # one per URL and process: mock:// registries live in their client


def registry_client(settings: SchemaRegistrySettings) -> Any:
    """This process's client for the configured registry."""
    conf = client_config(settings)
    key = json.dumps(conf, sort_keys=True)
    if key not in _clients:
        try:
            from confluent_kafka.schema_registry import SchemaRegistryClient
        except ImportError as exc:  # confluent-kafka's schemaregistry extra: httpx2, certifi, authlib, ...
            raise DependencyMissing(exc.name or "confluent_kafka.schema_registry", "schema-registry") from exc
        _clients[key] = SchemaRegistryClient.new_client(conf)
    return _clients[key]


def activate(settings: Settings, writes: tuple[str, ...] = ()) -> serde.SchemaSource:
    """Make this process read and write through the configured registry (no URL: the file
    registry). Registers the records in `writes` now, so an unreachable registry, or one that
    refuses adcast's schemas, stops a worker at start with a clear error rather than mid-run."""
    if not settings.schema_registry.url:
        source: serde.SchemaSource = serde.FileSchemas()
        serde.use(source)
        return source
    where = redact_url(settings.schema_registry.url)
    client = registry_client(settings.schema_registry)
    try:
        client.get_subjects()
    except Exception as exc:
        raise ConfigError(
            f"cannot reach the schema registry at {where}: {type(exc).__name__}: {exc}; "
            "check ADCAST_SCHEMA_REGISTRY__URL and its credentials"
        ) from exc
    source = RegistrySchemas(client, subjects(settings), where)
    serde.use(source)
    for name in writes:
        source.write_id(name)
    return source
