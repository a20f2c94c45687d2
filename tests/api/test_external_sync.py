"""The external-system sync window end to end through the HTTP GraphQL API.

A dealer's accounting system is connected as a source, its customer list imported, every
pair sorted into the seven categories, and every action taken, single and in bulk; the
device test runs against a real server process and a WebSocket subscription.
"""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests.api.queries import UPDATE_CUSTOMER, make_customer
from tests.api.sync_client import Device
from tests.api.test_limits import app_with
from tests.api.ws_client import Socket
from tests.conftest import Api, Tenant, new_tenant

HEADER = ["Customer No", "Company", "E-mail", "Phone", "Status"]
MAPPING = [
    {"column": "Customer No", "field": "externalId"},
    {"column": "Company", "field": "businessName"},
    {"column": "E-mail", "field": "email"},
    {"column": "Phone", "field": "phone"},
    {"column": "Status", "field": "active"},
]

CREATE_SOURCE = """mutation($input: CreateExternalSourceInput!) {
  createExternalSource(input: $input) { __typename
    ... on ExternalSource { id name direction mapping { column field } }
    ... on UserError { code message }
    ... on ValidationError { fieldErrors { field message } } } }"""

BATCH_FIELDS = """id status rows created updated unchanged removed matchedByEmail appliedToLocal
  alreadyImported problemCount counts { category count } errors { line column reason }"""

IMPORT = f"""mutation($s: ID!, $content: String, $name: String) {{
  importExternalRecords(sourceId: $s, content: $content, fileName: $name) {{ __typename
    ... on ImportBatch {{ {BATCH_FIELDS} }}
    ... on ImportRefused {{ code message errors {{ line column reason }} batch {{ id status }} }}
    ... on UserError {{ code message }} }} }}"""

UPLOAD = f"""mutation($s: ID!, $file: Upload) {{
  importExternalRecords(sourceId: $s, file: $file) {{ __typename
    ... on ImportBatch {{ {BATCH_FIELDS} }}
    ... on ImportRefused {{ errors {{ line reason }} }} }} }}"""

PAIR_FIELDS = """category externalId customerId syncActive externalActive externalDeleted
  localDeleted pendingExport
  fields { field localValue externalValue syncedValue state }
  conflicts { field localValue externalValue }
  auditTrail { action actor details }
  customer { businessName email }"""

WINDOW = f"""query($s: ID!, $c: SyncCategory!, $first: Int! = 50, $after: String) {{
  syncWindow(sourceId: $s, category: $c, first: $first, after: $after) {{
    totalCount hasNextPage endCursor counts {{ category count }}
    pairs {{ {PAIR_FIELDS} }} }} }}"""

ACTION_RESULT = f"""__typename
  ... on SyncActionResult {{ pairs {{ {PAIR_FIELDS} }} newLocalCustomerIds
      refused {{ externalId code message }} }}
  ... on UserError {{ code message }}"""

PAIR = f"""mutation($s: ID!, $pairs: [PairInput!]!) {{
  pairExternalRecords(sourceId: $s, pairs: $pairs) {{ {ACTION_RESULT} }} }}"""
CREATE = f"""mutation($s: ID!, $ids: [String!]!) {{
  createCustomersFromExternal(sourceId: $s, externalIds: $ids) {{ {ACTION_RESULT} }} }}"""
RESOLVE = f"""mutation($s: ID!, $r: [ConflictResolutionInput!]!) {{
  resolveExternalConflicts(sourceId: $s, resolutions: $r) {{ {ACTION_RESULT} }} }}"""
ACTIVE = f"""mutation($s: ID!, $ids: [String!]!, $on: Boolean!) {{
  setExternalSyncActive(sourceId: $s, externalIds: $ids, active: $on) {{ {ACTION_RESULT} }} }}"""
UNLINK = f"""mutation($s: ID!, $ids: [String!]!) {{
  unlinkExternalRecords(sourceId: $s, externalIds: $ids) {{ {ACTION_RESULT} }} }}"""
REMOVE = f"""mutation($s: ID!, $ids: [String!]!, $archive: Boolean!) {{
  removeDeletedExternalRecords(sourceId: $s, externalIds: $ids, archiveLocal: $archive) {{
    {ACTION_RESULT} }} }}"""
REFRESH = """mutation($s: ID!) { refreshSyncWindow(sourceId: $s) { __typename
  ... on SyncRefreshResult { appliedToLocal counts { category count } }
  ... on UserError { code message } } }"""
