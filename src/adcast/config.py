"""Typed settings, from `ADCAST_*` environment variables and an optional TOML config file.

Precedence: explicit arguments > environment > config file (`ADCAST_CONFIG`, default
`adcast.toml` in the working directory when present) > the local services' file (LOCAL_FILE in
the home folder, `ADCAST_HOME` or `.adcast`: written by `adcast up`, removed by `adcast down`) >
defaults. Nested groups use `__` in environment names, e.g.
`ADCAST_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092`. `adcast config` prints the effective settings
with secrets masked. Settings are frozen: `override` makes a validated copy with changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from adcast.core.history import HistoryLimits
from adcast.core.slots import DEFAULT_SLOT, SLOT_NAME
from adcast.core.triggers import PolicyName, TriggerPolicy
from adcast.errors import ConfigError


class _Group(BaseModel):
    """A nested settings group: an unknown name in it (a misspelt ADCAST_GROUP__NAME variable, or a
    TOML key) is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Group):
    bootstrap_servers: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers, comma-separated.")
    security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: str | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; required by the SASL protocols."
    )
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = Field(None, description="CA bundle (PEM) that signed the brokers; default: the system's.")
    ssl_certfile: str | None = Field(None, description="Client certificate (PEM), for brokers that require mTLS.")
    ssl_keyfile: str | None = Field(None, description="Private key (PEM) of ssl_certfile.")
    ssl_key_password: SecretStr | None = Field(None, description="Password of ssl_keyfile, when it is encrypted.")
    max_request_bytes: int = Field(
        1_048_576,
        ge=65_536,
        description="Largest produce request of every adcast producer (the brokers' message.max.bytes must allow "
        "it); a dead letter's raw value is cut to half of it.",
    )
    # Kafka's own defaults. The local broker holds a rejoining member until the old member's
    # session ends, so `adcast up`, the demo and the tests set short ones (LOCAL_BROKER_TIMINGS).
    session_timeout_ms: int = Field(
        45_000, ge=1000, description="Consumer group session timeout of both tiers' workers."
    )
    heartbeat_interval_ms: int = Field(
        3_000, ge=100, description="Consumer group heartbeat interval; at most a third of session_timeout_ms."
    )
    rebalance_timeout_ms: int = Field(
        60_000, ge=1000, description="Longest a rebalance waits for the group's members to rejoin."
    )


class SchemaRegistrySettings(_Group):
    url: str | None = Field(
        None,
        description="Confluent-compatible Schema Registry URL(s), comma-separated; unset: the fixed ids of "
        "schemas/registry.json. mock://NAME is confluent-kafka's in-memory registry (tests).",
    )
    username: str | None = Field(None, description="Basic-auth user (an API key on Confluent Cloud).")
    password: SecretStr | None = Field(None, description="Basic-auth password (the API secret).")
    ssl_cafile: str | None = Field(None, description="CA bundle (PEM) that signed the registry; default: certifi's.")
    ssl_certfile: str | None = Field(None, description="Client certificate (PEM), for a registry that requires mTLS.")
    ssl_keyfile: str | None = Field(None, description="Private key (PEM) of ssl_certfile.")
    timeout_s: float = Field(10.0, gt=0, description="Per-request timeout of registry calls.")


class TopicSettings(_Group):
    prefix: str = Field("adcast.", description="Prepended to every topic name (isolates tests and tenants).")
    partitions: int = Field(4, description="Partitions of the keyed topics; the unit of scale-out.")
    replication_factor: int = Field(
        -1, description="Replication factor of the topics adcast creates; -1: the brokers' default.replication.factor."
    )
    events: str = "events"
    profiles: str = "profiles"
    advertisers: str = "advertisers"
    requests: str = "prediction-requests"
    affinities: str = "affinities"
    rollout: str = Field("rollout-requests", description="Requests of `adcast rollout`, each naming its slot.")
    dead_letters: str = "dead-letters"
    ticks: str = Field("stream-ticks", description="Internal wake-ups of the stream tier, one per partition.")

    def name(self, topic: str) -> str:
        return self.prefix + getattr(self, topic)


