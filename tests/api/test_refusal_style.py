"""One refusal style (issue #20, point 4): how the API turns away a caller who may not do
something, checked for every admin-only field of the schema.

The rule: an admin-only query refuses a non-admin with a top-level GraphQL error whose
``extensions.code`` is ``FORBIDDEN`` and whose message says why, and answers no data for
that field (the field is null, or ``data`` is null when the field is non-null); an
admin-only mutation refuses with the ``Forbidden`` member of its result union
(``code: FORBIDDEN`` and a message), with no top-level error and nothing changed.

``QUERIES`` and ``MUTATIONS`` list every admin-only field with minimal valid arguments
(real ids, created by the tenant's admin); each is tried as a technician and as a portal
user, and an admin re-reads the tenant around every refused mutation to see that nothing
changed. The completeness tests keep the tables whole: every field whose description says
"admins only", and every field whose resolver refuses non-admins (found by reading
``resolvers/``), must be in a table.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.api.queries import make_customer
from tests.conftest import Api, Tenant, new_tenant

RESOLVERS = Path(__file__).resolve().parents[2] / "resolvers"
ROLES = ("TECHNICIAN", "PORTAL")

MAPPING = [
    {"column": "Customer No", "field": "externalId"},
    {"column": "Company", "field": "businessName"},
    {"column": "E-mail", "field": "email"},
]
# A-1 pairs with the local Acme Doors by email; N-6 is new in the external system.
IMPORT_CSV = "Customer No,Company,E-mail\r\nA-1,Acme Doors,a@acme.example\r\nN-6,Nova Hinges,n@nova.example\r\n"

CAPABILITIES = "capabilities { syncByCustomer viewCredentials createCredentials editCredentials deleteCredentials }"
SNAPSHOT = f"""query($s: ID!) {{
  users {{ id email name role active {CAPABILITIES} }}
  conflictPolicies {{ customer contact facility asset credential }}
  customFieldDefinitions(entityType: CUSTOMER) {{
    id key label fieldType required position options {{ value label badgeIcon }} }}
  externalSources {{ id name kind direction mapping {{ column field }} updatedAt }}
  importBatches(sourceId: $s) {{ id status rows }}
  sync: syncWindow(sourceId: $s, category: SYNCHRONIZED, first: 50) {{
    counts {{ category count }}
    pairs {{ category externalId customerId syncActive externalDeleted localDeleted }} }}
  newExternal: syncWindow(sourceId: $s, category: NEW_EXTERNAL, first: 50) {{
    pairs {{ category externalId customerId syncActive }} }}
  customers(first: 50) {{ totalCount edges {{ node {{ id businessName archived }} }} }}
}}"""

USER_RESULT = "__typename ... on UserError { code message }"
INTROSPECTION = """{ __schema {
  queryType { fields { name description } }
  mutationType { fields { name description } } } }"""


@dataclass
class World:
    """A tenant whose admin made one of everything an admin-only field needs."""

    tenant: Tenant
    source_id: str
    field_id: str
    customer_id: str
    other_customer_id: str
    target_user_id: str
    callers: dict[str, Api] = field(default_factory=dict)

    @property
    def admin(self) -> Api:
        return self.tenant.admin

    async def snapshot(self) -> dict[str, Any]:
        """Everything an admin-only mutation could change, read by the admin."""
        return await self.admin(SNAPSHOT, {"s": self.source_id})


@pytest.fixture(scope="module")
async def world(db, client) -> World:
    """One tenant for the module: refusals change nothing (each test checks that)."""
    tenant = await new_tenant(db, client)
    admin = tenant.admin
    customer = await make_customer(admin, businessName="Acme Doors", email="a@acme.example")
    other = await make_customer(admin, businessName="Solo Locks", email="s@solo.example")
    source = (
        await admin(
            """mutation($input: CreateExternalSourceInput!) {
              createExternalSource(input: $input) { __typename ... on ExternalSource { id } } }""",
            {"input": {"name": "Accounting", "kind": "accounting", "mapping": MAPPING}},
        )
    )["createExternalSource"]
    assert source["__typename"] == "ExternalSource", source
    batch = (
        await admin(
            """mutation($s: ID!, $content: String) {
              importExternalRecords(sourceId: $s, content: $content, fileName: "c.csv") {
                __typename ... on UserError { message } } }""",
            {"s": source["id"], "content": IMPORT_CSV},
        )
    )["importExternalRecords"]
    assert batch["__typename"] == "ImportBatch", batch
    definition = (
        await admin(
            """mutation($input: CreateCustomFieldInput!) { createCustomField(input: $input) {
              __typename ... on CustomFieldDefinition { id } } }""",
            {
                "input": {
                    "entityType": "CUSTOMER",
                    "key": "tier",
                    "label": "Tier",
                    "fieldType": "TEXT",
                }
            },
        )
    )["createCustomField"]
    assert definition["__typename"] == "CustomFieldDefinition", definition
    target = (
        await admin(
            """mutation($input: CreateUserInput!) { createUser(input: $input) {
              __typename ... on User { id } } }""",
            {
                "input": {
                    "email": "target@example.com",
                    "name": "Target",
                    "password": "correct-horse-battery",
                    "role": "TECHNICIAN",
                }
            },
        )
    )["createUser"]
    assert target["__typename"] == "User", target
    w = World(
        tenant=tenant,
        source_id=source["id"],
        field_id=definition["id"],
        customer_id=customer["id"],
        other_customer_id=other["id"],
        target_user_id=target["id"],
    )
    w.callers["TECHNICIAN"] = await tenant.add_user("TECHNICIAN")
    portal = (
        await admin(
            """mutation($input: CreateUserInput!) { createUser(input: $input) {
              __typename ... on User { email } } }""",
            {
                "input": {
                    "email": "portal@example.com",
                    "name": "Portal",
                    "password": "correct-horse-battery",
                    "role": "PORTAL",
                    "customerId": customer["id"],
                }
            },
        )
    )["createUser"]
    assert portal["__typename"] == "User", portal
    w.callers["PORTAL"] = await tenant.login(portal["email"])
    # The window has what the actions act on.
    snap = await w.snapshot()
    assert [p["externalId"] for p in snap["sync"]["pairs"]] == ["A-1"], snap
    assert [p["externalId"] for p in snap["newExternal"]["pairs"]] == ["N-6"], snap
    return w


Variables = Callable[[World], dict[str, Any]]


@dataclass(frozen=True)
class Case:
    """One admin-only field: its document and minimal valid variables."""

    name: str
    document: str
    variables: Variables = lambda w: {}
    # Why this field breaks the rule (a strict xfail), or None.
    known_gap: str | None = None

    def param(self, role: str) -> Any:
        marks = [pytest.mark.xfail(strict=True, reason=self.known_gap)] if self.known_gap else []
        return pytest.param(self, role, id=f"{self.name}-{role.lower()}", marks=marks)


QUERIES = [
    Case(
        "credentialAccessReport",
        "{ credentialAccessReport { totalCount edges { node { id } } } }",
    ),
    Case("externalSources", "{ externalSources { id name } }"),
    Case(
        "syncWindow",
        """query($s: ID!) { syncWindow(sourceId: $s, category: SYNCHRONIZED) {
          totalCount pairs { externalId } } }""",
        lambda w: {"s": w.source_id},
    ),
    Case(
        "importBatches",
        "query($s: ID!) { importBatches(sourceId: $s) { id status } }",
        lambda w: {"s": w.source_id},
    ),
    Case(
        "exportLocal", "query($s: ID!) { exportLocal(sourceId: $s) }", lambda w: {"s": w.source_id}
    ),
    Case("users", "{ users { id email } }"),
]


def _mutation(name: str, signature: str, arguments: str) -> str:
    return f"mutation{signature} {{ {name}({arguments}) {{ {USER_RESULT} }} }}"


ACTION_ARGS = "($s: ID!, $ids: [String!]!)"
MUTATIONS = [
    Case(
        "createUser",
        _mutation("createUser", "($input: CreateUserInput!)", "input: $input"),
        lambda w: {
            "input": {
                "email": "intruder@example.com",
                "name": "Intruder",
                "password": "correct-horse-battery",
                "role": "ADMIN",
            }
        },
    ),
    Case(
        "setUserPermissions",
        _mutation(
            "setUserPermissions",
            "($u: ID!, $caps: CapabilitiesInput!)",
            "userId: $u, capabilities: $caps",
        ),
        lambda w: {
            "u": w.target_user_id,
            "caps": {"viewCredentials": True, "syncByCustomer": True},
        },
    ),
    Case(
        "setUserActive",
        _mutation("setUserActive", "($u: ID!)", "userId: $u, active: false"),
        lambda w: {"u": w.target_user_id},
    ),
    Case(
        "setConflictPolicy",
        _mutation("setConflictPolicy", "", "entity: CUSTOMER, policy: SERVER_WINS"),
    ),
    Case(
        "createCustomField",
        _mutation("createCustomField", "($input: CreateCustomFieldInput!)", "input: $input"),
        lambda w: {
            "input": {"entityType": "CUSTOMER", "key": "vip", "label": "VIP", "fieldType": "TEXT"}
        },
    ),
    Case(
        "updateCustomField",
        _mutation(
            "updateCustomField",
            "($id: ID!, $input: UpdateCustomFieldInput!)",
            "id: $id, input: $input",
        ),
        lambda w: {"id": w.field_id, "input": {"label": "Renamed", "required": True}},
    ),
    Case(
        "deleteCustomField",
        _mutation("deleteCustomField", "($id: ID!)", "id: $id"),
        lambda w: {"id": w.field_id},
    ),
    Case(
        "createExternalSource",
        _mutation("createExternalSource", "($input: CreateExternalSourceInput!)", "input: $input"),
        lambda w: {"input": {"name": "Shadow", "kind": "accounting", "mapping": MAPPING}},
    ),
    Case(
        "updateExternalSource",
        _mutation(
            "updateExternalSource",
            "($id: ID!, $input: UpdateExternalSourceInput!)",
            "id: $id, input: $input",
        ),
        lambda w: {"id": w.source_id, "input": {"mapping": MAPPING[:2]}},
    ),
    Case(
        "importExternalRecords",
        _mutation(
            "importExternalRecords",
            "($s: ID!, $content: String)",
            'sourceId: $s, content: $content, fileName: "again.csv"',
        ),
        lambda w: {"s": w.source_id, "content": IMPORT_CSV.replace("Nova Hinges", "Nova Ltd")},
    ),
    Case(
        "refreshSyncWindow",
        _mutation("refreshSyncWindow", "($s: ID!)", "sourceId: $s"),
        lambda w: {"s": w.source_id},
    ),
    Case(
        "pairExternalRecords",
        _mutation(
            "pairExternalRecords", "($s: ID!, $pairs: [PairInput!]!)", "sourceId: $s, pairs: $pairs"
        ),
        lambda w: {
            "s": w.source_id,
            "pairs": [{"externalId": "N-6", "customerId": w.other_customer_id}],
        },
    ),
    Case(
        "createCustomersFromExternal",
        _mutation("createCustomersFromExternal", ACTION_ARGS, "sourceId: $s, externalIds: $ids"),
        lambda w: {"s": w.source_id, "ids": ["N-6"]},
    ),
    Case(
        "resolveExternalConflicts",
        _mutation(
            "resolveExternalConflicts",
            "($s: ID!, $r: [ConflictResolutionInput!]!)",
            "sourceId: $s, resolutions: $r",
        ),
        lambda w: {"s": w.source_id, "r": [{"externalId": "A-1", "keep": "EXTERNAL"}]},
    ),
    Case(
        "setExternalSyncActive",
        _mutation(
            "setExternalSyncActive", ACTION_ARGS, "sourceId: $s, externalIds: $ids, active: false"
        ),
        lambda w: {"s": w.source_id, "ids": ["A-1"]},
    ),
    Case(
        "unlinkExternalRecords",
        _mutation("unlinkExternalRecords", ACTION_ARGS, "sourceId: $s, externalIds: $ids"),
        lambda w: {"s": w.source_id, "ids": ["A-1"]},
    ),
    Case(
        "removeDeletedExternalRecords",
        _mutation(
            "removeDeletedExternalRecords",
            ACTION_ARGS,
            "sourceId: $s, externalIds: $ids, archiveLocal: true",
        ),
        lambda w: {"s": w.source_id, "ids": ["A-1"]},
    ),
]


class TestQueries:
    @pytest.mark.parametrize(("case", "role"), [c.param(r) for c in QUERIES for r in ROLES])
    async def test_a_non_admin_gets_a_forbidden_error_and_no_data(self, world, case, role):
        """Top-level FORBIDDEN error at the field's path, a message, and no data for it."""
        response = await world.callers[role].post(case.document, case.variables(world))
        assert response.status_code == 200, response.text
        body = response.json()
        errors = body.get("errors")
        assert errors, f"{case.name} answered a {role} without an error: {body}"
        assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"], errors
        assert errors[0]["path"] == [case.name], errors
        assert "admin" in errors[0]["message"].lower(), errors
        data = body.get("data")
        assert data is None or data.get(case.name) is None, body

    @pytest.mark.parametrize("case", QUERIES, ids=lambda c: c.name)
    async def test_an_admin_gets_data(self, world, case):
        """The same document is valid: an admin gets an answer (so the refusal is the role)."""
        data = await world.admin(case.document, case.variables(world))
        assert data[case.name] is not None


