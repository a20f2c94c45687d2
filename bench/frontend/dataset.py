"""The bench database: the fixed data set, and the views PostGraphile serves it through.

The data set is written once through our write path (``db.seed.seed_records``, ~30 s) into
``fieldsync_bench_<random>``; ``--keep-db`` keeps that database and ``--database NAME`` reuses
it (the tenant is found by its name, ``ORG_NAME``), so repeated runs skip the load.

PostGraphile reads the same rows through ``postgraphile_api``: one view per table,
``security_invoker`` so our forced row-level security applies to its role as it does to
ours, tombstones (``deleted``) filtered out, and smart comments that give the views primary
keys and the customer -> contacts/facilities and facility -> assets relations (as plain
lists, like our ``[Contact!]!``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
from sqlalchemy import make_url

from bench.common import (
    APP_ROLE,
    PASSWORD,
    Server,
    api_client,
    app_database,
    asyncpg_dsn,
    base_url,
    bench_tenant,
    log,
)
from db.migrate import upgrade
from db.seed import seed_records

ORG_NAME = "Bench Frontend"
SCHEMA = "postgraphile_api"
# PostGraphile's login role: a member of the app role, so it has exactly the app's grants
# and is subject to the same forced RLS policies (it is neither superuser nor owner).
PG_ROLE = "postgraphile_bench"

# The data set.
CUSTOMERS = 10_000
CONTACTS_PER_CUSTOMER = 3
FACILITIES_PER_CUSTOMER = 2
ASSETS_PER_CUSTOMER = 20


@dataclass(frozen=True)
class Dataset:
    """Where the data lives and who may read it."""

    url: str
    org_id: uuid.UUID
    email: str


async def _admin(sql: str) -> None:
    await _admin_on(base_url(), sql)


async def _admin_on(url: str, sql: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def bench_db(name: str | None, keep: bool) -> Iterator[tuple[str, bool]]:
    """Yield ``(url, fresh)``: the database ``name`` if given (reused, never dropped), else a
    new migrated ``fieldsync_bench_<random>``, dropped at the end unless ``keep``."""
    base = make_url(base_url())
    if name:
        url = base.set(database=name).render_as_string(False)
        # The code may have gained migrations since the database was kept: bring it to head
        # (the views go first, they would pin the columns a migration alters).
        asyncio.run(_admin_on(url, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        upgrade(url, app_role=APP_ROLE, app_password=None)
        yield url, False
        return
    name = f"fieldsync_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        url = base.set(database=name).render_as_string(False)
        log(f"database {name} created; migrating")
        upgrade(url, app_role=APP_ROLE, app_password=None)
        yield url, True
    finally:
        if keep:
            log(f"database {name} kept: rerun with --database {name}")
        else:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            log(f"database {name} dropped")


async def load(url: str, fresh: bool) -> Dataset:
    """Seed the data set into a fresh database, or find the tenant of a reused one."""
    dsn = asyncpg_dsn(url)
    if not fresh:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT o.org_id, u.email FROM orgs o JOIN users u USING (org_id)"
                " WHERE o.name = $1 AND u.role = 'ADMIN' ORDER BY o.created_at LIMIT 1",
                ORG_NAME,
            )
        finally:
            await conn.close()
        if row is None:
            raise SystemExit(f"no {ORG_NAME!r} tenant in {url}: run once with --keep-db")
        log(f"reusing tenant {row['org_id']} ({row['email']})")
        return Dataset(url, row["org_id"], row["email"])
    db = app_database(url)
    try:
        org_id, email = await bench_tenant(db, ORG_NAME)
        started = time.perf_counter()
        counts = await seed_records(
            db,
            org_id,
            customers_count=CUSTOMERS,
            contacts_per_customer=CONTACTS_PER_CUSTOMER,
            facilities_per_customer=FACILITIES_PER_CUSTOMER,
            assets_per_customer=ASSETS_PER_CUSTOMER,
        )
        log(f"seeded {counts} in {time.perf_counter() - started:.1f}s")
    finally:
        await db.close()
    return Dataset(url, org_id, email)


# Relations as plain lists (our [Contact!]! shape), not connections.
AS_LIST = "|@behavior -connection +list"

# Views: same rows (live records of the tenant RLS lets through), same fields, JSONB passed
# through as PostGraphile's JSON scalar. display_name is what Customer.displayName computes
# (business name, else the non-empty first and last names joined by a space).
VIEWS_SQL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};

CREATE OR REPLACE VIEW {SCHEMA}.customers WITH (security_invoker = true) AS
SELECT id, business_name, first_name, last_name, email,
       coalesce(nullif(business_name, ''),
                concat_ws(' ', nullif(first_name, ''), nullif(last_name, ''))) AS display_name,
       phones, addresses, notification_emails, invoice_cc_emails, settings, custom_fields,
       archived, sort_name, version, created_at, updated_at
FROM public.customers WHERE NOT deleted;

CREATE OR REPLACE VIEW {SCHEMA}.contacts WITH (security_invoker = true) AS
SELECT id, customer_id, first_name, last_name, title, email, phones, notes, custom_fields,
       version, created_at, updated_at
FROM public.contacts WHERE NOT deleted;

CREATE OR REPLACE VIEW {SCHEMA}.facilities WITH (security_invoker = true) AS
SELECT id, customer_id, name, address, notes, custom_fields, version, created_at, updated_at
FROM public.facilities WHERE NOT deleted;

CREATE OR REPLACE VIEW {SCHEMA}.assets WITH (security_invoker = true) AS
SELECT id, customer_id, facility_id, kind, manufacturer, model, serial_number, install_date,
       location, notes, custom_fields, version, created_at, updated_at
FROM public.assets WHERE NOT deleted;

-- (c): name-prefix search, ordered like the list (sort_name, id). sort_name is lower-case;
-- LIKE 'prefix%' on it is served by a (org_id, sort_name text_pattern_ops) index: ours had
-- it (ix_customers_org_sort_pattern) until migration 0007 replaced it by a trigram index
-- on search_text for its substring search, so the bench adds it back for this function.
-- Under forced RLS only a LEAKPROOF LIKE may probe an index; 0007 marks textlike so when
-- migrated by a superuser, as the bench does. STABLE so PostGraphile inlines it; the
-- escape keeps the argument a literal prefix.
CREATE INDEX IF NOT EXISTS bench_pgl_customers_sort_pattern
  ON public.customers (org_id, sort_name text_pattern_ops);
CREATE OR REPLACE FUNCTION {SCHEMA}.search_customers(prefix text)
RETURNS SETOF {SCHEMA}.customers LANGUAGE sql STABLE AS $$
  SELECT * FROM {SCHEMA}.customers
  WHERE archived = false
    AND sort_name LIKE replace(replace(replace(lower(prefix), '\\', '\\\\'), '%', '\\%'),
                               '_', '\\_') || '%'
  ORDER BY sort_name, id
$$;

-- (c) with fieldsync's own semantics (--pg-search substring): a substring of the name or
-- of the email, any case. Not index-served (like ours under RLS: see README).
CREATE OR REPLACE FUNCTION {SCHEMA}.search_customers_substring(needle text)
RETURNS SETOF {SCHEMA}.customers LANGUAGE sql STABLE AS $$
  SELECT * FROM {SCHEMA}.customers
  WHERE archived = false
    AND (sort_name || E'\n' || lower(coalesce(email, ''))) LIKE '%' ||
        replace(replace(replace(lower(needle), '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%'
  ORDER BY sort_name, id
$$;

COMMENT ON VIEW {SCHEMA}.customers IS E'@primaryKey id';
COMMENT ON VIEW {SCHEMA}.contacts IS
  E'@primaryKey id\\n@foreignKey (customer_id) references {SCHEMA}.customers (id){AS_LIST}';
COMMENT ON VIEW {SCHEMA}.facilities IS
  E'@primaryKey id\\n@foreignKey (customer_id) references {SCHEMA}.customers (id){AS_LIST}';
COMMENT ON VIEW {SCHEMA}.assets IS
  E'@primaryKey id\\n@foreignKey (facility_id) references {SCHEMA}.facilities (id){AS_LIST}';

DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_ROLE}') THEN
    CREATE ROLE {PG_ROLE} LOGIN;
  END IF;
END $$;
GRANT {APP_ROLE} TO {PG_ROLE};
GRANT USAGE ON SCHEMA {SCHEMA} TO {PG_ROLE};
GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO {PG_ROLE};
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {SCHEMA} TO {PG_ROLE};
"""


async def create_views(url: str) -> None:
    """(Re)create ``postgraphile_api`` and PostGraphile's role; ANALYZE for both servers."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(VIEWS_SQL)
        # Fresh statistics so both servers get the same (good) plans.
        await conn.execute("ANALYZE customers, contacts, facilities, assets")
    finally:
        await conn.close()


async def detail_customer(url: str, org_id: uuid.UUID) -> uuid.UUID:
    """The customer (b) reads: the middle one of the name order (nothing special about it)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        value = await conn.fetchval(
            "SELECT id FROM customers WHERE org_id = $1 AND NOT deleted AND NOT archived"
            " ORDER BY sort_name, id OFFSET 5000 LIMIT 1",
            org_id,
        )
    finally:
        await conn.close()
    return uuid.UUID(str(value))


async def login(server: Server, email: str) -> str:
    """A bearer token of the tenant's admin (signs in through GraphQL)."""
    async with api_client(server) as api:
        await api.login(email, PASSWORD)
        assert api.token
        return api.token


def postgraphile_url(url: str) -> str:
    """The bench database as PostGraphile's role (trust auth on 127.0.0.1)."""
    return make_url(asyncpg_dsn(url)).set(username=PG_ROLE, password=None).render_as_string(False)
