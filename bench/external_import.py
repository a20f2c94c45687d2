"""External sync window: importing a 20,000-row CSV, matching and categorising it.

Seeds 20,000 customers (``db.seed.seed_records``) into a fresh tenant and registers an
accounting source mapping company, first and last name, email and phone. Then two imports
through ``db.commands.window_imports.import_file`` (the code behind the GraphQL mutation and the
CLI), each timed from the file's bytes to the committed window:

1. **first import**: 19,000 rows (95%) carrying the customers' own values, so every one is
   paired by primary email and lands SYNCHRONIZED; 1,000 customers (5%) are not in the file
   and stay NEW_LOCAL.
2. **second import**, the one the issue sets the bar for: 20,000 rows. 1,000 paired
   customers (5%) were renamed locally and differently in the file (CONFLICT), 500 were
   renamed only in the file (applied to the customers through the write path), 1,000 rows
   are new there (NEW_EXTERNAL); 1,000 customers are still new here (NEW_LOCAL).

The counts of every category are checked. The baseline, in the same run: raw asyncpg
``COPY`` of the same 20,000 rows (external id, values as JSON, active, line) into a
temporary table, which is the floor of getting those rows into PostgreSQL at all.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python -m bench.external_import
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import time
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from sqlalchemy import select

from bench.common import app_database, asyncpg_dsn, bench_database, bench_tenant, log, machine
from db.commands.records import SERVER_REPLICA
from db.commands.window_audit import Actor
from db.commands.window_imports import import_file
from db.commands.window_sources import create_source
from db.entities import CUSTOMER
from db.queries.external import category_counts
from db.seed import seed_records
from db.tables import customers
from db.write_path import RecordWrite, write_records
from sync.window import Category, Direction, ImportFormat

HEADER = ["Customer No", "Company", "First", "Last", "E-mail", "Phone"]
MAPPING = [
    ("Customer No", "externalId"),
    ("Company", "businessName"),
    ("First", "firstName"),
    ("Last", "lastName"),
    ("E-mail", "email"),
    ("Phone", "phone"),
]
ACTOR = Actor(id=None, name="bench")


def to_csv(rows: list[list[str]]) -> bytes:
    """A CSV file with the header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue().encode()


def file_row(number: int, customer: dict[str, Any], **override: str) -> list[str]:
    """One external row carrying a customer's values (with overrides)."""
    phones = customer["phones"] or []
    values = {
        "Company": customer["business_name"] or "",
        "First": customer["first_name"] or "",
        "Last": customer["last_name"] or "",
        "E-mail": customer["email"] or "",
        "Phone": phones[0]["number"] if phones else "",
        **override,
    }
    return [f"X{number:06d}", *(values[h] for h in HEADER[1:])]


async def timed_import(db: Any, org_id: UUID, source_id: UUID, data: bytes) -> tuple[float, dict]:
    """Run one import; (seconds, batch counts)."""
    start = time.perf_counter()
    outcome = await import_file(
        db,
        org_id=org_id,
        source_id=source_id,
        data=data,
        file_name="customers.csv",
        file_format=ImportFormat.CSV,
        actor=ACTOR,
        max_bytes=50 * 1024 * 1024,
    )
    seconds = time.perf_counter() - start
    batch = outcome.batch
    assert batch["status"] == "APPLIED", batch["errors"][:5]
    return seconds, batch["counts"]


async def copy_baseline(url: str, rows: list[list[str]]) -> float:
    """Raw asyncpg COPY of the same rows into a temporary table (owner connection)."""
    records = [
        (
            r[0],
            orjson.dumps(dict(zip(HEADER[1:], r[1:], strict=True))).decode(),
            True,
            line,
        )
        for line, r in enumerate(rows, start=2)
    ]
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(
            "CREATE TEMP TABLE copy_baseline"
            " (external_id text PRIMARY KEY, vals jsonb, active bool, line int)"
        )
        start = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "copy_baseline", records=records, columns=["external_id", "vals", "active", "line"]
            )
        return time.perf_counter() - start
    finally:
        await conn.close()


