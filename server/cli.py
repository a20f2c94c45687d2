"""The ``fieldsync`` command line: serve, migrate, create-admin, seed, rotate-keys,
import, export-schema."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from server.listeners import reserve, reuse_port_supported
from server.settings import Settings

if TYPE_CHECKING:
    from db.commands.external import ImportOutcome
    from db.engine import Database

app = typer.Typer(
    help="fieldsync: a GraphQL sync server for field-service data.", no_args_is_help=True
)
console = Console(stderr=True)


def _progress() -> Progress:
    """The commands' progress bar: description, bar, done of total, time elapsed."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _database_url(settings: Settings) -> str:
    """The owner URL: DATABASE_URL, else the embedded server (started on demand)."""
    if settings.database_url:
        return settings.database_url
    from server.embedded import start_embedded

    console.print(f"[cyan]Starting embedded PostgreSQL in {settings.data_dir.resolve()}[/]")
    return start_embedded(settings.data_dir)


def _secret_key(settings: Settings, *, demo: bool) -> str:
    """FIELDSYNC_SECRET_KEY, else one kept in the data dir (embedded or demo mode only)."""
    if settings.secret_key:
        return settings.secret_key
    if settings.database_url and not demo:
        console.print(
            "[red]FIELDSYNC_SECRET_KEY is not set. Every instance must share one signing key:"
            " set it (e.g. `openssl rand -hex 32`).[/]"
        )
        raise typer.Exit(2)
    path = settings.data_dir / "secret_key"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    console.print(
        f"[yellow]Token signing key kept in {path} (set FIELDSYNC_SECRET_KEY in production).[/]"
    )
    return path.read_text().strip()


def _master_keys(settings: Settings, *, demo: bool) -> str | None:
    """Check the credential key ring; in demo mode without one, the public demo key.

    Returns the FIELDSYNC_MASTER_KEYS value to hand to the workers (None: keep the env's).
    """
    if settings.key_ring() is not None:
        return None
    if not demo:
        console.print(
            "[red]FIELDSYNC_MASTER_KEYS is not set: credential passwords need a master key."
            " Generate one with\n"
            '  python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"\n'
            "and set FIELDSYNC_MASTER_KEYS=k1:<that key> (keep it outside the database and"
            " back it up: without it stored passwords are lost). `--demo` runs with a public"
            " demo key instead.[/]"
        )
        raise typer.Exit(2)
    from db.crypto import DEMO_KEY_ID, DEMO_KEY_RING

    console.print(
        f"[bold red]DEMO MODE: credential passwords are encrypted with the built-in key"
        f" {DEMO_KEY_ID!r}, which is PUBLIC and NOT SECRET. Do not store real passwords;"
        " set FIELDSYNC_MASTER_KEYS for real use.[/]"
    )
    return DEMO_KEY_RING


def _prepared_url(settings: Settings) -> str:
    """The owner URL of a migrated database (the embedded one is started if needed)."""
    url = _database_url(settings)
    _migrate(url, settings)
    return url


@asynccontextmanager
async def _app_database(settings: Settings, url: str, *, pool_size: int) -> AsyncIterator[Database]:
    """A small app-role pool for one command, closed afterwards."""
    from db.engine import Database

    db = Database.connect(
        url,
        app_role=settings.app_role,
        app_password=settings.app_role_password,
        pool_size=pool_size,
    )
    try:
        yield db
    finally:
        await db.close()


def _migrate(url: str, settings: Settings) -> None:
    from db.migrate import upgrade

    upgrade(url, app_role=settings.app_role, app_password=settings.app_role_password)


@app.command()
def migrate() -> None:
    """Apply database migrations (also run at `serve` start)."""
    settings = Settings()
    _migrate(_database_url(settings), settings)
    console.print("[green]Database is at the newest migration.[/]")


APP = "server.asgi:create_app_from_env"