EXPORT = """query($s: ID!) { exportLocal(sourceId: $s) }"""
BATCHES = (
    """query($s: ID!) { importBatches(sourceId: $s) { id status problemCount alreadyImported } }"""
)
CUSTOMER = (
    """query($id: ID!) { customer(id: $id) { businessName email archived phones { number } } }"""
)


def csv_bytes(rows: list[list[str]], header: list[str] = HEADER) -> bytes:
    """A CSV file as an accounting package exports it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


async def create_source(api: Api, name: str = "Accounting", **extra: Any) -> str:
    """Register the accounting source; its global id."""
    data = await api(
        CREATE_SOURCE, {"input": {"name": name, "mapping": MAPPING, "kind": "accounting", **extra}}
    )
    result = data["createExternalSource"]
    assert result["__typename"] == "ExternalSource", result
    return str(result["id"])


async def import_text(api: Api, source: str, data: bytes, name: str = "customers.csv") -> dict:
    """Import through the plain JSON `content` argument."""
    data = await api(IMPORT, {"s": source, "content": data.decode(), "name": name})
    return data["importExternalRecords"]  # type: ignore[no-any-return]


async def window(api: Api, source: str, category: str, **kw: Any) -> dict:
    """One page of a category."""
    return (await api(WINDOW, {"s": source, "c": category, **kw}))["syncWindow"]  # type: ignore[no-any-return]


async def counts(api: Api, source: str) -> dict[str, int]:
    """Every category's count."""
    page = await window(api, source, "SYNCHRONIZED", first=1)
    return {c["category"]: c["count"] for c in page["counts"]}


async def pair_of(api: Api, source: str, category: str, external_id: str) -> dict:
    """The pair of an external id in a category (fails when absent)."""
    pairs = (await window(api, source, category))["pairs"]
    found = [p for p in pairs if p["externalId"] == external_id]
    assert found, (external_id, category, pairs)
    return found[0]


def row(number: str, company: str, email: str, phone: str = "+1 555 0100", status: str = "active"):
    return [number, company, email, phone, status]


async def local(api: Api, name: str, email: str) -> str:
    """A local customer with a work phone; its global id."""
    customer = await make_customer(
        api, businessName=name, email=email, phones=[{"type": "WORK", "number": "+1 555 0100"}]
    )
    return str(customer["id"])


# The external system's list: A-E match local customers by email, N and M are new there,
# I is inactive there.
FIRST = [
    row("A-1", "Acme Doors", "a@acme.example"),
    row("B-2", "Bolt Gates", "b@bolt.example"),
    row("C-3", "Crane Locks", "c@crane.example"),
    row("D-4", "Delta Glass", "d@delta.example"),
    row("E-5", "Echo Shutters", "e@echo.example"),
    row("N-6", "Nova Hinges", "n@nova.example"),
    row("M-7", "Mesa Frames", "m@mesa.example", phone=""),
    row("I-8", "Idle Industries", "i@idle.example", status="inactive"),
]


async def realistic_window(tenant: Tenant) -> dict[str, Any]:
    """Local customers and two imports that leave every category populated."""
    api = tenant.admin
    ids = {
        key: await local(api, name, email)
        for key, name, email in (
            ("A", "Acme Doors", "a@acme.example"),
            ("B", "Bolt Gates", "b@bolt.example"),
            ("C", "Crane Locks", "c@crane.example"),
            ("D", "Delta Glass", "d@delta.example"),
            ("E", "Echo Shutters", "e@echo.example"),
            ("L", "Lakeside Storage", "l@lakeside.example"),
        )
    }
    source = await create_source(api)
    first = await import_text(api, source, csv_bytes(FIRST))
    assert first["__typename"] == "ImportBatch", first
    assert (first["rows"], first["created"], first["matchedByEmail"]) == (8, 8, 5)
    # Both sides edit Bolt's name; only the external side edits Crane's.
    await api(UPDATE_CUSTOMER, {"id": ids["B"], "input": {"businessName": "Bolt Gates (local)"}})
    second_rows = [r for r in FIRST if r[0] != "D-4"]
    second_rows[1] = row("B-2", "Bolt Gates Inc", "b@bolt.example")
    second_rows[2] = row("C-3", "Crane Locks Ltd", "c@crane.example")
    second = await import_text(api, source, csv_bytes(second_rows))
    assert second["__typename"] == "ImportBatch", second
    assert (second["updated"], second["removed"], second["appliedToLocal"]) == (2, 1, 1)
    echo = (await api(ACTIVE, {"s": source, "ids": ["E-5"], "on": False}))["setExternalSyncActive"]
    assert echo["pairs"][0]["category"] == "DEACTIVATED", echo
    return {"source": source, "ids": ids, "rows": second_rows}


