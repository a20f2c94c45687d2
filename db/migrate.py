"""Apply migrations and prepare the app role; also tells whether a database is current."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.engine import create_engine, to_async_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(owner_url: str, app_role: str) -> Config:
    """An in-memory alembic config pointing at our migrations folder."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # configparser interpolates '%': URL-encoded socket paths (embedded server) need escaping.
    url = to_async_url(owner_url).render_as_string(False).replace("%", "%%")
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["app_role"] = app_role
    return cfg


def head_revision() -> str:
    """The newest migration revision shipped with this code."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://x/y", "fieldsync_app"))
    head = script.get_current_head()
    assert head is not None
    return head


def upgrade(owner_url: str, *, app_role: str, app_password: str | None) -> None:
    """Migrate to head and (re)set the app role's password when one is configured.

    Blocking: alembic's env runs its own event loop, so call this from sync code or a thread.
    """
    command.upgrade(alembic_config(owner_url, app_role), "head")
    if app_password is not None:
        asyncio.run(_set_role_password(owner_url, app_role, app_password))


async def _set_role_password(owner_url: str, app_role: str, password: str) -> None:
    engine = create_engine(to_async_url(owner_url), pool_size=1)
    async with engine.begin() as conn:
        quoted = password.replace("'", "''")
        await conn.execute(text(f"ALTER ROLE \"{app_role}\" PASSWORD '{quoted}'"))
    await engine.dispose()


async def current_revision(conn: AsyncConnection) -> str | None:
    """The revision a database is at (None when never migrated)."""

    def _read(sync_conn: Connection) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    return await conn.run_sync(_read)
