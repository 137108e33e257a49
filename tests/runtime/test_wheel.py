"""An installed wheel is the whole service: it carries sql/ and config/ (as the packages
coupons_sql and coupons_config, service/resources.py), no bench SQL and no tests, and `python -m
service migrate` runs from it in a fresh virtualenv, outside the checkout."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import asyncpg
import pytest

from tests.support.databases import fresh_database_sync
from tests.support.processes import REPO, cli_env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--disable-pip-version-check", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    [built] = out.glob("coupons_sidebar-*.whl")
    return built


async def _counts(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        return (await conn.fetchval("SELECT count(*) FROM schema_migrations"),
                await conn.fetchval("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'yz_%'"))
    finally:
        await conn.close()


def test_the_wheel_carries_the_migrations_and_no_bench_sql(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    migrations = sorted(p.name for p in (REPO / "sql" / "migrations").glob("*.sql"))
    assert migrations and all(f"coupons_sql/migrations/{m}" in names for m in migrations)
    assert "coupons_sql/queries/coupons.sql" in names
    assert "coupons_config/default.toml" in names
    assert "service/cache/lua/prepare.lua" in names and "service/limits/ratelimit.lua" in names
    assert "service/http/static/demo/sidebar.js" in names
    assert not any("bigdata" in n or n.startswith(("bench/", "tests/")) for n in names), names


def test_migrate_runs_from_the_installed_wheel(wheel: Path, tmp_path: Path,
                                               database_url: str) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir),
                                                    "platbase": str(env_dir)}))
    python = env_dir / "bin" / "python"
    # The wheel alone into the fresh environment; its dependencies are this one's, reached
    # through a plain path (a .pth line naming a directory adds it, without running the
    # directory's own .pth files: this checkout's editable install stays out).
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--disable-pip-version-check", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = subprocess.run(
        [str(python), "-c", "import service, coupons_sql, coupons_config; "
         "print(service.__file__, coupons_sql.__file__, coupons_config.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60)
    assert all(path.startswith(str(site)) for path in where.stdout.split()), where.stdout
    with fresh_database_sync(database_url, prefix="wheel") as url:
        result = subprocess.run([str(python), "-m", "service", "migrate"], cwd=tmp_path,
                                env=cli_env(DATABASE_URL=url, LOG_FORMAT="text"),
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        applied, tables = asyncio.run(_counts(url))
    assert applied == len(list((REPO / "sql" / "migrations").glob("*.sql")))
    assert tables >= 8
