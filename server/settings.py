"""Settings read from the environment (``FIELDSYNC_*`` and ``DATABASE_URL``)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.crypto import KeyRing, KeyRingError
from schema.limits import OperationLimits
from server.gc_pauses import parse_thresholds


class Settings(BaseSettings):
    """Every setting of a fieldsync process; see README's configuration table."""

    # Errors never echo inputs: they may hold keys or database passwords.
    model_config = SettingsConfigDict(
        env_prefix="FIELDSYNC_", extra="ignore", hide_input_in_errors=True
    )

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
    trusted_proxies: str = Field(
        default="",
        description="Addresses or networks (comma-separated IPs/CIDRs) of the reverse proxies"
        " whose X-Forwarded-For / X-Forwarded-Proto are believed; empty: none, the peer"
        " address is the client.",
    )
    port: int = 8000
    workers: int = Field(default=1, ge=1)
    pool_size: int = Field(default=10, ge=1)
    log_level: str = "info"
    log_json: bool = Field(default=True, description="JSON logs; false prints readable lines.")
    max_page_size: int = Field(default=100, ge=1, description="Cap on `first` of every connection.")
    max_string_length: int = Field(default=10_000, ge=1, description="Cap on any text field.")
    graphiql: bool = Field(default=True, description="Serve GraphiQL on GET /graphql.")
    http_compression: bool = Field(
        default=True,
        description="Compress HTTP responses (zstd or gzip, as the client offers); off behind"
        " a proxy that compresses.",
    )
    compiled_reads: bool = Field(
        default=True,
        description="Answer `customer(id:)` and `customers(...)` documents from compiled SQL"
        " and encoders instead of the GraphQL executor (same data; off only to compare or"
        " diagnose).",
    )
    master_keys: SecretStr | None = Field(
        default=None,
        description="Key ring wrapping credential data keys: `id1:base64key,id2:base64key`"
        " (each key 32 random bytes). Required to serve outside demo mode.",
    )
    active_key_id: str | None = Field(
        default=None, description="Master key that wraps new data keys; default: the last one."
    )
    reveal_rate_per_minute: int = Field(
        default=10, ge=1, description="Password reveals allowed per user per minute."
    )
    ws_init_timeout_seconds: float = Field(
        default=10, gt=0, description="WebSocket: close (4408) without `connection_init` by then."
    )
    ws_max_subscriptions: int = Field(
        default=10, ge=1, description="WebSocket: operations per connection; more closes (4004)."
    )
    ws_send_buffer_messages: int = Field(
        default=256, ge=1, description="WebSocket: queued messages before a slow consumer (4003)."
    )
    ws_send_buffer_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="WebSocket: queued bytes before a slow consumer is closed (4003).",
    )
    ws_send_stall_seconds: float = Field(
        default=20,
        gt=0,
        description="WebSocket: a socket that takes no message for this long while a"
        " catch-up page waits for it is closed as a slow consumer (4003).",
    )
    ws_ping_seconds: float = Field(
        default=20, ge=0, description="WebSocket: server `ping` interval (0: none)."
    )
    ws_compression: bool = Field(
        default=True,
        description="WebSocket: permessage-deflate (no context takeover) for large messages"
        " such as catch-up pages, when the client offers it.",
    )
    ws_max_message_bytes: int = Field(
        default=256 * 1024, ge=1024, description="WebSocket: largest frame a client may send."
    )
    live_recheck_seconds: float = Field(
        default=5,
        gt=0,
        description="How often open subscriptions re-check their users (deactivation,"
        " revoked tokens, withdrawn capabilities).",
    )
    # Two, not four: each pull keeps a PostgreSQL backend busy, and with four per worker a
    # reconnect storm's catch-up took the CPU that live reads need (bench.fanout_bad_clients
    # on 2 cores: p99 61-115 ms with 4, 41-56 ms with 2; a storm of 2,000 clients caught up
    # at 40,020 changes/s with 2).
    live_concurrent_pulls: int = Field(
        default=2, ge=1, description="Catch-up pulls run at once per process (pool headroom)."
    )
    live_catch_up_group: int = Field(
        default=64,
        ge=1,
        description="Subscribers of a tenant whose first pull pages are read in one"
        " statement when they join together (1: each alone).",
    )
    live_fanout_chunk: int = Field(
        default=256,
        ge=1,
        description="Sockets handed a live batch per event-loop iteration (a batch for"
        " thousands of subscribers is spread over several iterations).",
    )
    gc_thresholds: str = Field(
        default="2000,10,100",
        description="Garbage collector thresholds young,middle,old of each worker"
        " (server/gc_pauses.py): smaller young and middle thresholds mean shorter pauses.",
    )
    listener_health_seconds: float = Field(
        default=5, gt=0, description="Health query interval of the LISTEN connection."
    )

    # --- Operation limits and rate limits (issue #7 parts 1 and 4; docs/operations.md) ---
    max_query_depth: int = Field(default=12, ge=1, description="Deepest selection nesting.")
    max_aliases: int = Field(default=30, ge=0, description="Aliases per operation.")
    max_query_tokens: int = Field(default=5000, ge=10, description="Lexical tokens per document.")
    max_query_cost: int = Field(
        default=1_000_000, ge=1, description="Estimated cost per operation (list sizes multiply)."
    )
    cost_default_list_size: int = Field(
        default=10, ge=1, description="Items assumed for a list field without `first`/`limit`."
    )
    introspection: bool = Field(
        default=True, description="Allow schema introspection; turn off in production."
    )
    field_suggestions: bool = Field(
        default=False, description='"Did you mean" hints in validation errors.'
    )
    max_query_chars: int = Field(
        default=100_000,
        ge=100,
        description="Characters per document (comments and strings are not tokens).",
    )
    max_validation_ms: int = Field(
        default=100, ge=1, description="CPU-time budget of one document's validation (ms)."
    )
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest JSON request body (uploads have FIELDSYNC_MAX_IMPORT_BYTES).",
    )
    shutdown_grace_seconds: float = Field(
        default=30,
        gt=0,
        description="After SIGTERM, how long a graceful shutdown may take before exit.",
    )
    login_rate_window_seconds: int = Field(
        default=300, ge=1, description="Sliding window of the login rate limits."
    )
    login_rate_per_email: int = Field(
        default=10, ge=1, description="Login attempts per email address per window."
    )
    login_rate_per_address: int = Field(
        default=100, ge=1, description="Login attempts per client address per window."
    )
    reveal_rate_per_address_per_minute: int = Field(
        default=60, ge=1, description="Password reveals per client address per minute."
    )

    def operation_limits(self) -> OperationLimits:
        """The operation limits for ``build_schema``."""
        return OperationLimits(
            max_depth=self.max_query_depth,
            max_aliases=self.max_aliases,
            max_tokens=self.max_query_tokens,
            max_cost=self.max_query_cost,
            # A size argument given by variable is bounded by the page cap at run time.
            variable_list_size=self.max_page_size,
            default_list_size=self.cost_default_list_size,
            introspection=self.introspection,
            field_suggestions=self.field_suggestions,
            max_chars=self.max_query_chars,
            max_validation_ms=self.max_validation_ms,
        )

    # --- end of operation and rate limits ---

    # --- External sync window (issue #6; docs/external-sync.md) ---
    max_import_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        description="Largest external import file (CSV or JSON); larger ones are refused"
        " before parsing.",
    )

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        # Normalised and checked at start-up: a typo must not silently trust nobody (or,
        # worse, be read by uvicorn as a host name pattern).
        networks = []
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            try:
                networks.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(
                    f"FIELDSYNC_TRUSTED_PROXIES: {item!r} is not an IP address or network"
                ) from None
        return ",".join(networks)

    def trusted_proxy_networks(self) -> list[str]:
        """The proxies whose forwarding headers are believed (CIDR strings; maybe none)."""
        return self.trusted_proxies.split(",") if self.trusted_proxies else []

    @field_validator("gc_thresholds", mode="after")
    @classmethod
    def _thresholds_parse(cls, value: str) -> str:
        # A typo fails at start-up rather than in every worker's import.
        parse_thresholds(value)
        return value

    @field_validator("master_keys", mode="after")
    @classmethod
    def _blank_keys_are_unset(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return value

    @model_validator(mode="after")
    def _key_ring_parses(self) -> Settings:
        # A malformed key ring fails at start-up, not at the first reveal.
        if self.master_keys is None and self.active_key_id:
            raise ValueError("FIELDSYNC_ACTIVE_KEY_ID is set but FIELDSYNC_MASTER_KEYS is not")
        try:
            self.key_ring()
        except KeyRingError as exc:
            raise ValueError(str(exc)) from None
        return self

    def key_ring(self) -> KeyRing | None:
        """The master key ring, parsed once per distinct configuration; None if unset."""
        if self.master_keys is None:
            return None
        return _key_ring(self.master_keys.get_secret_value(), self.active_key_id)


@lru_cache(maxsize=8)
def _key_ring(spec: str, active_key_id: str | None) -> KeyRing:
    return KeyRing.parse(spec, active_key_id)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