class TestWindow:
    async def test_a_realistic_import_fills_all_seven_categories(self, tenant):
        """Matching by email, a two-sided edit, a one-sided edit, a deletion, a switched-off
        pair, new and inactive records: every category has its pairs."""
        setup = await realistic_window(tenant)
        api, source = tenant.admin, setup["source"]
        assert await counts(api, source) == {
            "CONFLICT": 1,
            "NEW_LOCAL": 1,
            "NEW_EXTERNAL": 2,
            "DELETED": 1,
            "DEACTIVATED": 1,
            "SYNCHRONIZED": 2,
            "INACTIVE": 1,
        }
        bolt = await pair_of(api, source, "CONFLICT", "B-2")
        assert bolt["conflicts"] == [
            {
                "field": "businessName",
                "localValue": "Bolt Gates (local)",
                "externalValue": "Bolt Gates Inc",
            }
        ]
        states = {f["field"]: f["state"] for f in bolt["fields"]}
        assert states == {
            "businessName": "CONFLICT",
            "email": "SAME",
            "phone": "SAME",
        }
        crane = await pair_of(api, source, "SYNCHRONIZED", "C-3")
        assert crane["customer"]["businessName"] == "Crane Locks Ltd"
        assert [a["action"] for a in crane["auditTrail"]] == ["MATCHED_BY_EMAIL", "AUTO_APPLIED"]
        delta = await pair_of(api, source, "DELETED", "D-4")
        assert delta["externalDeleted"] is True
        assert delta["localDeleted"] is False
        lakeside = (await window(api, source, "NEW_LOCAL"))["pairs"]
        assert [p["customer"]["businessName"] for p in lakeside] == ["Lakeside Storage"]
        assert lakeside[0]["externalId"] is None
        idle = await pair_of(api, source, "INACTIVE", "I-8")
        assert idle["externalActive"] is False

    async def test_pages_walk_a_category(self, tenant):
        """A category pages by cursor with its total count."""
        api = tenant.admin
        source = await create_source(api)
        rows = [row(f"X-{i:02d}", f"Company {i}", f"c{i}@x.example") for i in range(7)]
        await import_text(api, source, csv_bytes(rows))
        seen: list[str] = []
        after = None
        while True:
            page = await window(api, source, "NEW_EXTERNAL", first=3, after=after)
            assert page["totalCount"] == 7
            seen += [p["externalId"] for p in page["pairs"]]
            if not page["hasNextPage"]:
                break
            after = page["endCursor"]
        assert seen == [r[0] for r in rows]


