"""Push: one batch of 1,000 offline changes through `pushChanges` over HTTP.

Seeds 2,000 customers through the write path (1,000 per kind of push, see below) and
starts `python -m server serve --workers 2`. Each round registers a fresh device, pulls
everything (so it holds versions), then makes server-side edits
(``db.commands.records.save``, replica ``server``) to two thirds of the customers it will
push:

* i % 3 == 0 -> no server edit: the change's base equals the server version -> APPLIED;
* i % 3 == 1 -> the server edits ``invoiceCcEmails``, the device other fields -> MERGED;
* i % 3 == 2 -> the server edits ``notificationEmails``, which the device edits too
  -> CONFLICT (the tenant's MANUAL policy stores a SyncConflict).

Every change patches ``notificationEmails`` and ``phones`` of one customer, from the version
the device pulled. Only the push request is timed; outcomes are counted and checked.

Each round pushes twice, each time a fresh batch on a fresh device and its own 1,000
customers (so both meet version vectors of the same size): once with the outcome fields
only (``PUSH``, as before sync contract v2), once also selecting each outcome's
``record { entity recordId customerId op version data }`` (``PUSH_WITH_RECORDS``, what a
v2 client selects; every record is checked to be there, at the result's version). Both
figures and their ratios to the baseline are printed; the target applies to the second.

The baseline, in the same process and run: raw asyncpg ``executemany`` of an
``INSERT ... ON CONFLICT (org_id, id) DO UPDATE`` of the same 1,000 rows (every writable
column, as the write path upserts them, in one transaction scoped to the tenant) into a
separate throw-away tenant that already holds them, so every row takes the update path.
Both timed calls run with this process's cyclic collector held back (collected just before
each): the client's own full collections are not the server's work nor the baseline's.

    python -m bench.push_batch [--customers 1000] [--rounds 3] [--workers 2] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.common import (
    PULL,
    PUSH,
    Api,
    api_client,
    app_database,
    asyncpg_dsn,
    bench_database,
    log,
    machine,
    median,
    py_spy,
    running_server,
)
from db.auth import hash_password
from db.commands.records import save
from db.engine import Database
from db.entities import CUSTOMER
from db.seed import create_org_with_admin, ensure_demo_fields, seed_records

PASSWORD = "bench-password-123"  # noqa: S105 - a throw-away bench tenant
APPLIED, MERGED, CONFLICT = "APPLIED", "MERGED", "CONFLICT"
# Sync contract v2: every outcome with its record, as a pull returns it.
PUSH_WITH_RECORDS = """mutation($d: ID!, $changes: [ChangeInput!]!) {
  pushChanges(deviceId: $d, changes: $changes) {
  __typename
  ... on PushResult { reregisterRequired results {
      clientMutationId entity recordId outcome version conflictId
      conflicts { field serverValue clientValue } fieldErrors { field message } message replayed
      record { entity recordId customerId op version data } } }
  ... on UserError { code message } } }"""
# Push time with records at most this many times the baseline (the target).
TARGET_RATIO = 2.5


def expected(i: int) -> str:
    """The outcome change ``i`` is built to get."""
    return (APPLIED, MERGED, CONFLICT)[i % 3]


@dataclass
class PushRun:
    seconds: float
    changes: int
    outcomes: dict[str, int]
    request_bytes: int
    response_bytes: int


async def seed(url: str, customers: int) -> tuple[uuid.UUID, str, uuid.UUID]:
    """The tenant with its customers, and an empty throw-away tenant for the baseline."""
    db = app_database(url)
    try:
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        password_hash = hash_password(PASSWORD)
        org_id = await create_org_with_admin(
            db, org_name="Bench Dealer", email=email, password_hash=password_hash
        )
        baseline_org = await create_org_with_admin(
            db,
            org_name="Baseline Dealer",
            email=f"baseline-{uuid.uuid4().hex[:8]}@example.com",
            password_hash=password_hash,
        )
        # The tenant's custom field definitions, as `fieldsync seed` does (seeded records
        # carry values for them; validation of later writes checks them).
        async with db.tenant(org_id) as conn:
            await ensure_demo_fields(conn, org_id)
        counts = await seed_records(
            db,
            org_id,
            customers_count=customers,
            contacts_per_customer=0,
            facilities_per_customer=0,
            assets_per_customer=0,
        )
        log(f"seeded {counts}")
    finally:
        await db.close()
    return org_id, email, baseline_org


async def pull_all(api: Api, device_id: str) -> dict[str, dict[str, Any]]:
    """Every customer the device holds: id -> version."""
    held: dict[str, dict[str, Any]] = {}
    since = None
    while True:
        page = (await api(PULL, {"d": device_id, "since": since, "limit": 1000}))["pull"]
        for change in page["changes"]:
            if change["entity"] == "CUSTOMER":
                held[change["recordId"]] = change["version"]
        since = page["checkpoint"]
        if not page["hasMore"]:
            return held


async def server_edits(db: Database, org_id: uuid.UUID, ids: list[str], round_: int) -> None:
    """Online edits (replica ``server``) after the device pulled: the MERGED and CONFLICT sets."""
    async with db.tenant(org_id) as conn:
        for i, record_id in enumerate(ids):
            kind = expected(i)
            if kind == APPLIED:
                continue
            column = "invoice_cc_emails" if kind == MERGED else "notification_emails"
            await save(
                conn,
                org_id=org_id,
                spec=CUSTOMER,
                record_id=uuid.UUID(record_id),
                patch={column: [f"server-{round_}-{i}@example.com"]},
            )


def build_changes(
    ids: list[str], held: dict[str, dict[str, Any]], round_: int
) -> list[dict[str, Any]]:
    """One ChangeInput per customer, edited from the pulled version."""
    return [
        {
            "clientMutationId": uuid.uuid4().hex,
            "recordId": record_id,
            "op": "UPSERT",
            "baseVersion": held[record_id],
            "counter": i + 1,
            "patch": {
                "customer": {
                    "notificationEmails": [f"device-{round_}-{i}@example.com"],
                    "phones": [{"type": "MOBILE", "number": f"+1 555 {round_:03d} {i:04d}"}],
                }
            },
        }
        for i, record_id in enumerate(ids)
    ]


@contextlib.contextmanager
def client_collector_paused() -> Iterator[None]:
    """No cyclic collection in this (the client's) process while a timed call runs.

    The bench holds every pulled record of its rounds; decoding a 1.5 MB answer then set
    off a full collection of that heap in the client (78 ms, in the timed push of one round
    in every run), which is neither the server's work nor the baseline's. Collected before,
    held back during, as ``timeit`` does; the server's workers keep their own collector.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def server_push(
    api: Api, device_id: str, changes: list[dict[str, Any]], document: str = PUSH
) -> PushRun:
    body_size = len(
        orjson.dumps({"query": document, "variables": {"d": device_id, "changes": changes}})
    )
    with client_collector_paused():
        started = time.perf_counter()
        data = await api(document, {"d": device_id, "changes": changes})
        seconds = time.perf_counter() - started
    result = data["pushChanges"]
    if result["__typename"] != "PushResult":
        raise AssertionError(f"push refused: {result}")
    outcomes = Counter(r["outcome"] for r in result["results"])
    wrong = [
        (i, r["outcome"], r["message"])
        for i, r in enumerate(result["results"])
        if r["outcome"] != expected(i)
    ]
    if wrong:
        raise AssertionError(f"{len(wrong)} unexpected outcomes, e.g. {wrong[:3]}")
    if document is PUSH_WITH_RECORDS:
        missing = [
            r["recordId"]
            for r in result["results"]
            if r["record"] is None or r["record"]["version"] != r["version"]
        ]
        if missing:
            raise AssertionError(f"{len(missing)} results without their record: {missing[:3]}")
    return PushRun(seconds, len(changes), dict(outcomes), body_size, api.last.response_bytes)


