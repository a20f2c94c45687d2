"""Demo and load data, written through the one write path in batches."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from db.commands.credentials import create as create_credential
from db.crypto import KeyRing
from db.engine import Database
from db.entities import ASSET, CONTACT, CUSTOMER, FACILITY
from db.queries import custom_fields, orgs, users
from db.tables import customers
from db.write_path import RecordWrite, write_records

SEED_REPLICA = "server"
BUSINESS = [
    "Acme",
    "Harbor",
    "Summit",
    "Oak",
    "Pioneer",
    "Liberty",
    "Granite",
    "Maple",
    "Riverside",
    "Northgate",
    "Bluewater",
    "Ironwood",
    "Cedar",
    "Sterling",
    "Falcon",
]
KINDS = [
    "Industries",
    "Logistics",
    "Hospital",
    "School District",
    "Warehousing",
    "Hotels",
    "Foods",
    "Medical Center",
    "Properties",
    "Storage",
    "Manufacturing",
    "Retail",
]
FIRST = [
    "Ana",
    "Ben",
    "Chloe",
    "Dev",
    "Elif",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jon",
    "Kira",
    "Luis",
    "Mona",
    "Nils",
    "Olga",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
]
LAST = [
    "Adams",
    "Baker",
    "Chen",
    "Diaz",
    "Evans",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ito",
    "Jensen",
    "Khan",
    "Lopez",
    "Meyer",
    "Novak",
    "Okafor",
    "Patel",
    "Rossi",
    "Silva",
]
CITIES = ["Springfield", "Riverton", "Lakeside", "Fairview", "Madison", "Georgetown"]
DOORS = [
    ("Fire door", "Assa Abloy"),
    ("Rolling shutter", "Hörmann"),
    ("Sliding door", "Dorma"),
    ("Dock leveler", "Rite-Hite"),
    ("Sectional door", "Overhead Door"),
    ("Revolving door", "Boon Edam"),
    ("Swing gate", "FAAC"),
]

DEMO_FIELDS: list[dict[str, Any]] = [
    {
        "entity_type": "CUSTOMER",
        "key": "tier",
        "label": "Service tier",
        "field_type": "DROPDOWN",
        "required": False,
        "position": 0,
        "options": [
            {"value": "gold", "label": "Gold", "badgeIcon": "star"},
            {"value": "silver", "label": "Silver", "badgeIcon": "shield"},
            {"value": "bronze", "label": "Bronze", "badgeIcon": None},
        ],
    },
    {
        "entity_type": "CUSTOMER",
        "key": "contract_number",
        "label": "Contract number",
        "field_type": "TEXT",
        "required": False,
        "position": 1,
        "options": [],
    },
    {
        "entity_type": "ASSET",
        "key": "last_inspection",
        "label": "Last inspection",
        "field_type": "DATE",
        "required": False,
        "position": 0,
        "options": [],
    },
    {
        "entity_type": "ASSET",
        "key": "fire_rated",
        "label": "Fire rated",
        "field_type": "CHECKBOX",
        "required": False,
        "position": 1,
        "options": [],
    },
]


@dataclass(frozen=True)
class SeedCounts:
    """How many records a seed wrote."""

    customers: int
    contacts: int
    facilities: int
    assets: int

    def __str__(self) -> str:
        return (
            f"{self.customers} customers, {self.contacts} contacts,"
            f" {self.facilities} facilities, {self.assets} assets"
        )


def _customer(rng: random.Random, n: int) -> dict[str, Any]:
    if rng.random() < 0.7:
        name = f"{rng.choice(BUSINESS)} {rng.choice(KINDS)} {n}"
        values: dict[str, Any] = {"business_name": name}
        email = f"office{n}@{name.split(maxsplit=1)[0].lower()}-{n}.example"
    else:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        values = {"first_name": first, "last_name": f"{last}-{n}"}
        email = f"{first.lower()}.{last.lower()}{n}@mail.example"
    city = rng.choice(CITIES)
    values.update(
        email=email,
        phones=[{"type": "WORK", "number": f"+1 555 {n % 1000:03d} {rng.randint(1000, 9999)}"}],
        addresses=[
            {
                "type": "BILL_TO",
                "line1": f"{rng.randint(1, 999)} Main St",
                "city": city,
                "region": "CA",
                "postalCode": f"{rng.randint(90000, 96199)}",
                "country": "US",
            }
        ],
        settings={
            "taxFree": rng.random() < 0.1,
            "taxRate": 7.25,
            "smsEnabled": rng.random() < 0.5,
        },
        custom_fields={
            "tier": rng.choice(["gold", "silver", "bronze"]),
            "contract_number": f"C-{n:06d}",
        },
    )
    return values


def _batches(total: int, size: int) -> Iterator[range]:
    for start in range(0, total, size):
        yield range(start, min(total, start + size))


async def seed_records(
    db: Database,
    org_id: UUID,
    *,
    customers_count: int,
    contacts_per_customer: int = 3,
    facilities_per_customer: int = 2,
    assets_per_customer: int = 20,
    batch_size: int = 250,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
) -> SeedCounts:
    """Write customers with contacts, facilities and assets, one transaction per batch."""
    rng = random.Random(seed)
    start = await _next_number(db, org_id)
    counts = [0, 0, 0, 0]
    for batch in _batches(customers_count, batch_size):
        cust, cont, fac, asset = [], [], [], []
        for i in batch:
            customer_id = uuid4()
            cust.append(RecordWrite(customer_id, _customer(rng, start + i)))
            for _ in range(contacts_per_customer):
                cont.append(
                    RecordWrite(
                        uuid4(),
                        {
                            "first_name": rng.choice(FIRST),
                            "last_name": rng.choice(LAST),
                            "title": rng.choice(["Facility manager", "Owner", "Security lead"]),
                            "phones": [
                                {"type": "MOBILE", "number": f"+1 555 {rng.randint(100, 999)} 0101"}
                            ],
                        },
                        links={"customer_id": customer_id},
                    )
                )
            facility_ids = [uuid4() for _ in range(facilities_per_customer)]
            for k, facility_id in enumerate(facility_ids):
                fac.append(
                    RecordWrite(
                        facility_id,
                        {
                            "name": f"Building {chr(65 + k)}",
                            "address": {
                                "line1": f"{rng.randint(1, 999)} Industrial Way",
                                "city": rng.choice(CITIES),
                                "country": "US",
                            },
                        },
                        links={"customer_id": customer_id},
                    )
                )
            for k in range(assets_per_customer if facility_ids else 0):
                kind, maker = rng.choice(DOORS)
                asset.append(
                    RecordWrite(
                        uuid4(),
                        {
                            "kind": kind,
                            "manufacturer": maker,
                            "model": f"M-{rng.randint(100, 999)}",
                            "serial_number": f"SN{rng.randint(10**7, 10**8 - 1)}",
                            "install_date": date(2015, 1, 1) + timedelta(days=rng.randint(0, 3500)),
                            "location": f"Dock {k + 1}",
                            "custom_fields": {"fire_rated": kind == "Fire door"},
                        },
                        links={
                            "customer_id": customer_id,
                            "facility_id": facility_ids[k % len(facility_ids)],
                        },
                    )
                )
        async with db.tenant(org_id) as conn:
            for spec, writes, slot in (
                (CUSTOMER, cust, 0),
                (CONTACT, cont, 1),
                (FACILITY, fac, 2),
                (ASSET, asset, 3),
            ):
                if writes:
                    await write_records(
                        conn,
                        org_id=org_id,
                        spec=spec,
                        writes=writes,
                        replica=SEED_REPLICA,
                        current={},
                    )
                    counts[slot] += len(writes)
        if progress is not None:
            progress(len(batch))
    return SeedCounts(*counts)


async def _next_number(db: Database, org_id: UUID) -> int:
    async with db.tenant(org_id) as conn:
        query = select(func.count()).select_from(customers).where(customers.c.org_id == org_id)
        return int((await conn.execute(query)).scalar_one())


async def ensure_demo_fields(conn: AsyncConnection, org_id: UUID) -> None:
    """The demo tenant's custom fields (a dropdown with badges, text, date, checkbox)."""
    if await custom_fields.definitions_for(conn, org_id, ["CUSTOMER", "ASSET"]):
        return
    for definition in DEMO_FIELDS:
        await custom_fields.create_definition(conn, org_id, definition)