def uvicorn_options(
    settings: Settings, *, host: str, port: int, workers: int | None = None
) -> dict[str, Any]:
    """The keyword arguments `serve` gives ``uvicorn.run`` / ``uvicorn.Config``."""
    proxies = settings.trusted_proxy_networks()
    return {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers or settings.workers,
        # Sync batches are small JSON already compressed by TLS terminators when wanted;
        # deflate would cost CPU and ~60 KB of zlib state per socket.
        "ws_per_message_deflate": False,
        # wsproto (sans-I/O) keeps no task per socket: an idle subscriber costs ~10 KB
        # less than with uvicorn's default websockets implementation.
        "ws": "wsproto",
        "ws_max_size": settings.ws_max_message_bytes,
        "log_level": settings.log_level,
        "access_log": False,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 (or FORWARDED_ALLOW_IPS) unless
        # told otherwise: then anyone on the host, or a proxy that passes the header
        # through, picks the address the access log records and the per-address limits
        # count. Only the configured proxies are believed; by default nobody is.
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies,
    }


@app.command()
def serve(
    demo: Annotated[
        bool, typer.Option(help="Seed a demo tenant if the database is empty.")
    ] = False,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (one per core).")] = None,
) -> None:
    """Run the server (embedded PostgreSQL unless DATABASE_URL is set)."""
    import uvicorn

    settings = Settings()
    master_keys = _master_keys(settings, demo=demo)
    url = _database_url(settings)
    _migrate(url, settings)
    key = _secret_key(settings, demo=demo)
    os.environ["DATABASE_URL"] = url
    os.environ["FIELDSYNC_SECRET_KEY"] = key
    if master_keys is not None:
        os.environ["FIELDSYNC_MASTER_KEYS"] = master_keys
        os.environ.pop("FIELDSYNC_ACTIVE_KEY_ID", None)
    if demo:
        asyncio.run(_seed_demo(Settings()))
    bind_host = host or settings.host
    bind_port = port or settings.port
    console.print(
        f"[green]fieldsync on http://{bind_host}:{bind_port}/graphql (GraphiQL in a browser)[/]"
    )
    # uvicorn re-raises SIGTERM after its graceful shutdown; as SystemExit it lets exit
    # handlers run, which stop the embedded PostgreSQL with the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if os.environ.get("FORWARDED_ALLOW_IPS"):
        console.print(
            "[yellow]FORWARDED_ALLOW_IPS is ignored: name the reverse proxies in"
            " FIELDSYNC_TRUSTED_PROXIES.[/]"
        )
    options = uvicorn_options(settings, host=bind_host, port=bind_port, workers=workers)
    if options["workers"] > 1 and reuse_port_supported():
        # uvicorn's supervisor, but each worker listens on a socket of its own
        # (server/listeners.py): keep-alive connections spread over the workers.
        from uvicorn.supervisors import Multiprocess

        try:
            reserved = reserve(bind_host, bind_port)
        except OSError as exc:
            console.print(f"[red]Cannot listen on {bind_host}:{bind_port}: {exc.strerror}[/]")
            raise typer.Exit(1) from None
        Multiprocess(uvicorn.Config(APP, **options), sockets=[reserved]).run()
    else:
        uvicorn.run(APP, **options)