class TestMutations:
    @pytest.mark.parametrize(("case", "role"), [c.param(r) for c in MUTATIONS for r in ROLES])
    async def test_a_non_admin_gets_the_forbidden_member_and_nothing_changes(
        self, world, case, role
    ):
        """The typed Forbidden member, no top-level error, and the tenant as it was."""
        before = await world.snapshot()
        response = await world.callers[role].post(case.document, case.variables(world))
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        result = body["data"][case.name]
        assert result["__typename"] == "Forbidden", result
        assert result["code"] == "FORBIDDEN", result
        assert "admin" in result["message"].lower(), result  # says who may
        assert await world.snapshot() == before


REGISTER = """mutation { registerDevice(input: {name: "phone", platform: "test"}) {
  __typename ... on Device { id } ... on UserError { code message } } }"""
DEVICES = "{ devices { id userEmail } }"


class TestScopedReads:
    """Reads open to every signed-in user that scope what a non-admin sees: not refusals,
    and so not in the tables above."""

    async def test_devices_and_sync_state_show_a_technician_only_their_own(self, world):
        """`devices` lists your own devices; `syncState` of another's is NOT_FOUND."""
        tech = world.callers["TECHNICIAN"]
        theirs = (await world.admin(REGISTER))["registerDevice"]
        mine = (await tech(REGISTER))["registerDevice"]
        assert theirs["__typename"] == mine["__typename"] == "Device", (theirs, mine)
        assert [d["id"] for d in (await tech(DEVICES))["devices"]] == [mine["id"]]
        assert {theirs["id"], mine["id"]} <= {
            d["id"] for d in (await world.admin(DEVICES))["devices"]
        }
        state = "query($d: ID!) { syncState(deviceId: $d) { status } }"
        errors = await tech.errors(state, {"d": theirs["id"]})
        assert [e["extensions"]["code"] for e in errors] == ["NOT_FOUND"], errors
        assert (await tech(state, {"d": mine["id"]}))["syncState"]["status"]

    @pytest.mark.parametrize("role", ROLES)
    async def test_conflicts_and_policies_answer_without_refusing(self, world, role):
        """`conflicts` answers your own; `conflictPolicies` is the tenant's, for everyone."""
        caller = world.callers[role]
        assert (await caller("{ conflicts(openOnly: false) { id } }"))["conflicts"] == []
        policies = "{ conflictPolicies { customer contact facility asset credential } }"
        assert await caller(policies) == await world.admin(policies)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _refuses_non_admins(module: ast.Module) -> dict[str, str]:
    """GraphQL fields of a resolver module whose resolver refuses non-admins: name -> kind
    (``query`` or ``mutation``).

    A function refuses when it tests ``not <x>.is_admin``, passes ``allowed=`` a predicate
    on ``is_admin`` (a lambda or a function of the module), or calls a function that refuses.
    """
    functions: dict[str, ast.AST] = {}
    resolvers: dict[str, tuple[str, ast.AST]] = {}
    for node in ast.walk(module):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        kinds = [
            d.func.attr
            for d in node.decorator_list
            if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
        ] + [d.attr for d in node.decorator_list if isinstance(d, ast.Attribute)]
        if "mutation" in kinds:
            resolvers[_camel(node.name)] = ("mutation", node)
        elif "field" in kinds:
            resolvers[_camel(node.name)] = ("query", node)
        else:
            functions[node.name] = node

    def mentions_admin(node: ast.AST) -> bool:
        return "is_admin" in ast.unparse(node)

    predicates = {name for name, fn in functions.items() if mentions_admin(fn)}

    def refuses_directly(node: ast.AST) -> bool:
        for n in ast.walk(node):
            if (
                isinstance(n, ast.UnaryOp)
                and isinstance(n.op, ast.Not)
                and isinstance(n.operand, ast.Attribute)
                and n.operand.attr == "is_admin"
            ):
                return True
            if isinstance(n, ast.keyword) and n.arg == "allowed":
                if isinstance(n.value, ast.Lambda) and mentions_admin(n.value):
                    return True
                if isinstance(n.value, ast.Name) and n.value.id in predicates:
                    return True
        return False

    def calls(node: ast.AST) -> set[str]:
        return {
            n.func.id
            for n in ast.walk(node)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }

    refusing = {name for name, fn in functions.items() if refuses_directly(fn)}
    changed = True
    while changed:
        changed = False
        for name, fn in functions.items():
            if name not in refusing and calls(fn) & refusing:
                refusing.add(name)
                changed = True
    return {
        name: kind
        for name, (kind, fn) in resolvers.items()
        if refuses_directly(fn) or calls(fn) & refusing
    }


