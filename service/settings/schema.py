"""The settings' schema: one frozen object, each field checked when it is built."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.auth.keys import load_public_key

RESPONSE_SHAPES = ("list", "paginator")
ERROR_STYLES = ("http", "mall")
SECRET_FIELDS = frozenset({"auth_jwt_secret", "internal_service_token"})
URL_FIELDS = frozenset({"database_url", "database_read_url", "database_listen_url", "redis_url"})
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# HS256 keys shorter than the hash output are brute-forceable (RFC 7518 §3.2).
MIN_SECRET_BYTES = 32
# Clock skew tolerated on exp/nbf/iat: larger values would stretch every token's life.
MAX_LEEWAY_SECONDS = 60


class SettingsError(ValueError):
    """A setting is missing or out of its range; the message names it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, typed and checked; the defaults are config/default.toml's (loading.py)."""

    app_env: str
    database_url: str | None
    # A streaming replica for the page query only (docs/operations.md, "Past one machine");
    # unset: the primary.
    database_read_url: str | None
    # The LISTEN connection's server when DATABASE_URL goes through a transaction pooler
    # (PgBouncer cannot hold a LISTEN); unset: DATABASE_URL.
    database_listen_url: str | None
    # 100 is asyncpg's default; 0 under PgBouncer transaction pooling (docs/operations.md).
    db_statement_cache_size: int
    redis_url: str | None
    auth_jwt_secret: str
    auth_jwt_leeway_seconds: int
    # The mall's login service signs RS256/ES256 tokens: its public key, PEM text or a file path.
    auth_jwt_public_key: str
    response_shape: str
    # How an error's status travels: "http" (its own HTTP status) or "mall" (HTTP 200 with
    # result 0, as the mall's pages need): service/http/errors.py `styled`.
    error_style: str
    display_tz: str
    data_dir: str
    db_pool_min_size: int
    db_pool_max_size: int
    db_command_timeout_seconds: float
    # Server-side bound of every pooled statement, and of waiting for a pooled connection: a
    # slow database answers 503 within about a second instead of piling requests up.
    db_statement_timeout_ms: int
    db_acquire_timeout_seconds: float
    readiness_timeout_seconds: float
    max_body_bytes: int
    # HTTP bounds (aiohttp's parser and connection handling): docs/security.md, "Bounds".
    http_max_line_bytes: int
    http_max_field_bytes: int
    http_max_headers: int
    http_keepalive_seconds: float
    body_timeout_seconds: float  # reading a request's body (408 past it)
    request_timeout_seconds: float  # a whole request, a safety net (503 past it)
    # Page requests waiting on Redis or PostgreSQL at once, per process; past it, a new one is
    # shed at once with 503 and Retry-After (docs/operations.md, "Overload"). 0: no bound.
    max_requests_in_flight: int
    # The page cache (docs/cache.md).
    cache_ttl_seconds: int
    cache_prefix: str
    redis_timeout_seconds: float
    redis_max_connections: int
    redis_breaker_failures: int
    redis_breaker_reset_seconds: float
    cache_lease_ms: int
    listener_heartbeat_seconds: float
    coupon_holders_max: int
    total_cap: int  # a tab's `total` is exact up to this many rows
    # The hot path (service/http/coupons.py): the memos of resolved requests, the synchronous
    # answer of a local hit, prepared bytes. False: every request takes aiohttp's general path.
    hot_path_enabled: bool
    cache_enabled: bool  # False: every page from PostgreSQL
    local_cache_enabled: bool  # the process-local layer in front of Redis
    local_cache_max_bytes: int
    # A safety bound only: every way an invalidation can be missed ends the coverage and empties
    # the layer (service/cache/listener.py); docs/cache.md says why 60.
    local_cache_ttl_seconds: float
    # Rate limits (GCRA in Redis) per staff member and per member; 0 turns one off.
    rate_limit_staff_per_minute: int
    rate_limit_staff_burst: int
    rate_limit_member_per_minute: int
    rate_limit_member_burst: int
    # Allowances a worker takes from Redis at once and spends locally for this long (1: one
    # Redis call per request); service/limits/limiter.py.
    rate_limit_lease: int
    rate_limit_lease_seconds: float
    # Local admission (service/limits/limiter.py): requests per party a process admits before
    # Redis has counted them (0: every party's first request waits for Redis), and how
    # often they are charged to Redis.
    rate_limit_local_admits: int
    rate_limit_charge_seconds: float
    # In-process map of (tenant, staff, external contact) to member, for staff tokens.
    contact_cache_size: int
    # Resolved requests and verified tokens remembered per process (the active population's
    # keys; docs/performance.md, "Memory").
    memo_entries: int
    # The mall's service token for /internal/* (never a staff token).
    internal_service_token: str
    # Running it (docs/operations.md, "Process model"): after SIGTERM /readyz answers 503 for
    # shutdown_drain_seconds while still serving, then the listener closes and requests in
    # flight get up to shutdown_grace_seconds to finish.
    shutdown_drain_seconds: float
    shutdown_grace_seconds: float
    log_format: str
    log_level: str
    # Request log lines and request metrics are written in batches (service/observe/recorder.py): a
    # request appears in them up to this late.
    observe_flush_seconds: float
    # The demo sidebar page (/demo/, which mints demo tokens) and Swagger UI (/docs/):
    # config/development.toml turns them on; any other APP_ENV refuses them.
    dev_pages: bool

    def __post_init__(self) -> None:
        if self.response_shape not in RESPONSE_SHAPES:
            raise SettingsError(f"RESPONSE_SHAPE must be one of {RESPONSE_SHAPES}")
        if self.error_style not in ERROR_STYLES:
            raise SettingsError(f"ERROR_STYLE must be one of {ERROR_STYLES}")
        if self.dev_pages and self.app_env != "development":
            raise SettingsError("DEV_PAGES (the demo page, which mints tokens) is for "
                                "APP_ENV=development only")
        try:
            ZoneInfo(self.display_tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SettingsError(f"DISPLAY_TZ {self.display_tz!r} is not a known time zone") from exc
        if len(self.auth_jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(f"AUTH_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        if self.app_env == "production" and self.auth_jwt_secret.startswith("dev-only"):
            raise SettingsError("AUTH_JWT_SECRET still holds the development default")
        if not 1 <= self.db_pool_min_size <= self.db_pool_max_size:
            raise SettingsError("DB_POOL_MIN_SIZE must be >= 1 and <= DB_POOL_MAX_SIZE")
        for name in ("db_command_timeout_seconds", "readiness_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be positive")
        if self.max_body_bytes < 1024:
            raise SettingsError("MAX_BODY_BYTES must be at least 1024")
        # Unset: /internal/* refuses every call (a deployment without the mall's writer).
        if self.internal_service_token and len(self.internal_service_token) < MIN_SECRET_BYTES:
            raise SettingsError(f"INTERNAL_SERVICE_TOKEN must be at least {MIN_SECRET_BYTES} bytes")
        if self.app_env == "production" and self.internal_service_token.startswith("dev-only"):
            raise SettingsError("INTERNAL_SERVICE_TOKEN still holds the development default")
        if self.internal_service_token == self.auth_jwt_secret:
            raise SettingsError("INTERNAL_SERVICE_TOKEN must differ from AUTH_JWT_SECRET")
        if not 1 <= self.cache_ttl_seconds <= 86_400:
            raise SettingsError("CACHE_TTL_SECONDS must be between 1 and 86400")
        if not self.cache_prefix or any(c in self.cache_prefix for c in "{}* "):
            raise SettingsError("CACHE_PREFIX must be non-empty, without braces, '*' or spaces")
        for name in ("redis_timeout_seconds", "redis_breaker_reset_seconds",
                     "listener_heartbeat_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be positive")
        if not 0 < self.local_cache_ttl_seconds <= self.cache_ttl_seconds:
            raise SettingsError("LOCAL_CACHE_TTL_SECONDS must be positive and <= CACHE_TTL_SECONDS")
        for name in ("redis_max_connections", "redis_breaker_failures", "cache_lease_ms",
                     "coupon_holders_max", "local_cache_max_bytes", "total_cap"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name.upper()} must be at least 1")
        if self.redis_url is not None and urlsplit(self.redis_url).scheme not in REDIS_SCHEMES:
            raise SettingsError(f"REDIS_URL must use one of the schemes {REDIS_SCHEMES}")
        for name in ("database_url", "database_read_url", "database_listen_url"):
            url = getattr(self, name)
            if url is not None and urlsplit(url).scheme not in ("postgres", "postgresql"):
                raise SettingsError(f"{name.upper()} must be a postgresql:// URL")
        if self.db_statement_cache_size < 0:
            raise SettingsError("DB_STATEMENT_CACHE_SIZE must not be negative")
        if self.shutdown_drain_seconds < 0 or self.shutdown_grace_seconds <= 0:
            raise SettingsError("SHUTDOWN_DRAIN_SECONDS must be >= 0 and "
                                "SHUTDOWN_GRACE_SECONDS positive")
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"LOG_FORMAT must be one of {LOG_FORMATS}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL must be one of {LOG_LEVELS}")
        if not 0 <= self.auth_jwt_leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise SettingsError(
                f"AUTH_JWT_LEEWAY_SECONDS must be between 0 and {MAX_LEEWAY_SECONDS}")
        if self.auth_jwt_public_key:
            try:
                load_public_key(self.auth_jwt_public_key)
            except ValueError as exc:
                raise SettingsError(f"AUTH_JWT_PUBLIC_KEY: {exc}") from None
        if self.db_statement_timeout_ms < 1:
            raise SettingsError("DB_STATEMENT_TIMEOUT_MS must be at least 1")
        for name in ("db_acquire_timeout_seconds", "http_keepalive_seconds",
                     "body_timeout_seconds", "request_timeout_seconds",
                     "observe_flush_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be positive")
        for name in ("http_max_line_bytes", "http_max_field_bytes"):
            if not 1024 <= getattr(self, name) <= 65536:
                raise SettingsError(f"{name.upper()} must be between 1024 and 65536")
        if not 16 <= self.http_max_headers <= 256:
            raise SettingsError("HTTP_MAX_HEADERS must be between 16 and 256")
        for name in ("rate_limit_staff_per_minute", "rate_limit_member_per_minute",
                     "max_requests_in_flight", "rate_limit_local_admits"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name.upper()} must not be negative (0: off)")
        for name in ("rate_limit_staff_burst", "rate_limit_member_burst",
                     "contact_cache_size", "rate_limit_lease", "memo_entries"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name.upper()} must be at least 1")
        if self.rate_limit_lease_seconds <= 0:
            raise SettingsError("RATE_LIMIT_LEASE_SECONDS must be positive")
        if not 0 < self.rate_limit_charge_seconds <= 1:
            raise SettingsError("RATE_LIMIT_CHARGE_SECONDS must be positive and at most 1")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.display_tz)

    @property
    def redis_cluster(self) -> bool:
        return self.redis_url is not None and "+cluster" in urlsplit(self.redis_url).scheme

    @property
    def data_path(self) -> Path:
        path = Path(self.data_dir)
        # Relative to where the command runs (`make run`: the checkout).
        return path if path.is_absolute() else Path.cwd() / path

    def masked(self) -> dict[str, Any]:
        """The settings as they may be logged: secrets and URL passwords hidden."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in SECRET_FIELDS:
                value = "***" if value else ""
            elif field.name in URL_FIELDS and value:
                value = mask_url(value)
            elif field.name == "auth_jwt_public_key" and value.lstrip().startswith("-----"):
                value = "<PEM text>"  # public, but long: the log shows only that it is set
            out[field.name] = value
        return out


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