async def _seed_demo(settings: Settings) -> None:
    from db.queries import users
    from db.queries.orgs import tenant_count
    from db.seed import create_org_with_admin, ensure_demo_fields, seed_records
    from server.auth import hash_password

    assert settings.database_url is not None
    async with _app_database(settings, settings.database_url, pool_size=2) as db:
        async with db.unscoped() as conn:
            if await tenant_count(conn) > 0:
                console.print("[cyan]Database has data: demo seed skipped.[/]")
                return
        accounts = [
            ("admin@demo.fieldsync.dev", "ADMIN"),
            ("tech1@demo.fieldsync.dev", "TECHNICIAN"),
            ("tech2@demo.fieldsync.dev", "TECHNICIAN"),
        ]
        passwords = {email: secrets.token_urlsafe(9) for email, _ in accounts}
        admin_email = accounts[0][0]
        org_id = await create_org_with_admin(
            db,
            org_name="Demo Dealer",
            email=admin_email,
            password_hash=hash_password(passwords[admin_email]),
            name="Demo Admin",
        )
        async with db.tenant(org_id) as conn:
            await ensure_demo_fields(conn, org_id)
            for n, (email, role) in enumerate(accounts[1:], start=1):
                await users.create_user(
                    conn,
                    org_id=org_id,
                    email=email,
                    name=f"Technician {n}",
                    password_hash=hash_password(passwords[email]),
                    role=role,
                    capabilities={"can_sync_by_customer": n == 1, "can_view_credentials": n == 1},
                )
        counts = await seed_records(
            db,
            org_id,
            customers_count=200,
            contacts_per_customer=2,
            facilities_per_customer=2,
            assets_per_customer=4,
        )
        console.print(f"[green]Demo tenant seeded: {counts}[/]")
        console.print("[bold]Demo accounts (this is demo data; change these passwords):[/]")
        for email, role in accounts:
            console.print(f"  {role:<10} {email}  password: {passwords[email]}")


@app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="Sign-in email.")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, help="At least 10 characters.")
    ],
    org_name: Annotated[str, typer.Option(help="Name of the new tenant (dealer).")] = "My Dealer",
) -> None:
    """Create a tenant and its first admin."""
    from db.commands.users import MIN_PASSWORD_LENGTH
    from db.queries.users import email_in_use
    from db.seed import create_org_with_admin
    from server.auth import hash_password
    from sync.validation import is_valid_email

    if len(password) < MIN_PASSWORD_LENGTH or not is_valid_email(email):
        console.print(
            f"[red]Need a valid email and a password of {MIN_PASSWORD_LENGTH}+ characters.[/]"
        )
        raise typer.Exit(2)
    settings = Settings()
    url = _prepared_url(settings)

    async def run() -> str:
        async with _app_database(settings, url, pool_size=1) as db:
            async with db.unscoped() as conn:
                if await email_in_use(conn, email):
                    return ""
            org_id = await create_org_with_admin(
                db, org_name=org_name, email=email, password_hash=hash_password(password)
            )
            return str(org_id)

    org_id = asyncio.run(run())
    if not org_id:
        console.print(f"[red]A user with email {email} already exists.[/]")
        raise typer.Exit(1)
    console.print(f"[green]Created tenant {org_name!r} ({org_id}) with admin {email}.[/]")


@app.command()
def seed(
    customers: Annotated[int, typer.Option(min=1, help="Customers to create.")] = 1000,
    assets_per_customer: Annotated[int, typer.Option(min=0, help="Assets per customer.")] = 20,
    contacts_per_customer: Annotated[int, typer.Option(min=0)] = 3,
    facilities_per_customer: Annotated[int, typer.Option(min=0)] = 2,
    admin_email: Annotated[
        str, typer.Option(help="Seed into this admin's tenant.")
    ] = "admin@demo.fieldsync.dev",
) -> None:
    """Bulk-create realistic records in an existing tenant (batched, with a progress bar)."""
    from db.queries.users import login_lookup
    from db.seed import ensure_demo_fields, seed_records

    settings = Settings()
    url = _prepared_url(settings)

    async def run() -> None:
        async with _app_database(settings, url, pool_size=2) as db:
            async with db.unscoped() as conn:
                found = await login_lookup(conn, admin_email)
            if found is None:
                console.print(f"[red]No user {admin_email}: run `fieldsync create-admin` first.[/]")
                raise typer.Exit(1)
            async with db.tenant(found.org_id) as conn:
                await ensure_demo_fields(conn, found.org_id)
            with _progress() as bar:
                task = bar.add_task("customers", total=customers)
                counts = await seed_records(
                    db,
                    found.org_id,
                    customers_count=customers,
                    contacts_per_customer=contacts_per_customer,
                    facilities_per_customer=facilities_per_customer,
                    assets_per_customer=assets_per_customer,
                    progress=lambda n: bar.advance(task, n),
                )
            console.print(f"[green]Seeded {counts}[/]")

    asyncio.run(run())


