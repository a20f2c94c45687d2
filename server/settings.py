"""Settings read from the environment (``FIELDSYNC_*`` and ``DATABASE_URL``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of a fieldsync process; see README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="FIELDSYNC_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "FIELDSYNC_DATABASE_URL"),
        description="PostgreSQL URL of a role that owns the schema; unset = embedded server.",
    )
    data_dir: Path = Field(
        default=Path(".fieldsync"), description="Embedded database and local state."
    )
    app_role: str = Field(default="fieldsync_app", description="Non-owner role the app queries as.")
    app_role_password: str | None = Field(
        default=None,
        description="Password set on the app role by `migrate` (needed off trust auth).",
    )
    secret_key: str | None = Field(default=None, description="Token signing key (HS256).")
    token_ttl_seconds: int = Field(default=12 * 3600, ge=60)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1)
    pool_size: int = Field(default=10, ge=1)
    log_level: str = "info"
    log_json: bool = Field(default=True, description="JSON logs; false prints readable lines.")
    max_page_size: int = Field(default=100, ge=1, description="Cap on `first` of every connection.")
    max_string_length: int = Field(default=10_000, ge=1, description="Cap on any text field.")
    graphiql: bool = Field(default=True, description="Serve GraphiQL on GET /graphql.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
