"""Settings: one frozen object from `config/*.toml` plus environment overrides, checked on load."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.resources import CONFIG_DIR

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
# RSA keys below 2048 bits are factorable with public means (NIST SP 800-131A).
MIN_RSA_BITS = 2048


class SettingsError(ValueError):
    """A setting is missing or out of its range; the message names it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    app_env: str = "development"
    database_url: str | None = None
    # A streaming replica for the page query only (README "Past one machine"); unset: primary.
    database_read_url: str | None = None
    # The LISTEN connection's server when DATABASE_URL goes through a transaction pooler
    # (PgBouncer cannot hold a LISTEN); unset: DATABASE_URL.
    database_listen_url: str | None = None
    # 100 is asyncpg's default; 0 under PgBouncer transaction pooling (README).
    db_statement_cache_size: int = 100
    redis_url: str | None = None
    auth_jwt_secret: str = ""
    auth_jwt_leeway_seconds: int = 10
    # The mall's login service signs RS256/ES256 tokens: its public key, PEM text or a file path.
    auth_jwt_public_key: str = ""
    response_shape: str = "list"
    # How an error's status travels: "http" (its own HTTP status) or "mall" (HTTP 200 with
    # result 0, as the mall's pages need): service/errors.py `styled`.
    error_style: str = "http"
    display_tz: str = "Asia/Shanghai"
    data_dir: str = ".data"
    db_pool_min_size: int = 2
    db_pool_max_size: int = 10
    db_command_timeout_seconds: float = 2.0
    # Server-side bound of every pooled statement, and of waiting for a pooled connection: a
    # slow database answers 503 within about a second instead of piling requests up.
    db_statement_timeout_ms: int = 1000
    db_acquire_timeout_seconds: float = 1.0
    readiness_timeout_seconds: float = 1.0
    max_body_bytes: int = 65536
    # HTTP bounds (aiohttp's parser and connection handling): README "Security".
    http_max_line_bytes: int = 8190
    http_max_field_bytes: int = 8190
    http_max_headers: int = 64
    http_keepalive_seconds: float = 15.0
    body_timeout_seconds: float = 5.0      # reading a request's body (408 past it)
    request_timeout_seconds: float = 10.0  # a whole request, a safety net (503 past it)
    # The page cache (README: "The cache").
    cache_ttl_seconds: int = 600
    cache_prefix: str = "cp"
    redis_timeout_seconds: float = 0.05
    redis_max_connections: int = 64
    redis_breaker_failures: int = 3
    redis_breaker_reset_seconds: float = 1.0
    cache_lease_ms: int = 2000
    listener_heartbeat_seconds: float = 1.0
    coupon_holders_max: int = 10_000
    total_cap: int = 5_000  # a tab's `total` is exact up to this many rows
    cache_enabled: bool = True           # False: every page from PostgreSQL
    local_cache_enabled: bool = True     # the process-local layer in front of Redis
    local_cache_max_bytes: int = 64 * 1024 * 1024
    # A safety bound only: every way an invalidation can be missed ends the coverage and empties
    # the layer (service/listener.py); README "Local cache" says why 60.
    local_cache_ttl_seconds: float = 60.0
    # Rate limits (GCRA in Redis) per staff member and per member; 0 turns one off.
    rate_limit_staff_per_minute: int = 600
    rate_limit_staff_burst: int = 60
    rate_limit_member_per_minute: int = 300
    rate_limit_member_burst: int = 30
    # Allowances a worker takes from Redis at once and spends locally for this long (1: one
    # Redis call per request); service/limits.py.
    rate_limit_lease: int = 4
    rate_limit_lease_seconds: float = 1.0
    # In-process map of (tenant, staff, external contact) to member, for staff tokens.
    contact_cache_size: int = 10_000
    # The mall's service token for /internal/* (never a staff token).
    internal_service_token: str = ""
    # Running it (README "Process model"): after SIGTERM /readyz answers 503 for
    # shutdown_drain_seconds while still serving, then the listener closes and requests in
    # flight get up to shutdown_grace_seconds to finish.
    shutdown_drain_seconds: float = 0.0
    shutdown_grace_seconds: float = 10.0
    log_format: str = "json"
    log_level: str = "INFO"
    # Request log lines and request metrics are written in batches (service/observe.py): a
    # request appears in them up to this late.
    observe_flush_seconds: float = 0.25
    # The demo sidebar page (/demo/, which mints demo tokens) and Swagger UI (/docs/):
    # config/development.toml turns them on; any other APP_ENV refuses them.
    dev_pages: bool = False

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
        if self.auth_jwt_leeway_seconds < 0:
            raise SettingsError("AUTH_JWT_LEEWAY_SECONDS must not be negative")
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
        for name in ("rate_limit_staff_per_minute", "rate_limit_member_per_minute"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name.upper()} must not be negative (0: off)")
        for name in ("rate_limit_staff_burst", "rate_limit_member_burst",
                     "contact_cache_size", "rate_limit_lease"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name.upper()} must be at least 1")
        if self.rate_limit_lease_seconds <= 0:
            raise SettingsError("RATE_LIMIT_LEASE_SECONDS must be positive")

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


def load_public_key(value: str) -> tuple[Any, str]:
    """The verification key and its one JWS algorithm, from PEM text or a PEM file's path:
    an RSA key (>= 2048 bits) verifies RS256, a P-256 key ES256. ValueError says what is wrong."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = value.strip()
    if not text.startswith("-----BEGIN"):
        path = Path(text)
        if not path.is_file():
            raise ValueError("neither PEM text nor the path of a readable file")
        text = path.read_text(encoding="ascii", errors="replace").strip()
    elif "\n" not in text and "\\n" in text:
        text = text.replace("\\n", "\n")  # an env file that escaped the PEM's newlines
    try:
        key = load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        raise ValueError("not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"an RSA key needs at least {MIN_RSA_BITS} bits")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ValueError("only RSA (RS256) and P-256 (ES256) public keys are accepted")


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, kind: type, raw: Any) -> Any:
    if raw is None:
        return None
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise SettingsError(f"{name.upper()} must be true or false, got {raw!r}")
    try:
        if kind is int and not isinstance(raw, bool):
            # int(3.7) would silently truncate a typo in a toml file.
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(raw)
        if kind is float and not isinstance(raw, bool):
            return float(raw)
        if kind is str:
            return str(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name.upper()} must be a {kind.__name__}, got {raw!r}") from exc
    raise SettingsError(f"{name.upper()} must be a {kind.__name__}, got {raw!r}")


_FIELD_TYPES = {"int": int, "float": float, "str": str, "str | None": str, "bool": bool}


def load_settings(
    env: Mapping[str, str] | None = None, config_dir: Path = CONFIG_DIR, **overrides: Any
) -> Settings:
    """`config/default.toml`, then `config/<APP_ENV>.toml`, then the environment, then overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    app_env = env.get("APP_ENV", "development")
    for name in ("default", app_env):
        path = config_dir / f"{name}.toml"
        if path.is_file():
            with path.open("rb") as fh:
                values.update(tomllib.load(fh))
    values["app_env"] = app_env
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    unknown = set(values) - set(fields)
    if unknown:
        raise SettingsError(f"unknown settings in config: {sorted(unknown)}")
    for name in fields:
        raw = env.get(name.upper())
        if raw is not None and raw != "":
            values[name] = raw
    values.update(overrides)
    typed = {
        name: _coerce(name, _FIELD_TYPES[str(fields[name].type)], value)
        for name, value in values.items()
    }
    return Settings(**typed)