@app.command("rotate-keys")
def rotate_keys(
    to: Annotated[str, typer.Option("--to", help="Master key id to wrap every data key with.")],
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Credentials per transaction.")
    ] = 500,
) -> None:
    """Re-wrap every credential's data key with master key --to (online, resumable).

    FIELDSYNC_MASTER_KEYS must hold the new key and every key still in use. Afterwards the
    old keys can be removed from it.
    """
    from db.commands.credentials import RotationError, pending_rotation
    from db.commands.credentials import rotate_keys as rotate
    from db.engine import create_engine, to_async_url

    settings = Settings()
    ring = settings.key_ring()
    if ring is None:
        console.print("[red]FIELDSYNC_MASTER_KEYS is not set: give the old and the new keys.[/]")
        raise typer.Exit(2)
    if settings.active_key_id is not None and settings.active_key_id != to:
        console.print(
            f"[yellow]FIELDSYNC_ACTIVE_KEY_ID is {settings.active_key_id!r}: servers still wrap"
            f" new passwords with it. Make {to!r} the active key on every instance too.[/]"
        )
    url = _database_url(settings)
    _migrate(url, settings)

    async def run() -> int:
        # The owner's connection: rotation reads every tenant (each batch is scoped to one).
        engine = create_engine(to_async_url(url), pool_size=1)
        try:
            try:
                pending = await pending_rotation(engine, ring, to)
            except RotationError as exc:
                console.print(f"[red]{exc}[/]")
                return 2
            with _progress() as bar:
                task = bar.add_task(f"re-wrapping with {to}", total=pending)
                report = await rotate(
                    engine,
                    ring,
                    to,
                    batch_size=batch_size,
                    progress=lambda n: bar.advance(task, n),
                )
        finally:
            await engine.dispose()
        console.print(f"[green]Re-wrapped {report.rotated} credential(s) with key {to!r}.[/]")
        in_use = {k: n for k, n in report.usage.items() if n}
        console.print(f"Credentials per master key now: {in_use or 'none'}")
        for org_id, credential_id, reason in report.failed:
            console.print(
                f"[red]Not re-wrapped: credential {credential_id} (tenant {org_id}): {reason}[/]"
            )
        if report.failed:
            return 1
        if report.retired_key_ids:
            console.print(
                "[green]No credential uses "
                + ", ".join(repr(k) for k in report.retired_key_ids)
                + " any more: remove it from FIELDSYNC_MASTER_KEYS when every instance runs"
                f" with {to!r} as the active key.[/]"
            )
        return 0

    code = asyncio.run(run())
    if code:
        raise typer.Exit(code)


@app.command()
def compact(
    device_ttl_days: Annotated[
        int, typer.Option(min=1, help="Devices silent longer do not hold compaction back.")
    ] = 30,
) -> None:
    """Remove tombstones every live device has seen (per tenant); run it daily."""
    from datetime import timedelta

    from db.compaction import compact as compact_tenant
    from db.queries.orgs import tenant_ids

    settings = Settings()
    url = _prepared_url(settings)

    async def run() -> None:
        async with _app_database(settings, url, pool_size=1) as db:
            async with db.unscoped() as conn:
                ids = await tenant_ids(conn)
            for org_id in ids:
                async with db.tenant(org_id) as conn:
                    result = await compact_tenant(
                        conn, org_id, device_ttl=timedelta(days=device_ttl_days)
                    )
                console.print(
                    f"{org_id}: horizon {result.horizon}, {result.removed} tombstones removed"
                )

    asyncio.run(run())


