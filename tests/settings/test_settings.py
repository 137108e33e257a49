"""Settings: toml defaults, environment overrides, keyword overrides, and the checks on load."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from service.resources import CONFIG_DIR
from service.settings import Settings, SettingsError, load_settings

STRONG = "s" * 32  # exactly the minimum: 32 bytes
DEV_SECRET = "dev-only-secret-change-me-0123456789abcdef"


def write_toml(directory: Path, text: str, name: str = "default") -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    write_toml(
        tmp_path,
        f"""
auth_jwt_secret = "{STRONG}"
response_shape = "paginator"
display_tz = "Europe/Berlin"
db_pool_min_size = 3
db_pool_max_size = 6
db_command_timeout_seconds = 2.5
database_url = "postgresql://toml@db-toml/coupons"
""",
    )
    return tmp_path


# --- sources and precedence ---------------------------------------------------------------------


def test_toml_values_are_loaded(config_dir: Path) -> None:
    s = load_settings(env={}, config_dir=config_dir)
    assert s.response_shape == "paginator"
    assert s.display_tz == "Europe/Berlin"
    assert s.tz == ZoneInfo("Europe/Berlin")
    assert (s.db_pool_min_size, s.db_pool_max_size) == (3, 6)
    assert s.db_command_timeout_seconds == 2.5
    assert s.database_url == "postgresql://toml@db-toml/coupons"
    # Not in the file: the dataclass default.
    assert s.redis_url is None
    assert s.max_body_bytes == 65536
    assert s.app_env == "development"


def test_environment_overrides_toml(config_dir: Path) -> None:
    s = load_settings(
        env={
            "RESPONSE_SHAPE": "list",
            "DISPLAY_TZ": "UTC",
            "DATABASE_URL": "postgresql://env@db-env/coupons",
            "REDIS_URL": "redis://cache-env:6379/0",
        },
        config_dir=config_dir,
    )
    assert s.response_shape == "list"
    assert s.display_tz == "UTC"
    assert s.database_url == "postgresql://env@db-env/coupons"
    assert s.redis_url == "redis://cache-env:6379/0"
    # Untouched by the environment: still the file's.
    assert s.db_pool_max_size == 6


def test_empty_environment_value_does_not_override(config_dir: Path) -> None:
    s = load_settings(env={"DATABASE_URL": "", "RESPONSE_SHAPE": ""}, config_dir=config_dir)
    assert s.database_url == "postgresql://toml@db-toml/coupons"
    assert s.response_shape == "paginator"


def test_lower_case_environment_names_are_not_settings(config_dir: Path) -> None:
    s = load_settings(env={"response_shape": "list"}, config_dir=config_dir)
    assert s.response_shape == "paginator"


def test_app_env_file_overrides_default_file(config_dir: Path) -> None:
    write_toml(config_dir, 'response_shape = "list"\ndb_pool_max_size = 20\n', name="staging")
    s = load_settings(env={"APP_ENV": "staging"}, config_dir=config_dir)
    assert s.app_env == "staging"
    assert s.response_shape == "list"
    assert s.db_pool_max_size == 20
    assert s.display_tz == "Europe/Berlin"  # from default.toml
    # Another environment does not read staging.toml.
    assert load_settings(env={}, config_dir=config_dir).db_pool_max_size == 6


def test_environment_overrides_app_env_file(config_dir: Path) -> None:
    write_toml(config_dir, "db_pool_max_size = 20\n", name="staging")
    s = load_settings(env={"APP_ENV": "staging", "DB_POOL_MAX_SIZE": "8"}, config_dir=config_dir)
    assert s.db_pool_max_size == 8


def test_keyword_overrides_win_over_environment_and_toml(config_dir: Path) -> None:
    s = load_settings(
        env={"RESPONSE_SHAPE": "paginator", "DB_POOL_MAX_SIZE": "9"},
        config_dir=config_dir,
        response_shape="list",
        db_pool_max_size=4,
        redis_url="redis://override:6379/1",
    )
    assert s.response_shape == "list"
    assert s.db_pool_max_size == 4
    assert s.redis_url == "redis://override:6379/1"


def test_an_empty_config_dir_starts_from_the_shipped_defaults(tmp_path: Path) -> None:
    env = {"AUTH_JWT_SECRET": STRONG, "APP_ENV": "staging"}  # no staging.toml anywhere
    s = load_settings(env=env, config_dir=tmp_path)
    assert s.auth_jwt_secret == STRONG
    assert s == load_settings(env=env)


def test_every_default_is_written_once_in_the_shipped_file() -> None:
    """config/default.toml gives every setting that cannot be unset its default, and the
    schema writes none (loading.py refuses a setting no file gives)."""
    with (CONFIG_DIR / "default.toml").open("rb") as fh:
        shipped = tomllib.load(fh)
    for field in dataclasses.fields(Settings):
        assert field.default is dataclasses.MISSING, field.name
        if field.name != "app_env" and str(field.type) != "str | None":
            assert field.name in shipped, field.name


# --- types ----------------------------------------------------------------------------------------


def test_environment_strings_are_coerced_to_int_and_float(config_dir: Path) -> None:
    s = load_settings(
        env={
            "DB_POOL_MIN_SIZE": "1",
            "DB_POOL_MAX_SIZE": "7",
            "MAX_BODY_BYTES": "2048",
            "AUTH_JWT_LEEWAY_SECONDS": "0",
            "DB_COMMAND_TIMEOUT_SECONDS": "0.75",
            "READINESS_TIMEOUT_SECONDS": "3",
        },
        config_dir=config_dir,
    )
    assert s.db_pool_min_size == 1 and type(s.db_pool_min_size) is int
    assert s.db_pool_max_size == 7 and type(s.db_pool_max_size) is int
    assert s.max_body_bytes == 2048 and type(s.max_body_bytes) is int
    assert s.auth_jwt_leeway_seconds == 0 and type(s.auth_jwt_leeway_seconds) is int
    assert s.db_command_timeout_seconds == 0.75 and type(s.db_command_timeout_seconds) is float
    assert s.readiness_timeout_seconds == 3.0 and type(s.readiness_timeout_seconds) is float


def test_keyword_overrides_are_coerced_too(config_dir: Path) -> None:
    s = load_settings(env={}, config_dir=config_dir, db_pool_max_size="5",
                      readiness_timeout_seconds=2)
    assert s.db_pool_max_size == 5 and type(s.db_pool_max_size) is int
    assert s.readiness_timeout_seconds == 2.0 and type(s.readiness_timeout_seconds) is float


def test_toml_int_for_float_setting_becomes_float(tmp_path: Path) -> None:
    write_toml(tmp_path, f'auth_jwt_secret = "{STRONG}"\ndb_command_timeout_seconds = 4\n')
    s = load_settings(env={}, config_dir=tmp_path)
    assert s.db_command_timeout_seconds == 4.0 and type(s.db_command_timeout_seconds) is float


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("DB_POOL_MIN_SIZE", "two"),
        ("DB_POOL_MAX_SIZE", "1.5"),
        ("MAX_BODY_BYTES", "64k"),
        ("AUTH_JWT_LEEWAY_SECONDS", " "),
        ("DB_COMMAND_TIMEOUT_SECONDS", "fast"),
        ("READINESS_TIMEOUT_SECONDS", "1s"),
    ],
)
def test_bad_number_in_environment_names_the_setting(config_dir: Path, name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=name) as info:
        load_settings(env={name: raw}, config_dir=config_dir)
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize("value", ["true", "[1, 2]", '"many"', "3.7"])
def test_bad_int_in_toml_is_refused(tmp_path: Path, value: str) -> None:
    # 3.7 is not an int: truncating it to 3 would hide a typo in the file.
    write_toml(tmp_path, f'auth_jwt_secret = "{STRONG}"\ndb_pool_max_size = {value}\n')
    with pytest.raises(SettingsError, match="DB_POOL_MAX_SIZE"):
        load_settings(env={}, config_dir=tmp_path)


def test_unknown_toml_key_is_refused_and_named(tmp_path: Path) -> None:
    write_toml(tmp_path, f'auth_jwt_secret = "{STRONG}"\nresponse_shap = "list"\n')
    with pytest.raises(SettingsError, match="response_shap"):
        load_settings(env={}, config_dir=tmp_path)


def test_unknown_key_in_app_env_toml_is_refused(config_dir: Path) -> None:
    write_toml(config_dir, "pool_size = 3\n", name="production")
    with pytest.raises(SettingsError, match="pool_size"):
        load_settings(env={"APP_ENV": "production", "AUTH_JWT_SECRET": STRONG},
                      config_dir=config_dir)


# --- checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["bogus", "LIST", "", "paginator "])
def test_bad_response_shape(tmp_path: Path, shape: str) -> None:
    with pytest.raises(SettingsError, match="RESPONSE_SHAPE"):
        load_settings(env={"AUTH_JWT_SECRET": STRONG}, config_dir=tmp_path, response_shape=shape)


@pytest.mark.parametrize("shape", ["list", "paginator"])
def test_both_response_shapes_accepted(tmp_path: Path, shape: str) -> None:
    s = load_settings(env={"AUTH_JWT_SECRET": STRONG, "RESPONSE_SHAPE": shape}, config_dir=tmp_path)
    assert s.response_shape == shape


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "Asia/Shang_hai", "../../etc/passwd"])
def test_unknown_display_tz(tmp_path: Path, tz: str) -> None:
    with pytest.raises(SettingsError, match="DISPLAY_TZ"):
        load_settings(env={"AUTH_JWT_SECRET": STRONG, "DISPLAY_TZ": tz}, config_dir=tmp_path)


def test_display_tz_default_is_shanghai(tmp_path: Path) -> None:
    s = load_settings(env={"AUTH_JWT_SECRET": STRONG}, config_dir=tmp_path)
    assert s.display_tz == "Asia/Shanghai"
    assert s.tz == ZoneInfo("Asia/Shanghai")


def test_secret_shorter_than_32_bytes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="AUTH_JWT_SECRET"):
        load_settings(env={"AUTH_JWT_SECRET": "s" * 31}, config_dir=tmp_path)
    assert load_settings(env={"AUTH_JWT_SECRET": "s" * 32}, config_dir=tmp_path)


def test_secret_length_counts_bytes_not_characters(tmp_path: Path) -> None:
    # "密" is 3 bytes in UTF-8: 11 of them are 33 bytes (enough), 10 are 30 (too short).
    assert load_settings(env={"AUTH_JWT_SECRET": "密" * 11}, config_dir=tmp_path)
    with pytest.raises(SettingsError, match="AUTH_JWT_SECRET"):
        load_settings(env={"AUTH_JWT_SECRET": "密" * 10}, config_dir=tmp_path)


def test_dev_secret_refused_in_production() -> None:
    # The repository's own config/default.toml holds the development secret.
    with pytest.raises(SettingsError, match="AUTH_JWT_SECRET"):
        load_settings(env={"APP_ENV": "production"})
    with pytest.raises(SettingsError, match="AUTH_JWT_SECRET"):
        load_settings(env={"APP_ENV": "production", "AUTH_JWT_SECRET": DEV_SECRET},
                      config_dir=Path("/nonexistent"))
    # ...but accepted outside production, and a real secret is accepted in production.
    assert load_settings(env={"APP_ENV": "development"}).auth_jwt_secret == DEV_SECRET
    s = load_settings(env={"APP_ENV": "production", "AUTH_JWT_SECRET": STRONG})
    assert s.app_env == "production" and s.auth_jwt_secret == STRONG


@pytest.mark.parametrize(
    ("min_size", "max_size", "ok"),
    [(1, 1, True), (2, 10, True), (5, 5, True), (0, 10, False), (-1, 10, False), (6, 5, False)],
)
def test_pool_sizes(tmp_path: Path, min_size: int, max_size: int, ok: bool) -> None:
    env = {"AUTH_JWT_SECRET": STRONG, "DB_POOL_MIN_SIZE": str(min_size),
           "DB_POOL_MAX_SIZE": str(max_size)}
    if ok:
        s = load_settings(env=env, config_dir=tmp_path)
        assert (s.db_pool_min_size, s.db_pool_max_size) == (min_size, max_size)
    else:
        with pytest.raises(SettingsError, match="DB_POOL_MIN_SIZE"):
            load_settings(env=env, config_dir=tmp_path)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("db_command_timeout_seconds", 0, "DB_COMMAND_TIMEOUT_SECONDS"),
        ("readiness_timeout_seconds", -1.0, "READINESS_TIMEOUT_SECONDS"),
        ("max_body_bytes", 1023, "MAX_BODY_BYTES"),
        ("auth_jwt_leeway_seconds", -1, "AUTH_JWT_LEEWAY_SECONDS"),
        ("db_statement_timeout_ms", 0, "DB_STATEMENT_TIMEOUT_MS"),
        ("db_acquire_timeout_seconds", 0, "DB_ACQUIRE_TIMEOUT_SECONDS"),
        ("http_max_line_bytes", 1023, "HTTP_MAX_LINE_BYTES"),
        ("http_max_field_bytes", 65537, "HTTP_MAX_FIELD_BYTES"),
        ("http_max_headers", 15, "HTTP_MAX_HEADERS"),
        ("http_keepalive_seconds", 0, "HTTP_KEEPALIVE_SECONDS"),
        ("body_timeout_seconds", -1, "BODY_TIMEOUT_SECONDS"),
        ("request_timeout_seconds", 0, "REQUEST_TIMEOUT_SECONDS"),
        ("observe_flush_seconds", 0, "OBSERVE_FLUSH_SECONDS"),
        ("rate_limit_staff_per_minute", -1, "RATE_LIMIT_STAFF_PER_MINUTE"),
        ("rate_limit_member_burst", 0, "RATE_LIMIT_MEMBER_BURST"),
        ("contact_cache_size", 0, "CONTACT_CACHE_SIZE"),
        ("rate_limit_lease", 0, "RATE_LIMIT_LEASE"),
        ("rate_limit_lease_seconds", 0, "RATE_LIMIT_LEASE_SECONDS"),
    ],
)
def test_other_ranges(tmp_path: Path, name: str, value: float, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env={"AUTH_JWT_SECRET": STRONG}, config_dir=tmp_path, **{name: value})


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


# --- the object -----------------------------------------------------------------------------------


def test_settings_are_frozen(config_dir: Path) -> None:
    s = load_settings(env={}, config_dir=config_dir)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.response_shape = "list"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.auth_jwt_secret = "x"  # type: ignore[misc]
    assert s.response_shape == "paginator"
    # A changed copy goes through the same checks.
    with pytest.raises(SettingsError, match="RESPONSE_SHAPE"):
        dataclasses.replace(s, response_shape="bogus")


def test_masked_hides_secret_and_url_passwords(tmp_path: Path) -> None:
    s = load_settings(
        env={
            "AUTH_JWT_SECRET": "super-secret-value-0123456789abcdef",
            "DATABASE_URL": "postgresql://coupons_app:pg-pass-123@db.internal:5432/coupons",
            "REDIS_URL": "redis://cacheuser:redis-pass-456@cache.internal:6379/0",
        },
        config_dir=tmp_path,
    )
    masked = s.masked()
    assert list(masked) == [f.name for f in dataclasses.fields(Settings)]
    assert masked["auth_jwt_secret"] == "***"
    assert masked["database_url"] == "postgresql://coupons_app:***@db.internal:5432/coupons"
    assert masked["redis_url"] == "redis://cacheuser:***@cache.internal:6379/0"
    text = repr(masked)
    for secret in ("super-secret-value", "pg-pass-123", "redis-pass-456"):
        assert secret not in text
    # Everything else as it is.
    assert masked["display_tz"] == "Asia/Shanghai"
    assert masked["db_pool_max_size"] == 10
    # The object itself is unchanged.
    assert s.database_url == "postgresql://coupons_app:pg-pass-123@db.internal:5432/coupons"


def test_masked_password_with_at_sign_and_empty_user(tmp_path: Path) -> None:
    s = load_settings(
        env={
            "AUTH_JWT_SECRET": STRONG,
            "DATABASE_URL": "postgresql://app:p@ss@db:5432/coupons?sslmode=require",
            "REDIS_URL": "redis://:only-pass@cache:6379/2",
        },
        config_dir=tmp_path,
    )
    masked = s.masked()
    assert masked["database_url"] == "postgresql://app:***@db:5432/coupons?sslmode=require"
    assert masked["redis_url"] == "redis://:***@cache:6379/2"
    assert "ss@db" not in masked["database_url"].split("***")[0]
    assert "only-pass" not in repr(masked)


def test_masked_keeps_urls_without_password_and_unset_ones(tmp_path: Path) -> None:
    s = load_settings(
        env={"AUTH_JWT_SECRET": STRONG, "DATABASE_URL": "postgresql://app@db/coupons"},
        config_dir=tmp_path,
    )
    masked = s.masked()
    assert masked["database_url"] == "postgresql://app@db/coupons"
    assert masked["redis_url"] is None


def test_repository_default_toml_loads() -> None:
    assert (CONFIG_DIR / "default.toml").is_file()
    s = load_settings(env={})
    assert s.app_env == "development"
    assert s.response_shape == "list"
    assert s.display_tz == "Asia/Shanghai"
    assert s.auth_jwt_secret == DEV_SECRET
    # Unset in the file: the embedded servers are used.
    assert s.database_url is None and s.redis_url is None
    assert s.db_pool_min_size <= s.db_pool_max_size
    assert s.max_body_bytes == 64 * 1024


# --- running it, past one machine -----------------------------------------------------------


@pytest.mark.parametrize("env", [
    {"REDIS_URL": "http://cache:6379"},
    {"DATABASE_READ_URL": "mysql://replica/coupons"},
    {"DATABASE_LISTEN_URL": "redis://x"},
    {"DB_STATEMENT_CACHE_SIZE": "-1"},
    {"SHUTDOWN_DRAIN_SECONDS": "-1"},
    {"SHUTDOWN_GRACE_SECONDS": "0"},
    {"LOG_FORMAT": "xml"},
    {"LOG_LEVEL": "LOUD"},
])
def test_operating_settings_are_checked(tmp_path: Path, env: dict[str, str]) -> None:
    name = next(iter(env))
    with pytest.raises(SettingsError, match=name):
        load_settings(env={"AUTH_JWT_SECRET": STRONG, **env}, config_dir=tmp_path)


def test_cluster_url_and_replica_urls_are_masked(tmp_path: Path) -> None:
    s = load_settings(env={
        "AUTH_JWT_SECRET": STRONG,
        "REDIS_URL": "redis+cluster://:cl-pass-1@r1:7000,r2:7001/",
        "DATABASE_READ_URL": "postgresql://reader:ro-pass-2@replica:5432/coupons",
        "DATABASE_LISTEN_URL": "postgresql://app:li-pass-3@primary:5432/coupons",
        "DB_STATEMENT_CACHE_SIZE": "0",
        "LOG_LEVEL": "debug",
    }, config_dir=tmp_path)
    assert s.redis_cluster and s.db_statement_cache_size == 0
    text = repr(s.masked())
    for secret in ("cl-pass-1", "ro-pass-2", "li-pass-3"):
        assert secret not in text
    assert s.masked()["database_read_url"] == "postgresql://reader:***@replica:5432/coupons"
    assert not load_settings(env={"AUTH_JWT_SECRET": STRONG, "REDIS_URL": "redis://r:6379/0"},
                             config_dir=tmp_path).redis_cluster