class RedisSettings(_Group):
    url: str = Field("redis://127.0.0.1:16379/0", description="redis:// or rediss:// URL.")
    username: str | None = Field(None, description="ACL user (Redis 6+).")
    password: SecretStr | None = None
    ssl_ca_certs: str | None = Field(None, description="CA bundle (PEM) for rediss:// URLs; default: the system's.")
    ssl_certfile: str | None = Field(None, description="Client certificate (PEM), for servers that require mTLS.")
    ssl_keyfile: str | None = Field(None, description="Private key (PEM) of ssl_certfile.")
    key_prefix: str = Field(
        "adcast:aff:", description="Key prefix; `<slot>:<user_id>` follows, and `@slots` names the slot pointer."
    )
    pointer_refresh_s: float = Field(
        1.0,
        gt=0,
        description="How long a reader keeps the slot pointer (which slot is live) before reading it again.",
    )
    ttl_seconds: int = Field(7 * 24 * 3600, description="Expiry of each user's hash; 0 keeps it forever.")
    cluster: bool = Field(
        False, description="Redis Cluster: `url` names any one node (db 0); the clients discover the rest."
    )

    def __repr_args__(self) -> Any:
        # A password may sit in the URL itself: keep it out of repr(settings) and logs.
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "url" and isinstance(value, str) else value


class ServeSettings(_Group):
    host: str = Field("127.0.0.1", description="Address `adcast serve` listens on.")
    port: int = Field(8080, description="Port of `adcast serve`.")
    max_users: int = Field(1000, description="Most user ids one lookup request may ask for.")
    token: SecretStr | None = Field(
        None,
        description="Bearer token that /v1/affinities, /metrics and the inspector (/ui) require "
        "(`Authorization: Bearer TOKEN`). Unset: no authentication, so keep the service on a private network.",
    )
    history_url: str = Field(
        "http://127.0.0.1:6066", description="The stream tier's history page, for the inspector; empty: none."
    )
    worker_metrics_urls: str = Field(
        "",
        description="Workers' metrics URLs, comma-separated, for the inspector's fleet view (every address a "
        "host name resolves to is read: a headless Service names all its pods).",
    )

    def metrics_urls(self) -> list[str]:
        return [u.strip() for u in self.worker_metrics_urls.split(",") if u.strip()]


ROCKSDB_WRITE_BUFFERS = 2  # memtables per table partition: one filling while one flushes


class StreamSettings(_Group):
    """The stream tier. `history_events`, `dedupe_window` and `shown_impressions` shape the prompt
    too: training, evaluation and backfill read them from the same settings (`history_limits`)."""

    app_id: str = Field("adcast-stream", description="Faust app id: the consumer group and table namespace.")
    data_dir: str = Field(".adcast/stream-data", description="Where RocksDB tables live (rebuilt from the changelog).")
    trigger_policy: PolicyName = Field(
        "value",
        description="Which prompt changes are worth an LLM call: `value` (those that can move the top-K: "
        "an ad or category new to the shown list, a new advertiser), `engagements` (never an impression), "
        "`every_change`.",
    )
    quiet_ms: int = Field(500, description="Emit once the user has been quiet this long.")
    max_delay_ms: int = Field(1500, description="Emit at the latest this long after the first pending event.")
    min_interval_ms: int = Field(
        1000, description="Minimum time between two emissions for a user, except high-value events."
    )
    shown_interval_ms: int = Field(
        10_000,
        ge=0,
        description="Minimum time between two emissions for a user when only ads shown are pending "
        "(they arrive in streams as the user scrolls).",
    )
    settle_ms: int = Field(
        300_000,
        ge=1,
        description="A user whose newest version the policy skipped is scored once quiet this long, "
        "so every user's newest version reaches Redis.",
    )
    tick_ms: int = Field(100, description="How often pending users are checked.")
    fetch_max_wait_ms: int = Field(
        100,
        description="Longest a fetch waits for data; brokers without long-poll "
        "wake-up (the local Tansu) add up to this much latency per hop.",
    )
    batch_max_events: int = Field(2000, description="Most messages the stream tier folds in one batch.")
    batch_wait_ms: int = Field(
        50, description="Longest a batch waits to fill; bounds the latency batching adds per hop."
    )
    cache_users: int = Field(
        50_000, description="Decoded histories kept in memory between batches (spares the state decode)."
    )
    commit_interval_ms: int = Field(
        2800, description="How often consumed offsets are committed; longer means more re-reading after a crash."
    )
    producer_linger_ms: int = Field(20, description="How long the stream tier's producer gathers a batch.")
    producer_batch_bytes: int = Field(524_288, description="Largest batch of the stream tier's producer, in bytes.")
    history_events: int = Field(12, description="N: the history keeps between N and 2N events (impressions apart).")
    dedupe_window: int = Field(32, description="Recent event ids remembered per user for dedupe.")
    shown_impressions: int = Field(
        8, ge=0, description="Impressions the prompt shows: the newest ones at or before the version (0: none)."
    )
    rocksdb_block_cache_mb: int = Field(
        64,
        ge=1,
        description="RocksDB block cache of each table partition a worker holds (Faust's default is 2 GiB "
        "each). A worker's state memory is about partitions held x (this + 2 x rocksdb_write_buffer_mb).",
    )
    rocksdb_write_buffer_mb: int = Field(
        16, ge=1, description="RocksDB memtable size per table partition; two per partition at most."
    )
    web_port: int = Field(6066, ge=0, le=65535, description="Port of the history page (GET /v1/history); 0: none.")
    web_bind: str = Field("0.0.0.0", description="Address the history page listens on.")
    web_host: str | None = Field(None, description="Address other workers reach this one at; unset: hostname.")

    def trigger(self) -> TriggerPolicy:
        return TriggerPolicy(
            quiet_ms=self.quiet_ms,
            max_delay_ms=self.max_delay_ms,
            min_interval_ms=self.min_interval_ms,
            shown_interval_ms=self.shown_interval_ms,
            settle_ms=self.settle_ms,
            name=self.trigger_policy,
        )

    def history_limits(self) -> HistoryLimits:
        return HistoryLimits(
            min_events=self.history_events, dedupe_window=self.dedupe_window, shown=self.shown_impressions
        )


