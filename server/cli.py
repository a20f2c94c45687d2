"""The ``fieldsync`` command line: serve, migrate, create-admin, reset-password, seed,
rotate-keys, compact, source (create, list), import, export-schema."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from server.settings import Settings
from server.worker_sockets import reserve, reuse_port_supported

if TYPE_CHECKING:
    from db.commands.window_imports import ImportOutcome
    from db.engine import Database

app = typer.Typer(
    help="fieldsync: a GraphQL sync server for field-service data.", no_args_is_help=True
)
console = Console(stderr=True)
DEMO_ACCOUNTS_FILE = "demo-accounts.json"
DEMO_ACCOUNTS = (
    ("admin@demo.fieldsync.dev", "ADMIN"),
    ("tech1@demo.fieldsync.dev", "TECHNICIAN"),
    ("tech2@demo.fieldsync.dev", "TECHNICIAN"),
)
RESET_HINT = "Lost a password? `fieldsync reset-password EMAIL` sets a new one and prints it."


def _exit_normally(signum: int, frame: FrameType | None) -> None:
    # Python's default for SIGTERM/SIGHUP kills the process on the spot: no `finally`, no
    # exit handlers, so an embedded PostgreSQL this process holds stays registered to it
    # and is never stopped. SystemExit unwinds like a normal exit instead.
    sys.exit(0)


@app.callback()
def main() -> None:
    """fieldsync: a GraphQL sync server for field-service data."""
    # Before any command starts a database or binds a port: a process stopped at any
    # moment of its start-up runs its exit handlers (SIGINT already raises
    # KeyboardInterrupt, which unwinds the same way).
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, _exit_normally)


def _progress() -> Progress:
    """The commands' progress bar: description, bar, done of total, time elapsed."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


class _StepCount(ProgressColumn):
    """``done/total`` for a step that counts something; blank for a single step."""

    def render(self, task: Task) -> Text:
        """The count, or nothing when the step has no count worth showing."""
        if not task.fields.get("counted") or task.total is None:
            return Text("")
        return Text(f"{int(task.completed)}/{int(task.total)}", style="progress.download")


class _Steps:
    """Progress of a command made of named steps (one line each, created when reported).

    A step reports ``(name, done, total)``; totals of 0 or 1 are single steps (a bar
    without a count): "0/?" before anything is known or "0/0" for a step with nothing
    to do says nothing useful.
    """

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.tasks: dict[str, Any] = {}

    def __call__(self, step: str, done: int, total: int) -> None:
        counted = total > 1
        shown_total = total if counted else 1
        shown_done = done if counted else (1 if done >= total else 0)
        task = self.tasks.get(step)
        if task is None:
            task = self.tasks[step] = self.bar.add_task(step, total=shown_total)
        # update() (not add_task) marks a step finished when it is complete.
        self.bar.update(task, total=shown_total, completed=shown_done, counted=counted)