class TestActions:
    async def test_every_action_single_and_in_bulk(self, tenant):
        """Pair, create, keep local/external (per field and per record), deactivate,
        reactivate, unlink and remove: each moves its pairs, writes customers through the
        write path and leaves an audit entry with who did it."""
        setup = await realistic_window(tenant)
        api, source, ids = tenant.admin, setup["source"], setup["ids"]
        who = tenant.admin_email

        # Pair N-6 with the local-only customer: values differ, so both are shown.
        # Items the resolvers turn away are reported first, with the action's own refusals.
        turned = (
            await api(
                PAIR,
                {
                    "s": source,
                    "pairs": [
                        {"externalId": "N-6", "customerId": "nope"},
                        {"externalId": "zzz", "customerId": ids["L"]},
                    ],
                },
            )
        )["pairExternalRecords"]
        assert turned["pairs"] == []
        first, second = turned["refused"]
        assert (first["externalId"], first["code"]) == ("N-6", "NOT_FOUND")
        assert "'nope' is not a Customer id" in first["message"]
        assert second["externalId"] == "zzz"
        unknown = (
            await api(
                RESOLVE,
                {"s": source, "r": [{"externalId": "N-6", "keep": "LOCAL", "fields": ["nope"]}]},
            )
        )["resolveExternalConflicts"]
        assert unknown["pairs"] == []
        assert unknown["refused"] == [
            {"externalId": "N-6", "code": "NOT_A_CONFLICT", "message": "not a synced field: nope"}
        ]
        paired = (
            await api(PAIR, {"s": source, "pairs": [{"externalId": "N-6", "customerId": ids["L"]}]})
        )["pairExternalRecords"]
        assert paired["refused"] == []
        [nova] = paired["pairs"]
        assert nova["category"] == "CONFLICT"
        assert {c["field"] for c in nova["conflicts"]} == {"businessName", "email"}
        # Keep local for the whole record: the customer is unchanged, the export carries it.
        kept = (await api(RESOLVE, {"s": source, "r": [{"externalId": "N-6", "keep": "LOCAL"}]}))[
            "resolveExternalConflicts"
        ]
        [nova] = kept["pairs"]
        assert nova["category"] == "SYNCHRONIZED"
        assert sorted(nova["pendingExport"]) == ["businessName", "email"]
        assert nova["customer"]["businessName"] == "Lakeside Storage"

        # Keep external for one field of Bolt: a versioned write of the customer.
        kept = (
            await api(
                RESOLVE,
                {
                    "s": source,
                    "r": [{"externalId": "B-2", "keep": "EXTERNAL", "fields": ["businessName"]}],
                },
            )
        )["resolveExternalConflicts"]
        [bolt] = kept["pairs"]
        assert bolt["category"] == "SYNCHRONIZED"
        assert bolt["customer"]["businessName"] == "Bolt Gates Inc"
        trail = bolt["auditTrail"]
        assert [a["action"] for a in trail] == ["MATCHED_BY_EMAIL", "KEPT_EXTERNAL"]
        assert trail[-1]["actor"] == who
        assert trail[-1]["details"]["fields"]["business_name"] == {
            "local": "Bolt Gates (local)",
            "external": "Bolt Gates Inc",
        }

        # Create customers from two external records in one call (bulk), one refused.
        created = (await api(CREATE, {"s": source, "ids": ["M-7", "I-8", "A-1", "nope"]}))[
            "createCustomersFromExternal"
        ]
        assert sorted(p["externalId"] for p in created["pairs"]) == ["I-8", "M-7"]
        assert {p["category"] for p in created["pairs"]} == {"SYNCHRONIZED"}
        assert {r["externalId"]: r["code"] for r in created["refused"]} == {
            "A-1": "NOT_PAIRABLE",
            "nope": "NOT_FOUND",
        }
        mesa = next(p for p in created["pairs"] if p["externalId"] == "M-7")
        assert mesa["customer"] == {"businessName": "Mesa Frames", "email": "m@mesa.example"}

        # Reactivate Echo, then deactivate two pairs at once.
        back = (await api(ACTIVE, {"s": source, "ids": ["E-5"], "on": True}))[
            "setExternalSyncActive"
        ]
        assert back["pairs"][0]["category"] == "SYNCHRONIZED"
        off = (await api(ACTIVE, {"s": source, "ids": ["E-5", "A-1"], "on": False}))[
            "setExternalSyncActive"
        ]
        assert [p["category"] for p in off["pairs"]] == ["DEACTIVATED", "DEACTIVATED"]

        # Remove the pair deleted externally, archiving its customer (a versioned write).
        removed = (await api(REMOVE, {"s": source, "ids": ["D-4", "C-3"], "archive": True}))[
            "removeDeletedExternalRecords"
        ]
        assert removed["pairs"] == []
        assert removed["newLocalCustomerIds"] == [ids["D"]]
        assert [(r["externalId"], r["code"]) for r in removed["refused"]] == [
            ("C-3", "NOT_DELETED")
        ]
        delta = (await api(CUSTOMER, {"id": ids["D"]}))["customer"]
        assert delta["archived"] is True

        # Unlink two pairs: records become new external, customers new local.
        unlinked = (await api(UNLINK, {"s": source, "ids": ["A-1", "C-3"]}))[
            "unlinkExternalRecords"
        ]
        assert [p["category"] for p in unlinked["pairs"]] == ["NEW_EXTERNAL", "NEW_EXTERNAL"]
        assert sorted(unlinked["newLocalCustomerIds"]) == sorted([ids["A"], ids["C"]])
        assert await counts(api, source) == {
            "CONFLICT": 0,
            "NEW_LOCAL": 2,
            "NEW_EXTERNAL": 2,
            "DELETED": 0,
            "DEACTIVATED": 1,
            "SYNCHRONIZED": 4,
            "INACTIVE": 0,
        }
        # The unlinked customer's audit shows on its NEW_LOCAL line too.
        acme = next(
            p
            for p in (await window(api, source, "NEW_LOCAL"))["pairs"]
            if p["customerId"] == ids["A"]
        )
        assert [a["action"] for a in acme["auditTrail"]] == [
            "MATCHED_BY_EMAIL",
            "DEACTIVATED",
            "UNLINKED",
        ]
        # A later import does not pair the unlinked records again by email.
        again = await import_text(
            api, source, csv_bytes([*setup["rows"], row("Z-9", "Zed", "z@zed.example")])
        )
        assert again["matchedByEmail"] == 0
        # The local-only change of Nova went out with no conflict; Bolt agrees now.
        assert (await counts(api, source))["CONFLICT"] == 0

    async def test_keep_external_for_the_whole_record_and_local_deletion(self, tenant):
        """Keeping external without fields takes every conflicting field; a customer deleted
        locally makes its pair DELETED, and removing it leaves the record unpaired."""
        api = tenant.admin
        customer = await local(api, "Quartz Doors", "q@quartz.example")
        source = await create_source(api)
        await import_text(
            api,
            source,
            csv_bytes([row("Q-1", "Quartz Doors GmbH", "Q@Quartz.example", "+1 555 0199")]),
        )
        quartz = await pair_of(api, source, "CONFLICT", "Q-1")
        # Email compares case-insensitively: only the name and phone differ.
        assert {c["field"] for c in quartz["conflicts"]} == {"businessName", "phone"}
        kept = (
            await api(RESOLVE, {"s": source, "r": [{"externalId": "Q-1", "keep": "EXTERNAL"}]})
        )["resolveExternalConflicts"]
        assert kept["pairs"][0]["category"] == "SYNCHRONIZED"
        stored = (await api(CUSTOMER, {"id": customer}))["customer"]
        assert stored["businessName"] == "Quartz Doors GmbH"
        assert stored["phones"] == [{"number": "+1 555 0199"}]
        deleted = await api(
            """mutation($id: ID!) { deleteCustomer(id: $id) { __typename } }""", {"id": customer}
        )
        assert deleted["deleteCustomer"]["__typename"] == "DeletedRecord"
        refreshed = (await api(REFRESH, {"s": source}))["refreshSyncWindow"]
        assert {c["category"]: c["count"] for c in refreshed["counts"]}["DELETED"] == 1
        removed = (await api(REMOVE, {"s": source, "ids": ["Q-1"], "archive": False}))[
            "removeDeletedExternalRecords"
        ]
        assert removed["pairs"][0]["category"] == "NEW_EXTERNAL"

    async def test_direction_external_to_local_sets_local_edits_back(self, tenant):
        """With the external system as master, a field changed only here is set back."""
        api = tenant.admin
        customer = await local(api, "Rivet Works", "r@rivet.example")
        source = await create_source(api, direction="EXTERNAL_TO_LOCAL")
        file = csv_bytes([row("R-1", "Rivet Works", "r@rivet.example")])
        await import_text(api, source, file)
        await api(UPDATE_CUSTOMER, {"id": customer, "input": {"businessName": "Rivet (edited)"}})
        refreshed = (await api(REFRESH, {"s": source}))["refreshSyncWindow"]
        assert refreshed["appliedToLocal"] == 1
        assert (await api(CUSTOMER, {"id": customer}))["customer"]["businessName"] == "Rivet Works"

    async def test_direction_local_to_external_never_writes_customers(self, tenant):
        """With fieldsync as master, an external-only change waits for the export."""
        api = tenant.admin
        customer = await local(api, "Sable Doors", "s@sable.example")
        source = await create_source(api, direction="LOCAL_TO_EXTERNAL")
        await import_text(api, source, csv_bytes([row("S-1", "Sable Doors", "s@sable.example")]))
        batch = await import_text(
            api, source, csv_bytes([row("S-1", "Sable Inc", "s@sable.example")])
        )
        assert batch["appliedToLocal"] == 0
        sable = await pair_of(api, source, "SYNCHRONIZED", "S-1")
        assert sable["pendingExport"] == ["businessName"]
        assert (await api(CUSTOMER, {"id": customer}))["customer"]["businessName"] == "Sable Doors"


