"""Redis: the adapter, and the one place its exceptions are translated. What is stored and why —
keys, values, the skip rule — is `dedupe`'s.

The cache is an optimisation, never a source of truth:
- markers are written only after Milvus acknowledged the write (the writer's order), and a marker
  alone never causes a skip — it is verified against Milvus first (`dedupe.unchanged`);
- any Redis failure is a cache miss: a warning, a metric, then the cache is bypassed for
  `retry_after_ms` so a dead or hung Redis costs one bounded wait, not one per batch.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from ingestor import metrics
from ingestor.config import RedisSettings
from ingestor.dedupe import CachedVector, embedding_key, marker_key, pack_vector, unpack_vector
from ingestor.errors import StartupError

log = logging.getLogger(__name__)


# One server-side call per batch: redis-py packs one script call for a fraction of the client CPU
# (and GIL) that a pipeline of two SETs per record costs. KEYS: the vectors' keys, then the
# markers'; ARGV: the two TTLs, the number of vector keys, then one value per key.
_STORE_SCRIPT = """
local ttl_vector, ttl_marker, n_vectors = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 3], 'EX', i <= n_vectors and ttl_vector or ttl_marker)
end
return #KEYS
"""


def refusal(exc: BaseException) -> str | None:
    """What to fix when Redis refused us for good, or None for an outage: wrong credentials or an
    untrusted certificate do not heal by retrying. Says which setting, never its value."""
    if isinstance(exc, redis.AuthenticationError) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith(("WRONGPASS", "NOAUTH", "NOPERM"))
    ):
        return "redis refused the login: check redis.username and redis.password (or redis.password_file)"
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"the Redis server's certificate is not trusted ({cause.verify_message}): check redis.ssl_ca_file "
            "(and redis.ssl_check_hostname)"
        )
    if isinstance(cause, ssl.SSLError):
        return f"TLS with Redis failed ({cause.reason or cause}): check redis.url (rediss://) and the redis.ssl_* files"
    return None


def connect(settings: RedisSettings, timeout_s: float, **options: Any) -> redis.Redis:
    """A client for `settings.url` (set) with its credentials and TLS: the one way every part of
    ingestor opens Redis (the cache, `check`, `stats`). redis-py connects on first use."""
    assert settings.url is not None
    kwargs: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, **options}
    if settings.username is not None:
        kwargs["username"] = settings.username
    if settings.password is not None:
        kwargs["password"] = settings.password.get_secret_value()
    url = settings.url.get_secret_value()
    if url.startswith("rediss://"):
        kwargs["ssl_check_hostname"] = settings.ssl_check_hostname
        for ours, theirs in (
            ("ssl_ca_file", "ssl_ca_certs"),
            ("ssl_certfile", "ssl_certfile"),
            ("ssl_keyfile", "ssl_keyfile"),
        ):
            if getattr(settings, ours) is not None:
                kwargs[theirs] = str(getattr(settings, ours))
    return redis.Redis.from_url(url, **kwargs)


class Cache:
    """Pipelined Redis access: one round trip per batch for lookups, one for writes."""

    def __init__(self, settings: RedisSettings, model_identity: str, namespace: str, dimension: int) -> None:
        self.settings = settings
        self.model_identity = model_identity
        self.namespace = namespace
        self.dimension = dimension
        self._client: redis.Redis | None = None
        self._down_until = 0.0
        self.refused = ""  # what to fix while Redis refuses us (login, certificate); "" otherwise
        if settings.url is not None:
            self._client = connect(
                settings, settings.socket_timeout_ms / 1000.0, retry_on_timeout=False, health_check_interval=30
            )

        # Loaded on first use (EVALSHA, then SCRIPT LOAD if the server lacks it, as after a restart).
        self._store_script = self._client.register_script(_STORE_SCRIPT) if self._client is not None else None

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def _available(self) -> redis.Redis | None:
        if self._client is None or time.monotonic() < self._down_until:
            return None
        return self._client

    def _failed(self, op: str, exc: Exception) -> None:
        kind = type(exc).__name__
        metrics.DEPENDENCY_ERRORS.labels("redis", kind).inc()
        self.refused = refusal(exc) or ""
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            if time.monotonic() >= self._down_until:
                log.warning(
                    "redis %s failed (%s); bypassing the cache for %d ms",
                    op,
                    kind,
                    self.settings.retry_after_ms,
                )
            self._down_until = time.monotonic() + self.settings.retry_after_ms / 1000.0
        else:
            # Redis answered but refused (e.g. OOM under maxmemory noeviction): count and go on.
            log.warning("redis %s refused: %s", op, exc)

    def check_at_start(self) -> bool:
        """Whether Redis answers now. A refusal that retrying cannot heal (credentials, the server's
        certificate) raises StartupError; anything else is an outage the cache rides out."""
        if self._client is None:
            return False
        try:
            return bool(self._client.ping())
        except redis.RedisError as exc:
            reason = refusal(exc)
            if reason is not None:
                raise StartupError(reason) from None
            self._failed("ping", exc)
            return False

    def lookup(
        self, record_ids: Sequence[str], text_shas: Sequence[str]
    ) -> tuple[list[str | None], list[CachedVector | None]]:
        """Markers for `record_ids` and cached vectors for `text_shas`, in one round trip.
        Any failure returns all misses."""
        markers: list[str | None] = [None] * len(record_ids)
        vectors: list[CachedVector | None] = [None] * len(text_shas)
        client = self._available()
        if client is None or (not record_ids and not text_shas):
            return markers, vectors
        p = self.settings.key_prefix
        keys = [marker_key(p, self.namespace, i) for i in record_ids]
        keys += [embedding_key(p, self.model_identity, s) for s in text_shas]
        started = time.perf_counter()
        try:
            values = client.mget(keys)
        except redis.RedisError as exc:
            self._failed("lookup", exc)
            return markers, vectors
        self.refused = ""
        metrics.CACHE_SECONDS.labels("lookup").observe(time.perf_counter() - started)
        n = len(record_ids)
        markers = [v.decode("ascii", "replace") if isinstance(v, bytes) else None for v in values[:n]]
        vectors = [unpack_vector(v if isinstance(v, bytes) else None, self.dimension) for v in values[n:]]
        return markers, vectors

    def store(self, vectors: Mapping[str, CachedVector], markers: Mapping[str, str]) -> None:
        """Write vectors (by text sha) and markers (by id). Call only after Milvus acknowledged."""
        client = self._available()
        if client is None or (not vectors and not markers):
            return
        assert self._store_script is not None  # registered with the client
        p = self.settings.key_prefix
        keys = [embedding_key(p, self.model_identity, sha) for sha in vectors]
        keys += [marker_key(p, self.namespace, record_id) for record_id in markers]
        args: list[Any] = [self.settings.embedding_ttl_s, self.settings.marker_ttl_s, len(vectors)]
        args += [pack_vector(v.vector, v.truncated) for v in vectors.values()]
        args += list(markers.values())
        started = time.perf_counter()
        try:
            self._store_script(keys=keys, args=args, client=client)
        except redis.RedisError as exc:
            self._failed("store", exc)
            return
        self.refused = ""
        metrics.CACHE_SECONDS.labels("store").observe(time.perf_counter() - started)

    def forget(self, record_ids: Sequence[str]) -> None:
        """Delete markers (before the entities are deleted). A failure is logged and ignored: a
        stale marker can never cause a wrong skip, since skips are verified against Milvus."""
        client = self._available()
        if client is None or not record_ids:
            return
        try:
            client.delete(*(marker_key(self.settings.key_prefix, self.namespace, i) for i in record_ids))
        except redis.RedisError as exc:
            self._failed("forget", exc)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