# ----------------------------------------------------------------------------- baseline


async def _columns(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """Writable columns of customers (not generated) and their types, as the write path
    upserts them."""
    rows = await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
        " WHERE attrelid = 'customers'::regclass AND attnum > 0 AND NOT attisdropped"
        " AND attgenerated = '' ORDER BY attnum"
    )
    return [(r["attname"], r["type"]) for r in rows]


def _unnest_upsert_sql(columns: list[tuple[str, str]]) -> str:
    # jsonb travels as text[] (asyncpg reads nested lists as array dimensions) and is cast
    # back per column.
    names = [c for c, _ in columns]
    arrays = ", ".join(
        f"${n}::{'text' if t == 'jsonb' else t}[]" for n, (_, t) in enumerate(columns, start=1)
    )
    selects = ", ".join(f"u.{c}::jsonb" if t == "jsonb" else f"u.{c}" for c, t in columns)
    updates = ", ".join(
        f"{c} = EXCLUDED.{c}" for c in names if c not in ("org_id", "id", "created_at")
    )
    return (
        f"INSERT INTO customers ({', '.join(names)}) SELECT {selects}"
        f" FROM unnest({arrays}) AS u({', '.join(names)})"
        f" ON CONFLICT (org_id, id) DO UPDATE SET {updates}"
    )