class TestExport:
    async def test_export_holds_the_local_side_of_linked_and_new_local(self, tenant):
        """The export has the source's columns, paired records with their external ids and
        local values, and new local customers with an empty id; switched-off, deleted and
        unpaired external records are left out."""
        setup = await realistic_window(tenant)
        text = (await tenant.admin(EXPORT, {"s": setup["source"]}))["exportLocal"]
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == HEADER
        assert rows[1:] == [
            ["A-1", "Acme Doors", "a@acme.example", "+1 555 0100", "active"],
            ["B-2", "Bolt Gates (local)", "b@bolt.example", "+1 555 0100", "active"],
            ["C-3", "Crane Locks Ltd", "c@crane.example", "+1 555 0100", "active"],
            ["", "Lakeside Storage", "l@lakeside.example", "+1 555 0100", "active"],
        ]

    async def test_export_neutralises_spreadsheet_formulas(self, tenant):
        """A name starting with = is exported with a leading quote (no CSV injection)."""
        api = tenant.admin
        await local(api, "=HYPERLINK(1)", "f@formula.example")
        source = await create_source(api)
        text = (await api(EXPORT, {"s": source}))["exportLocal"]
        assert "'=HYPERLINK(1)" in text


class TestImports:
    async def test_the_same_file_again_changes_nothing(self, tenant):
        """Re-running an import returns the earlier batch and changes no pair."""
        api = tenant.admin
        await local(api, "Acme Doors", "a@acme.example")
        source = await create_source(api)
        file = csv_bytes(FIRST)
        first = await import_text(api, source, file)
        before = await counts(api, source)
        again = await import_text(api, source, file)
        assert again["alreadyImported"] is True
        assert again["id"] == first["id"]
        assert await counts(api, source) == before
        batches = (await api(BATCHES, {"s": source}))["importBatches"]
        assert [b["status"] for b in batches] == ["APPLIED"]

    async def test_json_imports_like_csv(self, tenant):
        """A JSON array of objects with the same columns imports the same way."""
        api = tenant.admin
        source = await create_source(api)
        records = [dict(zip(HEADER, r, strict=True)) for r in FIRST]
        batch = await import_text(api, source, orjson.dumps(records), name="customers.json")
        assert batch["__typename"] == "ImportBatch", batch
        assert batch["rows"] == 8
        assert {c["category"]: c["count"] for c in batch["counts"]}["NEW_EXTERNAL"] == 7

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (
                csv_bytes([row("A-1", "Acme", "a@acme.example")], header=["No", "Company", "Mail"]),
                [(1, "lacks the mapped column(s) 'Customer No', 'E-mail', 'Phone', 'Status'")],
            ),
            (
                "Customer No,Company,E-mail,Phone,Status\r\nA-1,Caf\xe9,a@acme.example,,\r\n".encode(
                    "latin-1"
                ),
                [(2, "not UTF-8")],
            ),
            (
                csv_bytes(
                    [
                        row("A-1", "Acme", "a@acme.example"),
                        row("B-2", "Bolt", "b@bolt.example"),
                        row("A-1", "Acme again", "a2@acme.example"),
                    ]
                ),
                [(4, "duplicate external id 'A-1' (also on line 2)")],
            ),
            (
                csv_bytes(
                    [row("A-1", "Acme", "not-an-email"), row("B-2", "Bolt", "b@@bolt.example")]
                ),
                [
                    (2, "email is not a valid email address"),
                    (3, "email is not a valid email address"),
                ],
            ),
            (
                csv_bytes([row("A-1", "Acme", "a@acme.example", phone="call me")]),
                [(2, "phone must be 3-40 digits")],
            ),
        ],
        ids=["wrong-header", "bad-encoding", "duplicate-ids", "malformed-emails", "bad-phone"],
    )
    async def test_bad_files_are_refused_whole_with_line_numbers(self, tenant, data, expected):
        """Every problem is listed with its line; nothing is imported; fixed, it imports."""
        api = tenant.admin
        source = await create_source(api)
        refused = (
            await import_text(api, source, data)
            if _utf8(data)
            else await _upload(tenant, source, data)
        )
        assert refused["__typename"] == "ImportRefused", refused
        got = [(e["line"], e["reason"]) for e in refused["errors"]]
        assert len(got) == len(expected), got
        for (line, reason), (want_line, want) in zip(got, expected, strict=True):
            assert line == want_line, got
            assert want in reason, got
        assert await counts(api, source) == dict.fromkeys(await counts(api, source), 0)
        fixed = await import_text(api, source, csv_bytes([row("A-1", "Acme", "a@acme.example")]))
        assert fixed["__typename"] == "ImportBatch"
        statuses = [b["status"] for b in (await api(BATCHES, {"s": source}))["importBatches"]]
        assert statuses == ["APPLIED", "REFUSED"]

    async def test_a_change_that_would_take_another_customers_email_is_refused(self, tenant):
        """An external email change onto another customer's email refuses the import."""
        api = tenant.admin
        await local(api, "Acme Doors", "a@acme.example")
        await local(api, "Bolt Gates", "b@bolt.example")
        source = await create_source(api)
        await import_text(api, source, csv_bytes([row("A-1", "Acme Doors", "a@acme.example")]))
        refused = await import_text(
            api, source, csv_bytes([row("A-1", "Acme Doors", "b@bolt.example")])
        )
        assert refused["__typename"] == "ImportRefused", refused
        assert refused["errors"][0]["line"] == 2
        assert "belongs to another customer" in refused["errors"][0]["reason"]
        assert (await pair_of(api, source, "SYNCHRONIZED", "A-1"))["customer"][
            "email"
        ] == "a@acme.example"

    async def test_an_oversized_file_is_refused_before_parsing(self, settings, db, tenant):
        """Past FIELDSYNC_MAX_IMPORT_BYTES an import is refused with the sizes; nothing stored."""
        api = tenant.admin
        source = await create_source(api)
        async with app_with(settings, db, max_import_bytes=4096) as small:
            admin = Api(small.client, api.token)
            refused = await import_text(admin, source, csv_bytes(FIRST * 40))
        assert refused["__typename"] == "ImportRefused"
        assert "at most 4096" in refused["errors"][0]["reason"]
        assert sum((await counts(api, source)).values()) == 0

    async def test_a_50_mb_upload_is_refused_unread(self, tenant):
        """A 50 MB multipart upload is refused (413) from its declared size."""
        source = await create_source(tenant.admin)
        body = b"x" * (50 * 1024 * 1024)
        response = await _post_upload(tenant, source, body)
        assert response.status_code == 413, response.text

    async def test_a_mapping_to_a_missing_field_is_refused_at_registration(self, tenant):
        """A source whose mapping names a field customers do not have is not created."""
        data = await tenant.admin(
            CREATE_SOURCE,
            {
                "input": {
                    "name": "ERP",
                    "mapping": [
                        {"column": "Id", "field": "externalId"},
                        {"column": "Fax", "field": "faxNumber"},
                    ],
                }
            },
        )
        result = data["createExternalSource"]
        assert result["__typename"] == "ValidationError"
        assert "'faxNumber' is not a customer field" in result["fieldErrors"][0]["message"]

    async def test_a_source_can_change_direction_and_mapping(self, tenant):
        """updateExternalSource changes the direction and the mapping, refusing bad fields."""
        source = await create_source(tenant.admin)
        update = """mutation($id: ID!, $input: UpdateExternalSourceInput!) {
          updateExternalSource(id: $id, input: $input) { __typename
            ... on ExternalSource { direction mapping { column field } }
            ... on ValidationError { fieldErrors { field message } } } }"""
        changed = (
            await tenant.admin(
                update,
                {"id": source, "input": {"direction": "LOCAL_TO_EXTERNAL", "mapping": MAPPING[:3]}},
            )
        )["updateExternalSource"]
        assert changed["direction"] == "LOCAL_TO_EXTERNAL"
        assert [m["column"] for m in changed["mapping"]] == HEADER[:3]
        refused = (
            await tenant.admin(
                update,
                {"id": source, "input": {"mapping": [{"column": "X", "field": "vatNumber"}]}},
            )
        )["updateExternalSource"]
        assert refused["__typename"] == "ValidationError"
        assert {e["field"] for e in refused["fieldErrors"]} == {"mapping[0].field", "mapping"}

    async def test_source_names_are_unique(self, tenant):
        """A second source with the same name (any case) is a Duplicate."""
        await create_source(tenant.admin)
        data = await tenant.admin(
            CREATE_SOURCE, {"input": {"name": "ACCOUNTING", "mapping": MAPPING}}
        )
        assert data["createExternalSource"]["__typename"] == "Duplicate"

    async def test_multipart_upload_imports_a_file(self, tenant):
        """The GraphQL multipart request spec: the file arrives as an Upload."""
        api = tenant.admin
        await local(api, "Acme Doors", "a@acme.example")
        source = await create_source(api)
        result = await _upload(tenant, source, csv_bytes(FIRST))
        assert result["__typename"] == "ImportBatch", result
        assert (result["rows"], result["matchedByEmail"]) == (8, 1)


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


