"""Databases of a test's own on the suite's PostgreSQL server (created with a random name,
dropped forcibly afterwards), and the contract's tables, which every fresh database is checked
against once migrated."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

# The contract's tables and columns ("Tables"): a writer who knows only these must be able to
# insert, so every other column needs a default (or may be NULL).
CONTRACT_COLUMNS = {
    "yz_coupon": {
        "id", "uniacid", "name", "coupon_method", "deduct", "discount", "enough", "use_type",
        "category_ids", "categorynames", "goods_ids", "goods_names", "storeids", "storenames",
        "suppliernames", "time_limit", "time_days", "time_start", "time_end", "total", "money",
        "credit", "plugin_id", "use_conditions", "created_at", "updated_at",
    },
    "yz_member_coupon": {
        "id", "uniacid", "uid", "coupon_id", "used", "use_time", "get_time",
        "is_member_deleted", "created_at", "updated_at",
    },
    "yz_member": {"uid", "uniacid", "nickname"},
    "yz_store": {"id", "uniacid", "store_name"},
    "yz_goods": {"id", "uniacid", "title"},
    "yz_hotel": {"id", "uniacid", "hotel_name"},
    "yz_coupon_hotel": {"coupon_id", "hotel_id"},
    "yz_tenant_setting": {
        "uniacid", "coupon_transfer", "store_plugin", "hotel_plugin", "near_expiration_days",
    },
}  # fmt: skip


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def quote_ident(name: str) -> str:
    assert name.replace("_", "").isalnum() and name.isascii(), name
    return '"' + name.replace('"', '""') + '"'


async def create_database(server_url: str, prefix: str = "fresh") -> str:
    """A new, empty database with a random name on the server of `server_url`; its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        # CREATE DATABASE takes no parameters: the name is generated above, quoted here.
        await admin.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await admin.close()
    return with_database(server_url, name)


async def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def fresh_database(server_url: str, prefix: str = "fresh") -> AsyncIterator[str]:
    """A fresh database for the block, dropped (forcibly) afterwards."""
    url = await create_database(server_url, prefix)
    try:
        yield url
    finally:
        await drop_database(url)


@contextlib.contextmanager
def fresh_database_sync(server_url: str, prefix: str = "fresh") -> Iterator[str]:
    """The same for synchronous tests (no event loop running in this thread)."""
    url = asyncio.run(create_database(server_url, prefix))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))