class InferSettings(_Group):
    group_id: str = Field(
        "adcast-infer", description="Consumer group of the inference workers; one per slot (a shadow has its own)."
    )
    slot: str = Field(
        DEFAULT_SLOT,
        pattern=SLOT_NAME,
        description="The store slot (model generation) this deployment writes; readers read the live one.",
    )
    start_at: Literal["earliest", "latest"] = Field(
        "earliest",
        description="Where a new consumer group starts on the requests topic. A shadow deployment of a new "
        "slot starts at `latest` and gets everyone else from `adcast rollout`.",
    )
    model_dir: str = Field(
        ".adcast/models/demo", description="Hugging Face checkpoint directory made by `adcast train`."
    )
    engine: Literal["torch", "vllm"] = Field("torch", description="Scoring engine: torch or vllm.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cpu or cuda.")
    cpu_threads: int = Field(
        1,
        description="Torch threads on the CPU; 0 lets torch use every core. Keep it low "
        "when the stream tier and the broker share the machine.",
    )
    vllm_compile: bool = Field(
        True,
        description="vLLM engine: compile the model with torch.compile at start (vLLM's default; faster on a "
        "GPU). Off starts the engine in about half the time, which suits CPUs and tests.",
    )
    vllm_kv_cache_gib: float = Field(
        0.0,
        ge=0,
        description="vLLM engine: GiB reserved for the KV (prefix) cache. 0: 2 GiB on the CPU (vLLM's own CPU "
        "default takes 92% of the machine and will not start beside other processes), vLLM's share of "
        "GPU memory on a GPU.",
    )
    top_k: int = Field(20, description="Advertisers kept per user.")
    max_batch: int = Field(64, description="Largest micro-batch of requests.")
    max_wait_ms: int = Field(50, description="Longest a request waits for its micro-batch to fill.")
    fetch_max_wait_ms: int = Field(100, description="Longest a fetch waits for data (see stream.fetch_max_wait_ms).")
    engine_timeout_s: float = Field(
        60.0, gt=0, description="Longest one engine call may take; a call past it counts as failed (engine_timeout)."
    )
    engine_attempts: int = Field(3, ge=1, description="Tries per micro-batch before its requests are dead-lettered.")
    engine_retry_base_s: float = Field(
        0.5, ge=0, description="Delay before the first engine retry; it doubles with each further retry."
    )
    store_retry_base_s: float = Field(
        0.1, gt=0, description="Delay before retrying a Redis write that found Redis unavailable; doubles each time."
    )
    store_retry_max_s: float = Field(5.0, gt=0, description="Longest delay between two Redis write retries.")
    engine_max_failed_batches: int = Field(
        5,
        ge=1,
        description="Micro-batches in a row of which no request could be scored before the worker stops "
        "(the engine is taken as dead) with a non-zero exit, instead of dead-lettering everything.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADCAST_", env_nested_delimiter="__", extra="ignore", frozen=True)

    home: str = Field(".adcast", description="Local state: service data, logs, pid files, models.")
    kafka: KafkaSettings = KafkaSettings()  # type: ignore[call-arg]
    topics: TopicSettings = TopicSettings()  # type: ignore[call-arg]
    redis: RedisSettings = RedisSettings()  # type: ignore[call-arg]
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()  # type: ignore[call-arg]
    stream: StreamSettings = StreamSettings()  # type: ignore[call-arg]
    infer: InferSettings = InferSettings()  # type: ignore[call-arg]
    serve: ServeSettings = ServeSettings()  # type: ignore[call-arg]
    metrics_port: int = Field(0, description="Prometheus endpoint port for this worker; 0 disables it.")

    @model_validator(mode="after")
    def _across_groups(self) -> Settings:
        check_across_groups(self)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = Path(os.environ.get("ADCAST_CONFIG", "adcast.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        local = Path(os.environ.get("ADCAST_HOME", ".adcast")) / LOCAL_FILE
        if local.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=local))
        return tuple(sources)