def _steps_progress() -> Progress:
    """Progress lines of a multi-step command; gone once done (the summary follows)."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        _StepCount(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _database_url(settings: Settings) -> str:
    """The owner URL: DATABASE_URL, else the embedded server (started on demand)."""
    if settings.database_url:
        return settings.database_url
    from server.embedded import embedded_running, start_embedded

    verb = "Attaching to the running" if embedded_running(settings.data_dir) else "Starting"
    console.print(f"[cyan]{verb} embedded PostgreSQL in {settings.data_dir.resolve()}[/]")
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
    # Imported here, like uvicorn itself: the other commands start without the web stack.
    from server.websocket_deflate import DeflateLargeMessagesProtocol
    from server.websocket_protocol import LeanWSProtocol

    proxies = settings.trusted_proxy_networks()
    return {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers or settings.workers,
        # uvicorn's own deflate keeps ~270 KB of zlib state per socket and compresses every
        # live batch; server/websocket_deflate.py compresses large messages only, statelessly.
        "ws_per_message_deflate": False,
        # wsproto (sans-I/O) keeps no task per socket: an idle subscriber costs ~10 KB
        # less than with uvicorn's default websockets implementation, and ~10 KB less again
        # (RSS) with what server/websocket_protocol.py trims of uvicorn's wsproto protocol.
        "ws": DeflateLargeMessagesProtocol if settings.ws_compression else LeanWSProtocol,
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


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` for a single-process server (OSError if taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As uvicorn binds: a restart does not wait for the old connections' TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening at once (connections wait in the backlog until the app is up) also
        # makes a second server's bind fail: Linux lets two SO_REUSEADDR sockets bind
        # one port while neither listens.
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


@app.command()
def serve(
    demo: Annotated[
        bool,
        typer.Option(
            help="Seed a demo tenant if the database is empty (and print its accounts again"
            " on restarts while their passwords are unchanged)."
        ),
    ] = False,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (one per core).")] = None,
) -> None:
    """Run the server (embedded PostgreSQL unless DATABASE_URL is set)."""
    import uvicorn

    settings = Settings()
    master_keys = _master_keys(settings, demo=demo)
    bind_host = host or settings.host
    bind_port = port or settings.port
    options = uvicorn_options(settings, host=bind_host, port=bind_port, workers=workers)
    multiprocess = options["workers"] > 1 and reuse_port_supported()
    # The port first: a second server on a busy port stops here, before it starts or
    # migrates a database and before it announces an address it will not serve.
    try:
        listener = reserve(bind_host, bind_port) if multiprocess else _bind(bind_host, bind_port)
    except OSError as exc:
        console.print(
            f"[red]Cannot listen on {bind_host}:{bind_port}: {exc.strerror}. Is another server"
            " running there? Stop it or choose another --port.[/]"
        )
        raise typer.Exit(1) from None
    url = _database_url(settings)
    _migrate(url, settings)
    key = _secret_key(settings, demo=demo)
    os.environ["DATABASE_URL"] = url
    os.environ["FIELDSYNC_SECRET_KEY"] = key
    if master_keys is not None:
        os.environ["FIELDSYNC_MASTER_KEYS"] = master_keys
        os.environ.pop("FIELDSYNC_ACTIVE_KEY_ID", None)
    else:
        _keep_demo_key_readable(settings, url)
    address = f"http://{bind_host}:{bind_port}"
    if demo:
        known = _load_demo_accounts(settings.data_dir / DEMO_ACCOUNTS_FILE)
        asyncio.run(_seed_demo(Settings(), address, known))
    if os.environ.get("FORWARDED_ALLOW_IPS"):
        console.print(
            "[yellow]FORWARDED_ALLOW_IPS is ignored: name the reverse proxies in"
            " FIELDSYNC_TRUSTED_PROXIES.[/]"
        )
    console.print(
        f"[green]fieldsync on {address}/graphql (GraphiQL in a browser, with example"
        " operations for admins)[/]"
    )
    if multiprocess:
        # uvicorn's supervisor, but each worker listens on a socket of its own
        # (server/worker_sockets.py): keep-alive connections spread over the workers.
        from uvicorn.supervisors import Multiprocess

        Multiprocess(uvicorn.Config(APP, **options), sockets=[listener]).run()
        return
    # uvicorn re-raises SIGTERM after its graceful shutdown; `main` turned it into
    # SystemExit, so exit handlers stop the embedded PostgreSQL with the server.
    server = uvicorn.Server(uvicorn.Config(APP, **options))
    server.run(sockets=[listener])
    if not server.started:
        raise typer.Exit(3)  # uvicorn's start-up failure code


def _keep_demo_key_readable(settings: Settings, url: str) -> None:
    """With a real key ring, keep credentials still under the public demo key readable.

    Leaving demo mode is: set FIELDSYNC_MASTER_KEYS, restart, `fieldsync rotate-keys`.
    Until the rotation has run, the demo key (public, so nothing to configure) is added
    to the workers' ring; new passwords still use the configured active key.
    """
    from db.crypto import DEMO_KEY_ID, DEMO_KEY_RING

    ring = settings.key_ring()
    if ring is None or DEMO_KEY_ID in ring.keys:
        return
    in_use = _credentials_per_key(url).get(DEMO_KEY_ID, 0)
    if not in_use:
        return
    assert settings.master_keys is not None  # a ring was parsed from it
    configured = settings.master_keys.get_secret_value()
    os.environ["FIELDSYNC_MASTER_KEYS"] = f"{DEMO_KEY_RING},{configured}"
    os.environ["FIELDSYNC_ACTIVE_KEY_ID"] = ring.active_id
    console.print(
        f"[yellow]{in_use} credential password(s) are still encrypted with the public demo key"
        f" {DEMO_KEY_ID!r}; it stays readable until you run"
        f" `fieldsync rotate-keys --to {ring.active_id}`.[/]"
    )


def _credentials_per_key(url: str) -> dict[str, int]:
    """How many credentials each master key id wraps (all tenants; the owner's view)."""
    from db.commands.credentials import key_usage
    from db.engine import create_engine, to_async_url

    async def run() -> dict[str, int]:
        engine = create_engine(to_async_url(url), pool_size=1)
        try:
            usage = await key_usage(engine)
        finally:
            await engine.dispose()
        totals: dict[str, int] = {}
        for (_, key_id), n in usage.items():
            totals[key_id] = totals.get(key_id, 0) + n
        return totals

    return asyncio.run(run())


async def _seed_demo(settings: Settings, address: str, known: dict[str, str]) -> None:
    """Seed the demo tenant into an empty database; else print the demo accounts again."""
    from db.auth import hash_password
    from db.queries import users
    from db.queries.orgs import tenant_count
    from db.seed import (
        DEMO_CREDENTIALS,
        create_org_with_admin,
        ensure_demo_fields,
        seed_demo_credentials,
        seed_records,
    )

    assert settings.database_url is not None
    accounts_file = settings.data_dir / DEMO_ACCOUNTS_FILE
    async with _app_database(settings, settings.database_url, pool_size=2) as db:
        async with db.unscoped() as conn:
            if await tenant_count(conn) > 0:
                console.print("[cyan]Database has data: demo seed skipped.[/]")
                await _print_demo_accounts_again(db, known, address)
                return
        passwords = {email: secrets.token_urlsafe(9) for email, _ in DEMO_ACCOUNTS}
        admin_email = DEMO_ACCOUNTS[0][0]
        org_id = await create_org_with_admin(
            db,
            org_name="Demo Dealer",
            email=admin_email,
            password_hash=hash_password(passwords[admin_email]),
            name="Demo Admin",
        )
        async with db.tenant(org_id) as conn:
            await ensure_demo_fields(conn, org_id)
            for n, (email, role) in enumerate(DEMO_ACCOUNTS[1:], start=1):
                await users.create_user(
                    conn,
                    org_id=org_id,
                    email=email,
                    name=f"Technician {n}",
                    password_hash=hash_password(passwords[email]),
                    role=role,
                    capabilities={"can_sync_by_customer": n == 1, "can_view_credentials": n == 1},
                )
        # Saved before the records: a start stopped while seeding still prints them again.
        _save_demo_accounts(accounts_file, passwords)
        counts = await seed_records(
            db,
            org_id,
            customers_count=200,
            contacts_per_customer=2,
            facilities_per_customer=2,
            assets_per_customer=4,
        )
        ring = settings.key_ring()
        holders = await seed_demo_credentials(db, org_id, ring) if ring is not None else []
    credentials = len(DEMO_CREDENTIALS) if holders else 0
    public = sum(1 for c in DEMO_CREDENTIALS if c["is_public"]) if holders else 0
    console.print(f"[green]Demo tenant seeded: {counts}.[/]")
    if holders:
        console.print(
            f"[green]{credentials} credentials ({public} public, {credentials - public}"
            f" internal) on {' and '.join(repr(h) for h in holders)}; their passwords start"
            " with `demo-`.[/]"
        )
    console.print(
        "[bold]Demo accounts (demo data; change these passwords; printed again at each"
        " start while unchanged):[/]"
    )
    for email, role in DEMO_ACCOUNTS:
        console.print(f"  {role:<10} {email}  password: {passwords[email]}")
    console.print(f"Sign in at {address}/graphql. {RESET_HINT}")


def _save_demo_accounts(path: Path, passwords: dict[str, str]) -> None:
    """Keep the demo passwords next to the token key (owner-only) to print them again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps(passwords, indent=2))


def _load_demo_accounts(path: Path) -> dict[str, str]:
    """The demo passwords saved at seeding (email -> password); empty if none or unreadable."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict):
        return {}
    return {k: v for k, v in stored.items() if isinstance(k, str) and isinstance(v, str)}


async def _print_demo_accounts_again(db: Database, known: dict[str, str], address: str) -> None:
    """The demo accounts whose password is still the seeded one (checked, not assumed)."""
    from db.auth import verify_password
    from db.queries.users import login_lookup

    shown: list[str] = []
    for email, role in DEMO_ACCOUNTS:
        password = known.get(email)
        if password is None:
            continue
        async with db.unscoped() as conn:
            found = await login_lookup(conn, email)
        if found is None:
            continue
        if found.active and verify_password(found.password_hash, password):
            shown.append(f"  {role:<10} {email}  password: {password}")
        else:
            shown.append(f"  {role:<10} {email}  (password changed since seeding)")
    if shown:
        console.print("[bold]Demo accounts:[/]")
        for line in shown:
            console.print(line)
    console.print(f"Sign in at {address}/graphql. {RESET_HINT}")


def _password_option(password: str | None, usage: str) -> str:
    """``--password``, else asked for on a terminal (hidden, twice), else a clear exit 2."""
    if password is not None:
        return password
    if not sys.stdin.isatty():
        console.print(f"[red]No --password given and no terminal to ask on. Run: {usage}[/]")
        raise typer.Exit(2)
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _require_password_length(password: str) -> None:
    """Stop (exit 2) before touching the database when the password is too short."""
    from db.commands.users import MIN_PASSWORD_LENGTH

    if len(password) < MIN_PASSWORD_LENGTH:
        console.print(f"[red]The password needs at least {MIN_PASSWORD_LENGTH} characters.[/]")
        raise typer.Exit(2)


@app.command("reset-password")
def reset_password(
    email: Annotated[str, typer.Argument(help="Sign-in email of the user (any tenant).")],
    password: Annotated[
        str | None,
        typer.Option(help="The new password (10+ characters); default: a random one, printed."),
    ] = None,
) -> None:
    """Set a user's password (e.g. a demo account's) and sign out their sessions."""
    from db.auth import hash_password
    from db.queries.users import LoginRecord, login_lookup, update_user
    from db.tables import users

    new_password = password if password is not None else secrets.token_urlsafe(12)
    _require_password_length(new_password)
    settings = Settings()
    url = _prepared_url(settings)

    async def run() -> LoginRecord | None:
        async with _app_database(settings, url, pool_size=1) as db:
            async with db.unscoped() as conn:
                found = await login_lookup(conn, email)
            if found is None:
                return None
            async with db.tenant(found.org_id) as conn:
                # A new token epoch revokes every token issued with the old password.
                await update_user(
                    conn,
                    found.org_id,
                    found.user_id,
                    {
                        "password_hash": hash_password(new_password),
                        "token_epoch": users.c.token_epoch + 1,
                    },
                )
        return found

    found = asyncio.run(run())
    if found is None:
        console.print(f"[red]No user with email {email}.[/]")
        raise typer.Exit(1)
    if password is None:
        console.print(f"[green]New password of {email}:[/] {new_password}")
    else:
        console.print(f"[green]Password of {email} changed.[/]")
    console.print("Their existing sessions are signed out.")
    if not found.active:
        # Deactivation is an admin's decision (or their customer's archiving), not a
        # forgotten password: say why the new password will not sign in yet.
        console.print(
            f"[yellow]{email} is deactivated, so they still cannot sign in: an admin of"
            " their tenant reactivates them (setUserActive).[/]"
        )


@app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="Sign-in email.")],
    password: Annotated[
        str | None,
        typer.Option(
            help="At least 10 characters. Omitted: asked for (hidden, twice) on a terminal;"
            " required without one."
        ),
    ] = None,
    org_name: Annotated[str, typer.Option(help="Name of the new tenant (dealer).")] = "My Dealer",
) -> None:
    """Create a tenant and its first admin."""
    from db.auth import hash_password
    from db.queries.users import email_in_use
    from db.seed import create_org_with_admin
    from sync.validation import is_valid_email

    if not is_valid_email(email):
        console.print(f"[red]{email!r} is not a valid email address.[/]")
        raise typer.Exit(2)
    password = _password_option(password, "fieldsync create-admin --email EMAIL --password P")
    _require_password_length(password)
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
            console.print(f"[green]Seeded {counts}.[/]")

    asyncio.run(run())