def _upsert_sql(columns: list[tuple[str, str]]) -> str:
    names = [c for c, _ in columns]
    placeholders = ", ".join(f"${n}" for n in range(1, len(names) + 1))
    updates = ", ".join(
        f"{c} = EXCLUDED.{c}" for c in names if c not in ("org_id", "id", "created_at")
    )
    return (
        f"INSERT INTO customers ({', '.join(names)}) VALUES ({placeholders})"
        f" ON CONFLICT (org_id, id) DO UPDATE SET {updates}"
    )


async def _connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    return conn


async def baseline_rows(
    dsn: str, org_id: uuid.UUID, baseline_org: uuid.UUID, ids: list[str]
) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    """The pushed customers' current rows, re-tenanted to the baseline org."""
    conn = await _connect(dsn)
    try:
        columns = await _columns(conn)
        async with conn.transaction():
            await conn.execute(f"SELECT set_config('app.org_id', '{org_id}', true)")
            records = await conn.fetch(
                f"SELECT {', '.join(c for c, _ in columns)} FROM customers"
                " WHERE org_id = $1 AND id = ANY($2)",
                org_id,
                [uuid.UUID(i) for i in ids],
            )
        by_id = {str(r["id"]): r for r in records}
        rows = []
        for record_id in ids:
            values = dict(by_id[record_id])
            values["org_id"] = baseline_org
            rows.append(tuple(values[c] for c, _ in columns))
        return columns, rows
    finally:
        await conn.close()


async def baseline_upsert(
    dsn: str,
    baseline_org: uuid.UUID,
    columns: list[tuple[str, str]],
    rows: list[tuple[Any, ...]],
    *,
    unnest: bool = False,
) -> float:
    """Time one upsert of ``rows`` (in a transaction scoped to the tenant): executemany, or
    (informational) one ``INSERT ... SELECT FROM unnest(arrays)`` statement."""
    conn = await _connect(dsn)
    try:
        with client_collector_paused():
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute(f"SELECT set_config('app.org_id', '{baseline_org}', true)")
                if unnest:
                    arrays = [
                        [orjson.dumps(v).decode() for v in column] if t == "jsonb" else list(column)
                        for column, (_, t) in zip(zip(*rows, strict=True), columns, strict=True)
                    ]
                    await conn.execute(_unnest_upsert_sql(columns), *arrays)
                else:
                    await conn.executemany(_upsert_sql(columns), rows)
            return time.perf_counter() - started
    finally:
        await conn.close()


# ----------------------------------------------------------------------------- run


async def one_round(
    api: Api, db: Database, org_id: uuid.UUID, round_: int, part: slice = slice(None)
) -> tuple[str, list[str], list[dict[str, Any]]]:
    """Fresh device, full pull, fresh server edits; returns the changes to push (of the
    customers in ``part`` of the sorted ids)."""
    device = await api.register_device(f"push-{round_}")
    held = await pull_all(api, device["id"])
    ids = sorted(held)[part]
    await server_edits(db, org_id, ids, round_)
    return device["id"], ids, build_changes(ids, held, round_)