def check_across_groups(settings: Settings) -> None:
    """At load and in `override` (model_copy validates nothing); pydantic passes ConfigError on as is."""
    if settings.stream.web_port and settings.stream.web_port == settings.metrics_port:
        raise ConfigError(
            f"ADCAST_STREAM__WEB_PORT and ADCAST_METRICS_PORT are both {settings.metrics_port}: the history page "
            "and the metrics need a port each; set ADCAST_STREAM__WEB_PORT to another port (0: no page)"
        )


LOCAL_FILE = "local.toml"
Model = TypeVar("Model", bound=BaseModel)


def override(model: Model, **changes: Any) -> Model:
    """A copy of `model` (Settings or one of its groups) with `changes` validated and applied;
    `model_copy(update=...)` alone would apply them unchecked. A group takes a dict of its own
    changes (or a whole group): `override(settings, infer={"max_batch": 2}, home="/tmp/h")`."""
    fields = type(model).model_fields
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        raise ConfigError(f"{type(model).__name__} has no setting {', '.join(unknown)}")
    try:
        if not isinstance(model, BaseSettings):
            return type(model).model_validate({**model.model_dump(), **changes})
        update = {}
        for name, value in changes.items():
            current = getattr(model, name)
            if isinstance(current, BaseModel) and isinstance(value, dict):
                value = override(current, **value)
            elif not isinstance(current, BaseModel) or not isinstance(value, type(current)):
                annotation = fields[name].annotation
                value = TypeAdapter(annotation if annotation is not None else Any).validate_python(value)
            update[name] = value
        copy = model.model_copy(update=update)
        if isinstance(copy, Settings):
            check_across_groups(copy)
        return copy
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid {type(model).__name__} override: {problems}") from exc


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = "__".join(str(part) for part in error["loc"]).upper()
            if error["type"] == "extra_forbidden":
                problems.append(f"ADCAST_{where} is not a setting (misspelt? `adcast config` lists them)")
            else:
                problems.append(f"ADCAST_{where}: {error['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from exc


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":**********@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets shown as '**********' (URLs included)."""
    data = settings.model_dump(mode="json")
    data["redis"]["url"] = redact_url(settings.redis.url)
    if settings.schema_registry.url:
        data["schema_registry"]["url"] = redact_url(settings.schema_registry.url)
    return data


def to_env(settings: Settings) -> dict[str, str]:
    """The settings as `ADCAST_*` environment variables, for starting workers as subprocesses."""
    env: dict[str, str] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                put(
                    f"{prefix}__{name.upper()}" if prefix != "ADCAST" else f"ADCAST_{name.upper()}",
                    getattr(value, name),
                )
        elif isinstance(value, SecretStr):
            env[prefix] = value.get_secret_value()
        elif value is not None:
            env[prefix] = str(value)

    put("ADCAST", settings)
    return env
