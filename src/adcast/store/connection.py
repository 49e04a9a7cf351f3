"""Redis clients for adcast's settings, and redis-py's errors mapped to adcast's.

Unreachable, failing over, loading or out of memory -> StoreUnavailable (retry); wrong mode or
credentials -> ConfigError; an error reply of one key -> StoreKeyError for that key only (counted
in adcast_store_key_errors_total).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from adcast import metrics
from adcast.config import RedisSettings, redact_url
from adcast.errors import ConfigError, StoreKeyError, StoreUnavailable


def redis_connection_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """Credentials and TLS files as keyword arguments of redis-py's `from_url` (plain, asyncio and
    cluster clients alike). TLS itself follows the URL scheme: rediss:// turns it on."""
    kwargs: dict[str, Any] = {}
    if settings.username:
        kwargs["username"] = settings.username
    if settings.password:
        kwargs["password"] = settings.password.get_secret_value()
    files = {"ssl_ca_certs": settings.ssl_ca_certs, "ssl_certfile": settings.ssl_certfile}
    tls = {k: v for k, v in {**files, "ssl_keyfile": settings.ssl_keyfile}.items() if v}
    if tls and not settings.url.startswith("rediss://"):
        # A plain connection would ignore them (redis-py rejects them): the user meant TLS.
        raise ConfigError(
            f"{', '.join(f'ADCAST_REDIS__{k.upper()}' for k in tls)} set but ADCAST_REDIS__URL "
            f"({redact_url(settings.url)}) is not rediss://; use a rediss:// URL for TLS"
        )
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        raise ConfigError("set both ADCAST_REDIS__SSL_CERTFILE and ADCAST_REDIS__SSL_KEYFILE for a client certificate")
    return {**kwargs, **tls}


def _connection_kwargs(settings: RedisSettings) -> dict[str, Any]:
    return {"decode_responses": True, **redis_connection_kwargs(settings)}


@contextlib.contextmanager
def mapped_errors(settings: RedisSettings) -> Iterator[None]:
    """Map redis-py's errors to adcast's, with what to do about them."""
    import redis.exceptions as rex

    url = redact_url(settings.url)
    try:
        yield
    except (rex.AuthenticationError, rex.AuthorizationError, rex.NoPermissionError) as exc:
        raise ConfigError(
            f"Redis at {url} refused the credentials ({exc}); set ADCAST_REDIS__USERNAME / ADCAST_REDIS__PASSWORD"
        ) from exc
    except rex.MovedError as exc:
        if settings.cluster:
            raise StoreUnavailable(f"Redis Cluster at {url} is resharding or failing over: {exc}") from exc
        # A plain client got a redirect: the server is a cluster node.
        raise ConfigError(
            f"Redis at {url} is a cluster node (it answered {exc}); set ADCAST_REDIS__CLUSTER=true"
        ) from exc
    except (rex.ConnectionError, rex.TimeoutError, rex.ClusterError) as exc:
        raise StoreUnavailable(
            f"cannot reach Redis at {url} ({exc}); start it with `adcast up` or set ADCAST_REDIS__URL"
        ) from exc
    except rex.RedisClusterException as exc:
        text = str(exc)
        if "not enabled" in text:
            raise ConfigError(f"Redis at {url} is not a cluster; set ADCAST_REDIS__CLUSTER=false") from exc
        if "db" in text and "cluster mode" in text:
            raise ConfigError(f"Redis Cluster has only database 0; fix ADCAST_REDIS__URL ({url})") from exc
        # Unreachable startup nodes, slots not covered while a node fails over: transient.
        raise StoreUnavailable(f"Redis Cluster at {url} is unavailable: {text}") from exc


# Error replies that describe the server, not the key: every key would fail alike, so the
# operation is retried as a whole (after a failover, a load or a memory release it succeeds).
_SERVER_WIDE = ("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS")


def key_error(exc: Exception, settings: RedisSettings, op: str) -> StoreKeyError:
    """The StoreKeyError for one key's error reply; raises StoreUnavailable for a server-wide one,
    and re-raises what is no key's fault (for _mapped_errors, which every caller runs inside)."""
    import redis.exceptions as rex

    if not isinstance(exc, rex.ResponseError) or isinstance(
        exc, (rex.AskError, rex.NoPermissionError, rex.ClusterError)
    ):
        raise exc
    text = str(exc)
    code = text.split(" ", 1)[0]
    # redis-py strips the code from the replies it has a class for
    if isinstance(exc, (rex.OutOfMemoryError, rex.ReadOnlyError, rex.TryAgainError)) or code in _SERVER_WIDE:
        what = (
            "out of memory (maxmemory reached, and its policy evicts nothing)"
            if isinstance(exc, rex.OutOfMemoryError)
            else text
        )
        raise StoreUnavailable(f"Redis at {redact_url(settings.url)} refuses {op}s: {what}") from exc
    reason = "wrong_type" if code == "WRONGTYPE" else "store_error"
    metrics.STORE_KEY_ERRORS.labels(op, reason).inc()
    return StoreKeyError(reason, text)


def redis_client(settings: RedisSettings) -> Any:
    """A sync redis-py client for the settings: redis.Redis, or RedisCluster when `cluster` is set."""
    with mapped_errors(settings):
        if settings.cluster:
            from redis.cluster import RedisCluster

            # Connects (and discovers the nodes) now, unlike redis.Redis.
            return RedisCluster.from_url(settings.url, **_connection_kwargs(settings))
        import redis

        return redis.Redis.from_url(settings.url, **_connection_kwargs(settings))


def async_redis_client(settings: RedisSettings) -> Any:
    """The asyncio counterpart of redis_client; connects on first use."""
    with mapped_errors(settings):
        if settings.cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(settings.url, **_connection_kwargs(settings))
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(settings.url, **_connection_kwargs(settings))