# Credentials of the demo tenant, so masked passwords, reveal and the access report can be
# tried at once: public ones (portal users of the customer see them) and internal ones.
# The passwords are demo data, encrypted with whatever key ring the server runs with.
DEMO_CREDENTIALS: list[dict[str, Any]] = [
    {
        "name": "Front gate keypad",
        "username": None,
        "url": None,
        "notes": "Keypad left of the north gate; the code opens gate and dock.",
        "is_public": True,
        "password": "demo-gate-2468",
    },
    {
        "name": "Customer portal (service account)",
        "username": "service@demo.fieldsync.dev",
        "url": "https://portal.example/login",
        "notes": "Shared with the customer's facility manager.",
        "is_public": True,
        "password": "demo-portal-1357",
    },
    {
        "name": "Door controller admin",
        "username": "admin",
        "url": "http://192.0.2.10",
        "notes": "Internal: never give this to the customer.",
        "is_public": False,
        "password": "demo-controller-9753",
    },
    {
        "name": "Site router",
        "username": "fieldsync",
        "url": "http://192.0.2.1",
        "notes": "Internal: remote maintenance VPN.",
        "is_public": False,
        "password": "demo-router-8642",
    },
]


async def seed_demo_credentials(db: Database, org_id: UUID, keyring: KeyRing) -> list[str]:
    """Add :data:`DEMO_CREDENTIALS` to two of the tenant's customers (the first by name);
    the names of those customers (none without customers)."""
    async with db.tenant(org_id) as conn:
        name = func.coalesce(
            customers.c.business_name,
            func.concat_ws(" ", customers.c.first_name, customers.c.last_name),
        )
        query = (
            select(customers.c.id, name.label("name"))
            .where(customers.c.org_id == org_id)
            .order_by(name, customers.c.id)
            .limit(2)
        )
        found = (await conn.execute(query)).all()
        if not found:
            return []
        customer_ids = [row.id for row in found]
        for n, spec in enumerate(DEMO_CREDENTIALS):
            values = {k: v for k, v in spec.items() if k != "password"}
            await create_credential(
                conn,
                org_id=org_id,
                customer_id=customer_ids[n % len(customer_ids)],
                contact_id=None,
                values=values,
                password=spec["password"],
                keyring=keyring,
                replica=SEED_REPLICA,
            )
    return [row.name for row in found]


@dataclass(frozen=True)
class DemoAccount:
    """A demo user and the password printed for them."""

    email: str
    password: str
    role: str


async def create_org_with_admin(
    db: Database, *, org_name: str, email: str, password_hash: str, name: str = "Admin"
) -> UUID:
    """A new tenant and its first admin, in one transaction."""
    async with db.unscoped() as conn:
        org_id = await orgs.create_org(conn, org_name)
        await users.create_user(
            conn,
            org_id=org_id,
            email=email,
            name=name,
            password_hash=password_hash,
            role="ADMIN",
            capabilities=dict.fromkeys(users.CAPABILITY_COLUMNS, True),
        )
    return org_id