def _print_import(outcome: ImportOutcome) -> int:
    """Report an import's batch; the exit code (1 when refused)."""
    batch = outcome.batch
    if batch["status"] == "REFUSED":
        console.print(
            f"[red]Import refused (batch {batch['id']}): {batch['counts'].get('problems')}"
            " problem(s); nothing was imported. Fix them and run again:[/]"
        )
        for error in batch["errors"]:
            column = f" [{error['column']}]" if error.get("column") else ""
            console.print(f"  line {error['line']}{column}: {error['reason']}")
        return 1
    if outcome.already_imported:
        console.print(
            f"[yellow]Same file as the last import (batch {batch['id']}): nothing changed.[/]"
        )
        return 0
    counts = batch["counts"]
    console.print(
        f"[green]Imported batch {batch['id']}: {counts['rows']} rows, {counts['created']}"
        f" new, {counts['updated']} updated, {counts['removed']} removed,"
        f" {counts['matched']} matched by email, {counts['applied']} customer(s) updated.[/]"
    )
    console.print("Window: " + ", ".join(f"{k} {v}" for k, v in counts["categories"].items()))
    return 0


@app.command("import")
def import_external(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV or JSON file to import.")
    ],
    source: Annotated[str, typer.Option(help="Name of the external source (any case).")],
    org: Annotated[
        str | None, typer.Option(help="Tenant id; default: the tenant of --admin-email.")
    ] = None,
    admin_email: Annotated[
        str, typer.Option(help="Import into this admin's tenant (when --org is not given).")
    ] = "admin@demo.fieldsync.dev",
    file_format: Annotated[
        str | None, typer.Option("--format", help="CSV or JSON; default: from the file.")
    ] = None,
) -> None:
    """Import an external system's customer list into its sync window (with progress).

    Applied whole or refused whole: problems are listed with their line numbers and
    nothing is imported. Importing the same file again changes nothing.
    """
    from uuid import UUID

    from db.commands.external import Actor, import_file
    from db.queries.external import source_by_name
    from db.queries.users import login_lookup
    from sync.external import ImportFormat

    settings = Settings()
    fmt = None
    if file_format is not None:
        try:
            fmt = ImportFormat(file_format.upper())
        except ValueError:
            console.print("[red]--format is CSV or JSON.[/]")
            raise typer.Exit(2) from None
    size = file.stat().st_size
    if size > settings.max_import_bytes:
        console.print(
            f"[red]{file} has {size} bytes; imports are at most {settings.max_import_bytes}"
            " (FIELDSYNC_MAX_IMPORT_BYTES). Nothing was imported.[/]"
        )
        raise typer.Exit(1)
    url = _prepared_url(settings)

    async def run() -> int:
        async with _app_database(settings, url, pool_size=2) as db:
            if org is not None:
                try:
                    org_id = UUID(org)
                except ValueError:
                    console.print(f"[red]--org {org!r} is not a tenant id.[/]")
                    return 2
                actor = Actor(id=None, name="cli")
            else:
                async with db.unscoped() as conn:
                    found = await login_lookup(conn, admin_email)
                if found is None:
                    console.print(f"[red]No user {admin_email}: give --org or --admin-email.[/]")
                    return 1
                org_id = found.org_id
                actor = Actor(id=found.user_id, name=f"cli ({admin_email})")
            async with db.tenant(org_id) as conn:
                row = await source_by_name(conn, org_id, source)
            if row is None:
                console.print(f"[red]No external source named {source!r} in tenant {org_id}.[/]")
                return 1
            with _progress() as bar:
                task = bar.add_task("reading", total=None)

                def progress(phase: str, done: int, total: int) -> None:
                    bar.update(task, description=phase, completed=done, total=total)

                outcome = await import_file(
                    db,
                    org_id=org_id,
                    source_id=row["id"],
                    data=file.read_bytes(),
                    file_name=file.name,
                    file_format=fmt,
                    actor=actor,
                    max_bytes=settings.max_import_bytes,
                    max_length=settings.max_string_length,
                    progress=progress,
                )
        return _print_import(outcome)

    code = asyncio.run(run())
    if code:
        raise typer.Exit(code)


@app.command("export-schema")
def export_schema(
    output: Annotated[Path, typer.Option(help="Where to write the SDL.")] = Path("schema.graphql"),
) -> None:
    """Write the GraphQL SDL (commit it; a test fails when it is stale)."""
    from schema.build import export_sdl

    output.write_text(export_sdl())
    console.print(f"[green]Wrote {output}[/]")