async def _post_upload(
    tenant: Tenant, source: str, data: bytes, *, csrf: bool = True, query: str = UPLOAD
) -> httpx.Response:
    operations = orjson.dumps({"query": query, "variables": {"s": source, "file": None}})
    headers = {"Authorization": f"Bearer {tenant.admin.token}"}
    if csrf:
        headers["X-Fieldsync-CSRF"] = "1"
    return await tenant.admin.client.post(
        "/graphql",
        data={"operations": operations.decode(), "map": '{"0": ["variables.file"]}'},
        files={"0": ("customers.csv", data, "text/csv")},
        headers=headers,
    )


async def _upload(tenant: Tenant, source: str, data: bytes) -> dict:
    response = await _post_upload(tenant, source, data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["importExternalRecords"]  # type: ignore[no-any-return]


class TestAccess:
    async def test_a_technician_is_refused(self, tenant):
        """Technicians get FORBIDDEN from the window's queries and a Forbidden member from
        its mutations."""
        source = await create_source(tenant.admin)
        tech = await tenant.add_user("TECHNICIAN")
        errors = await tech.errors(WINDOW, {"s": source, "c": "CONFLICT"})
        assert errors[0]["extensions"]["code"] == "FORBIDDEN"
        result = (await tech(IMPORT, {"s": source, "content": "x", "name": "x.csv"}))[
            "importExternalRecords"
        ]
        assert result["__typename"] == "Forbidden"
        result = (await tech(UNLINK, {"s": source, "ids": ["A-1"]}))["unlinkExternalRecords"]
        assert result["__typename"] == "Forbidden"
        data = await tech(CREATE_SOURCE, {"input": {"name": "Mine", "mapping": MAPPING}})
        assert data["createExternalSource"]["__typename"] == "Forbidden"

    async def test_another_tenant_sees_nothing(self, tenant, other_tenant):
        """Another tenant's admin cannot read, import into or act on this tenant's source."""
        await local(tenant.admin, "Acme Doors", "a@acme.example")
        source = await create_source(tenant.admin)
        await import_text(tenant.admin, source, csv_bytes(FIRST))
        other = other_tenant.admin
        assert (await other(WINDOW, {"s": source, "c": "SYNCHRONIZED"}))["syncWindow"] is None
        assert (await other("{ externalSources { id } }"))["externalSources"] == []
        result = (await other(IMPORT, {"s": source, "content": "x", "name": "x.csv"}))[
            "importExternalRecords"
        ]
        assert result["__typename"] == "NotFound"
        result = (await other(UNLINK, {"s": source, "ids": ["A-1"]}))["unlinkExternalRecords"]
        assert result["__typename"] == "NotFound"
        assert (await other(BATCHES, {"s": source}))["importBatches"] == []
        own = await create_source(other, "Accounting")
        assert await counts(other, own) == dict.fromkeys(await counts(other, own), 0)


class TestDevices:
    async def test_a_subscribed_device_receives_the_accepted_external_change(self, db, live_server):
        """An external change applied by an import, uploaded as multipart over real HTTP,
        reaches a technician's phone over its `changes` subscription."""
        async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
            live = await new_tenant(db, http)
            customer = await local(live.admin, "Crane Locks", "c@crane.example")
            source = await create_source(live.admin)
            await import_text(
                live.admin, source, csv_bytes([row("C-3", "Crane Locks", "c@crane.example")])
            )
            device = await Device(await live.add_user("TECHNICIAN")).register()
            ws_url = live_server.url.replace("http://", "ws://", 1) + "/graphql"
            socket = await Socket.open(ws_url, device.api.token)
            try:
                await socket.subscribe("1", device.id)
                first = await socket.collect("1", bool)
                customer_uuid = str(uuid.UUID(_uuid_of(customer)))
                assert customer_uuid in [c["recordId"] for c in first[0]["changes"]]
                result = await _upload(
                    live, source, csv_bytes([row("C-3", "Crane Locks Ltd", "c@crane.example")])
                )
                assert result["appliedToLocal"] == 1, result
                batches = await socket.collect(
                    "1",
                    lambda b: any(
                        c["recordId"] == customer_uuid
                        and c["data"]["businessName"] == "Crane Locks Ltd"
                        for batch in b
                        for c in batch["changes"]
                    ),
                )
                change = next(
                    c for b in batches for c in b["changes"] if c["recordId"] == customer_uuid
                )
                assert change["op"] == "UPSERT"
                assert change["version"]["server"] >= 2
            finally:
                await socket.close()


def _uuid_of(global_id: str) -> str:
    from schema.node import from_global_id

    return str(from_global_id(global_id)[1])