async def run(args: argparse.Namespace, url: str) -> int:
    start_machine = machine()
    # Twice the customers: the pushes with records edit the second half, so both kinds of
    # push meet records whose version vectors grew alike (one entry per device and round).
    org_id, email, baseline_org = await seed(url, args.customers * 2)
    plain, recorded_part = slice(args.customers), slice(args.customers, None)
    dsn = asyncpg_dsn(url)
    db = app_database(url)
    pushes: list[PushRun] = []
    with_records: list[PushRun] = []
    baselines: list[float] = []
    unnests: list[float] = []
    try:
        with running_server(url, workers=args.workers) as server:
            async with api_client(server) as api:
                await api.login(email, PASSWORD)
                # Warm-up: a tiny push (imports, prepared statements) on a throw-away device.
                device_id, ids, changes = await one_round(api, db, org_id, 0, plain)
                await api(PUSH, {"d": device_id, "changes": changes[:3]})
                await api(PUSH_WITH_RECORDS, {"d": device_id, "changes": changes[3:6]})
                # The baseline tenant holds the rows already: timed upserts take the update path.
                columns, rows = await baseline_rows(dsn, org_id, baseline_org, ids)
                await baseline_upsert(dsn, baseline_org, columns, rows)
                await baseline_upsert(dsn, baseline_org, columns, rows, unnest=True)
                for round_ in range(1, args.rounds + 1):
                    device_id, ids, changes = await one_round(api, db, org_id, round_, plain)
                    result = await server_push(api, device_id, changes)
                    pushes.append(result)
                    log(
                        f"round {round_}: push {result.seconds:.2f}s"
                        f" ({result.changes / result.seconds:,.0f} changes/s) {result.outcomes}"
                    )
                    device_id, _, changes = await one_round(api, db, org_id, round_, recorded_part)
                    recorded = await server_push(api, device_id, changes, PUSH_WITH_RECORDS)
                    with_records.append(recorded)
                    log(
                        f"round {round_}: push with records {recorded.seconds:.2f}s"
                        f" ({recorded.changes / recorded.seconds:,.0f} changes/s)"
                    )
                    columns, rows = await baseline_rows(dsn, org_id, baseline_org, ids)
                    base = await baseline_upsert(dsn, baseline_org, columns, rows)
                    baselines.append(base)
                    unnest = await baseline_upsert(dsn, baseline_org, columns, rows, unnest=True)
                    unnests.append(unnest)
                    log(
                        f"round {round_}: baseline executemany upsert {base * 1000:.0f}ms"
                        f" (unnest upsert {unnest * 1000:.0f}ms)"
                    )
                if args.profile:
                    device_id, ids, changes = await one_round(
                        api, db, org_id, args.rounds + 1, recorded_part
                    )
                    with py_spy(server, Path(args.profile), "push"):
                        profiled = await server_push(api, device_id, changes, PUSH_WITH_RECORDS)
                    log(f"profiled push: {profiled.seconds:.2f}s; profiles in {args.profile}")
    finally:
        await db.close()

    report(start_machine, args, pushes, with_records, baselines, unnests)
    return 0


def report(
    start_machine: str,
    args: argparse.Namespace,
    pushes: list[PushRun],
    with_records: list[PushRun],
    baselines: list[float],
    unnests: list[float],
) -> None:
    """Print the medians, the baseline and both ratios."""
    n = pushes[-1].changes
    push_s = median([p.seconds for p in pushes])
    records_s = median([p.seconds for p in with_records])
    base_s = median(baselines)
    rate = n / push_s
    ratio = push_s / base_s
    records_ratio = records_s / base_s
    print()
    print(f"machine: {start_machine} at start; {machine()} at the end")
    print(
        f"push: one batch of {n:,} changes per round via pushChanges over HTTP;"
        f" outcomes {pushes[-1].outcomes}; request {pushes[-1].request_bytes / 1e3:.0f} kB,"
        f" response {pushes[-1].response_bytes / 1e3:.0f} kB;"
        f" server --workers {args.workers}; {args.rounds} rounds"
    )
    print(
        f"  server push: median {push_s:.2f}s [{', '.join(f'{p.seconds:.2f}' for p in pushes)}]"
        f" = {rate:,.0f} changes/s (target >= 5,000/s: {'PASS' if rate >= 5000 else 'FAIL'})"
    )
    print(
        f"  server push selecting each outcome's record: median {records_s:.2f}s"
        f" [{', '.join(f'{p.seconds:.2f}' for p in with_records)}]"
        f" = {n / records_s:,.0f} changes/s; response"
        f" {with_records[-1].response_bytes / 1e3:.0f} kB"
    )
    print(
        f"  baseline (asyncpg executemany upsert of the same {n:,} rows): median"
        f" {base_s * 1000:.0f}ms [{', '.join(f'{b * 1000:.0f}' for b in baselines)}]"
    )
    print(
        f"  (info, not the baseline: one INSERT ... SELECT FROM unnest(arrays) upsert of the"
        f" same rows: median {median(unnests) * 1000:.0f}ms)"
    )
    print(f"  RATIO push/baseline = {ratio:.2f}x (outcome fields only)")
    print(
        f"  RATIO push with records/baseline = {records_ratio:.2f}x"
        f" (target <= {TARGET_RATIO}x: {'PASS' if records_ratio <= TARGET_RATIO else 'FAIL'})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", help="directory for py-spy profiles of one extra push")
    args = parser.parse_args()
    with bench_database() as url:
        return asyncio.run(run(args, url))


if __name__ == "__main__":
    sys.exit(main())