async def run(url: str, count: int) -> None:
    """Seed, import twice, check the window, print the figures."""
    db = app_database(url)
    try:
        org_id, _ = await bench_tenant(db)
        log(f"seeding {count} customers")
        await seed_records(
            db,
            org_id,
            customers_count=count,
            contacts_per_customer=0,
            facilities_per_customer=0,
            assets_per_customer=0,
            batch_size=1000,
        )
        async with db.tenant(org_id) as conn:
            source = await create_source(
                conn,
                org_id=org_id,
                name="Accounting",
                kind="accounting",
                direction=Direction.BOTH,
                mapping=MAPPING,
            )
            result = await conn.execute(
                select(customers).where(customers.c.org_id == org_id).order_by(customers.c.email)
            )
            local = [dict(r) for r in result.mappings()]
        five = count // 20
        in_file = local[: count - five]  # the last 5% stay new here
        first_rows = [file_row(n, c) for n, c in enumerate(in_file)]
        log(f"first import: {len(first_rows)} rows")
        first_seconds, first_counts = await timed_import(
            db, org_id, source["id"], to_csv(first_rows)
        )

        conflicts = in_file[:five]
        external_only = in_file[five : five + five // 2]
        async with db.tenant(org_id) as conn:
            await write_records(
                conn,
                org_id=org_id,
                spec=CUSTOMER,
                writes=[
                    RecordWrite(c["id"], {"business_name": f"Local name {n}"})
                    for n, c in enumerate(conflicts)
                ],
                replica=SERVER_REPLICA,
            )
        second_rows = []
        for n, customer in enumerate(in_file):
            if n < five:
                second_rows.append(file_row(n, customer, Company=f"External name {n}"))
            elif n < five + len(external_only):
                second_rows.append(file_row(n, customer, Company=f"Renamed outside {n}"))
            else:
                second_rows.append(file_row(n, customer))
        for n in range(five):
            second_rows.append(
                [f"N{n:06d}", f"New Account {n}", "", "", f"new{n}@accounts.example", ""]
            )
        data = to_csv(second_rows)
        log(f"second import: {len(second_rows)} rows, {len(data) / 1e6:.1f} MB")
        second_seconds, second_counts = await timed_import(db, org_id, source["id"], data)
        async with db.tenant(org_id) as conn:
            window = await category_counts(conn, org_id, source["id"])
        expected = {
            Category.CONFLICT: five,
            Category.NEW_EXTERNAL: five,
            Category.NEW_LOCAL: five,
            Category.SYNCHRONIZED: count - 2 * five,
        }
        for category, n in expected.items():
            assert window[category] == n, (category, window)
        assert second_counts["applied"] == len(external_only), second_counts
        baseline = await copy_baseline(url, second_rows)
    finally:
        await db.close()

    print(f"machine: {machine()}")
    print(f"local customers: {count}; file rows: {len(second_rows)} ({len(data) / 1e6:.1f} MB)")
    print(
        f"first import ({first_counts['rows']} rows, {first_counts['matched']} paired by email):"
        f" {first_seconds:.2f} s"
    )
    print(
        f"second import ({five} conflicts, {len(external_only)} applied to customers,"
        f" {five} new external, {five} new local): {second_seconds:.2f} s"
    )
    print(f"window after: {', '.join(f'{c.value} {n}' for c, n in window.items())}")
    print(f"baseline, asyncpg COPY of the same rows: {baseline:.3f} s")
    print(f"ratio second import / COPY: {second_seconds / baseline:.1f}x")
    print(f"bar: second import under 30 s: {'yes' if second_seconds < 30 else 'NO'}")


def main() -> None:
    """Parse arguments and run in a throw-away database."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()
    with bench_database() as url:
        asyncio.run(run(url, args.customers))


if __name__ == "__main__":
    main()