def refusing_fields() -> dict[str, str]:
    """Every field whose resolver refuses non-admins, from reading ``resolvers/``."""
    found: dict[str, str] = {}
    for path in sorted(RESOLVERS.glob("*.py")):
        found.update(_refuses_non_admins(ast.parse(path.read_text(), str(path))))
    return found


async def schema_fields(api: Api) -> dict[str, dict[str, str]]:
    """Query and Mutation fields of the served schema: kind -> name -> description."""
    data = await api(INTROSPECTION)
    return {
        kind: {f["name"]: f["description"] or "" for f in data["__schema"][f"{kind}Type"]["fields"]}
        for kind in ("query", "mutation")
    }


ADMINS_ONLY = re.compile(r"admins only", re.IGNORECASE)
TABLE = {"query": {c.name for c in QUERIES}, "mutation": {c.name for c in MUTATIONS}}


class TestCompleteness:
    async def test_every_field_described_admins_only_is_in_the_table(self, world):
        """A field whose description says "admins only" is tested here."""
        fields = await schema_fields(world.admin)
        for kind, described in fields.items():
            said = {name for name, text in described.items() if ADMINS_ONLY.search(text)}
            assert said <= TABLE[kind], (
                f"{kind} fields missing from the table: {said - TABLE[kind]}"
            )

    async def test_every_field_whose_resolver_refuses_non_admins_is_in_the_table(self, world):
        """Read from the resolvers: a field that checks `is_admin` to refuse is tested here,
        and every table entry is such a field."""
        found = refusing_fields()
        fields = await schema_fields(world.admin)
        for name, kind in found.items():
            assert name in fields[kind], f"the scan found {name!r}, not a {kind} field"
        scanned = {kind: {n for n, k in found.items() if k == kind} for kind in TABLE}
        assert scanned == TABLE

    @pytest.mark.parametrize("case", QUERIES + MUTATIONS, ids=lambda c: c.name)
    async def test_the_description_says_admins_only(self, world, case):
        """Callers can tell from the schema which fields are admin-only."""
        fields = await schema_fields(world.admin)
        description = fields["query"].get(case.name) or fields["mutation"][case.name]
        assert ADMINS_ONLY.search(description), description