@app.command("rotate-keys")
def rotate_keys(
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Master key id to wrap every data key with; default: the active key.",
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Credentials per transaction.")
    ] = 500,
) -> None:
    """Re-wrap every credential's data key with master key --to (online, resumable).

    FIELDSYNC_MASTER_KEYS must hold the new key and every key still in use, except the
    public demo key of `serve --demo`, which is added by itself: leaving the demo key is
    `FIELDSYNC_MASTER_KEYS=k1:<new key> fieldsync rotate-keys`. Afterwards the old keys
    can be removed from the ring.
    """
    from db.commands.credentials import RotationError, pending_rotation
    from db.commands.credentials import rotate_keys as rotate
    from db.crypto import DEMO_KEY_ID, DEMO_MASTER_KEY, KeyRing
    from db.engine import create_engine, to_async_url

    settings = Settings()
    ring = settings.key_ring()
    if ring is None:
        console.print(
            "[red]FIELDSYNC_MASTER_KEYS is not set: give the old and the new keys (the demo"
            " key of `serve --demo` need not be given).[/]"
        )
        raise typer.Exit(2)
    if to is None:
        to = ring.active_id
    if to == DEMO_KEY_ID:
        console.print(
            f"[red]{DEMO_KEY_ID!r} is the public demo key: rotate to a key of your own.[/]"
        )
        raise typer.Exit(2)
    if settings.active_key_id is not None and settings.active_key_id != to:
        console.print(
            f"[yellow]FIELDSYNC_ACTIVE_KEY_ID is {settings.active_key_id!r}: servers still wrap"
            f" new passwords with it. Make {to!r} the active key on every instance too.[/]"
        )
    url = _database_url(settings)
    _migrate(url, settings)
    if DEMO_KEY_ID not in ring.keys and _credentials_per_key(url).get(DEMO_KEY_ID):
        # The demo key is derived from a public string: adding it reveals nothing, and
        # nobody needs to copy it out of the source to leave demo mode.
        console.print(
            f"[cyan]Credentials still use the public demo key {DEMO_KEY_ID!r}: it is read"
            " for this run.[/]"
        )
        ring = KeyRing(keys={**ring.keys, DEMO_KEY_ID: DEMO_MASTER_KEY}, active_id=ring.active_id)
    assert to is not None

    async def run() -> int:
        assert to is not None
        # The owner's connection: rotation reads every tenant (each batch is scoped to one).
        engine = create_engine(to_async_url(url), pool_size=1)
        try:
            try:
                pending = await pending_rotation(engine, ring, to)
            except RotationError as exc:
                console.print(f"[red]{exc}[/]")
                return 2
            with _progress() as bar:
                task = bar.add_task(f"re-wrapping with {to}", total=pending, visible=pending > 0)
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
        retired = [k for k in report.retired_key_ids if k != DEMO_KEY_ID]
        if retired:
            console.print(
                "[green]No credential uses "
                + ", ".join(repr(k) for k in retired)
                + " any more: remove it from FIELDSYNC_MASTER_KEYS when every instance runs"
                f" with {to!r} as the active key.[/]"
            )
        if DEMO_KEY_ID in report.retired_key_ids:
            console.print(
                f"[green]No credential uses the demo key {DEMO_KEY_ID!r} any more: run every"
                " instance with this FIELDSYNC_MASTER_KEYS (`fieldsync serve`, with or without"
                " --demo).[/]"
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


async def _tenant(
    db: Database, org: str | None, admin_email: str
) -> tuple[UUID, UUID | None] | int:
    """The tenant of ``--org``, else of ``--admin-email``, with the acting user (None for
    ``--org``); an exit code after printing why when there is none."""
    from db.queries.users import login_lookup

    if org is not None:
        try:
            return UUID(org), None
        except ValueError:
            console.print(f"[red]--org {org!r} is not a tenant id.[/]")
            return 2
    async with db.unscoped() as conn:
        found = await login_lookup(conn, admin_email)
    if found is None:
        console.print(f"[red]No user {admin_email}: give --org or --admin-email.[/]")
        return 1
    return found.org_id, found.user_id


source_app = typer.Typer(
    help="External sources (systems whose customer lists `fieldsync import` reads).",
    no_args_is_help=True,
)
app.add_typer(source_app, name="source")
_ORG_HELP = "Tenant id; default: the tenant of --admin-email."
_ADMIN_EMAIL_HELP = "Use this admin's tenant (when --org is not given)."


def _parse_mapping(entries: Sequence[str]) -> list[tuple[str, str]] | None:
    """``COLUMN=FIELD`` entries as pairs (the field is after the last ``=``); None if one
    has no ``=``."""
    pairs = []
    for entry in entries:
        column, sep, target = entry.rpartition("=")
        if not sep:
            console.print(f"[red]--map {entry!r}: write COLUMN=FIELD (e.g. No=externalId).[/]")
            return None
        pairs.append((column, target.strip()))
    return pairs


@source_app.command("create")
def source_create(
    name: Annotated[str, typer.Argument(help="Unique name (any case), used by --source.")],
    mapping: Annotated[
        list[str],
        typer.Option(
            "--map",
            help="COLUMN=FIELD, once per imported column; one column maps to externalId."
            " FIELD is a customer field name as in the API: externalId, active,"
            " businessName, firstName, lastName, email, ...",
        ),
    ],
    kind: Annotated[str, typer.Option(help="What kind of system.")] = "accounting",
    direction: Annotated[
        str,
        typer.Option(
            help="Which one-sided changes imports apply: BOTH, EXTERNAL_TO_LOCAL or"
            " LOCAL_TO_EXTERNAL."
        ),
    ] = "BOTH",
    org: Annotated[str | None, typer.Option(help=_ORG_HELP)] = None,
    admin_email: Annotated[str, typer.Option(help=_ADMIN_EMAIL_HELP)] = "admin@demo.fieldsync.dev",
) -> None:
    """Register an external source and how its file's columns map to customer fields."""
    from db.commands.window_sources import create_source
    from db.errors import DuplicateError, RecordValidationError
    from sync.window import TARGETS, Direction

    try:
        chosen = Direction(direction.upper())
    except ValueError:
        console.print("[red]--direction is BOTH, EXTERNAL_TO_LOCAL or LOCAL_TO_EXTERNAL.[/]")
        raise typer.Exit(2) from None
    pairs = _parse_mapping(mapping)
    if pairs is None:
        raise typer.Exit(2)
    settings = Settings()
    url = _prepared_url(settings)

    async def run() -> int:
        async with _app_database(settings, url, pool_size=1) as db:
            tenant = await _tenant(db, org, admin_email)
            if isinstance(tenant, int):
                return tenant
            org_id, _ = tenant
            try:
                async with db.tenant(org_id) as conn:
                    row = await create_source(
                        conn,
                        org_id=org_id,
                        name=name,
                        kind=kind,
                        direction=chosen,
                        mapping=pairs,
                    )
            except RecordValidationError as exc:
                console.print("[red]Source not created:[/]")
                for path, problem in exc.field_errors.items():
                    console.print(f"  {path}: {problem}")
                console.print("Fields: " + ", ".join(TARGETS))
                return 2
            except DuplicateError as exc:
                console.print(f"[red]Source not created: {exc}.[/]")
                return 1
        columns = ", ".join(f"{c} -> {t}" for c, t in row["mapping"])
        console.print(
            f"[green]Created source {row['name']!r} ({row['id']}) in tenant {org_id}:"
            f" {columns}; direction {row['direction']}.[/]"
        )
        console.print(f"Import a file with: fieldsync import FILE --source {row['name']!r}")
        return 0

    code = asyncio.run(run())
    if code:
        raise typer.Exit(code)


@source_app.command("list")
def source_list(
    org: Annotated[str | None, typer.Option(help=_ORG_HELP)] = None,
    admin_email: Annotated[str, typer.Option(help=_ADMIN_EMAIL_HELP)] = "admin@demo.fieldsync.dev",
) -> None:
    """List the tenant's external sources with their column mappings (on stdout)."""
    from db.queries.external import list_sources

    settings = Settings()
    url = _prepared_url(settings)

    async def run() -> list[dict[str, Any]] | int:
        async with _app_database(settings, url, pool_size=1) as db:
            tenant = await _tenant(db, org, admin_email)
            if isinstance(tenant, int):
                return tenant
            async with db.tenant(tenant[0]) as conn:
                return await list_sources(conn, tenant[0])

    rows = asyncio.run(run())
    if isinstance(rows, int):
        raise typer.Exit(rows)
    if not rows:
        console.print(
            "No external sources yet: `fieldsync source create NAME --map COLUMN=externalId"
            " ...` adds one."
        )
        return
    table = Table("name", "kind", "direction", "mapping (column -> field)", "id")
    for row in rows:
        mapped = ", ".join(f"{c} -> {t}" for c, t in row["mapping"])
        table.add_row(row["name"], row["kind"], row["direction"], mapped, str(row["id"]))
    Console().print(table)


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
    from db.commands.window_audit import Actor
    from db.commands.window_imports import import_file
    from db.queries.external import source_by_name
    from sync.window import ImportFormat

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
            tenant = await _tenant(db, org, admin_email)
            if isinstance(tenant, int):
                return tenant
            org_id, user_id = tenant
            actor = Actor(id=user_id, name="cli" if user_id is None else f"cli ({admin_email})")
            async with db.tenant(org_id) as conn:
                row = await source_by_name(conn, org_id, source)
            if row is None:
                console.print(
                    f"[red]No external source named {source!r} in tenant {org_id}. Create it"
                    " with `fieldsync source create NAME --map COLUMN=externalId --map"
                    " COLUMN=FIELD ...`; `fieldsync source list` lists them.[/]"
                )
                return 1
            with _steps_progress() as bar:
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
                    progress=_Steps(bar),
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
    from server.schema import export_sdl

    output.write_text(export_sdl())
    console.print(f"[green]Wrote {output}[/]")
