"""pushChanges' `changes` variable over the API: coerced by a plan (schema/input_plans.py),
with graphql-core's own answers for everything the plan leaves to it.

Every bad value gets the errors it got before the plan, word for word; values graphql-core
coerces specially (a list given as one item, an Int written 1.0, an ID as a number) are
still taken as it takes them; inline literals and variables answer alike.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from tests.api.sync_client import PUSH, Device

RESULTS = """mutation($d: ID!, $changes: [ChangeInput!]!) {
  first: pushChanges(deviceId: $d, changes: $changes) { ...outcomes }
  again: pushChanges(deviceId: $d, changes: $changes) { ...outcomes } }
fragment outcomes on PushChangesResult {
  __typename
  ... on PushResult { results { outcome replayed fieldErrors { field message }
      record { data } } }
  ... on UserError { code message } }"""


def good(**fields: Any) -> dict[str, Any]:
    """A valid change creating a customer, with ``fields`` replaced."""
    change: dict[str, Any] = {
        "clientMutationId": uuid.uuid4().hex,
        "recordId": str(uuid.uuid4()),
        "op": "UPSERT",
        "baseVersion": None,
        "counter": 1,
        "patch": {
            "customer": {
                "businessName": "X",
                "phones": [{"type": "MOBILE", "number": "+1 555 0100"}],
            }
        },
    }
    change.update(fields)
    return change


def patched(**fields: Any) -> dict[str, Any]:
    """A valid change whose customer patch also holds ``fields``."""
    return good(patch={"customer": {"businessName": "X", **fields}})


def without(name: str) -> dict[str, Any]:
    change = good()
    del change[name]
    return change


FOUND = (
    "{'clientMutationId': '%s', 'recordId': '%s', 'op': 'UPSERT', 'baseVersion': None,%s"
    " 'patch': {'customer': {...}}%s}"
)
AT = "Variable '$changes' has invalid value at "
# Bad values and the first error graphql-core (or strawberry's one-of check) answers.
BAD: dict[str, tuple[Any, str]] = {
    "a counter as text": (
        [good(counter="7")],
        AT + "[0].counter: Int cannot represent non-integer value: '7'",
    ),
    "a counter past Int": (
        [good(counter=2**31)],
        AT + "[0].counter: Int cannot represent non 32-bit signed integer value: 2147483648",
    ),
    "a boolean counter": (
        [good(counter=True)],
        AT + "[0].counter: Int cannot represent non-integer value: True",
    ),
    "a null id": (
        [good(clientMutationId=None)],
        AT + "[0].clientMutationId: Expected value of non-null type 'String!' not to be None.",
    ),
    "a numeric id": (
        [good(clientMutationId=5)],
        AT + "[0].clientMutationId: String cannot represent a non string value: 5",
    ),
    "an op in lower case": (
        [good(op="upsert")],
        AT + "[0].op: Value 'upsert' does not exist in 'ChangeOp' enum.",
    ),
    "a bad base version": (
        [good(baseVersion="x")],
        AT + "[0].baseVersion: Expected value of"
        " type 'VersionVector', but encountered error 'a version vector must be a JSON object"
        " {replicaId: counter}, got str'; found: 'x'.",
    ),
    "two records in a patch": (
        [good(patch={"customer": {}, "contact": {}})],
        "OneOf Input Object 'RecordPatch' must specify exactly one key.",
    ),
    "an empty patch": (
        [good(patch={})],
        "OneOf Input Object 'RecordPatch' must specify exactly one key.",
    ),
    "a null record patch": (
        [good(patch={"customer": None})],
        "Value for member field 'customer' must be non-null",
    ),
    "a patch that is a list": (
        [good(patch=[])],
        AT + "[0].patch: Expected value of type 'RecordPatch' to be an object, found: [].",
    ),
    "an unknown patch field": (
        [patched(nickname="x")],
        AT + "[0].patch.customer: Expected"
        " value of type 'CustomerPatch' not to include unknown field 'nickname'. Found:"
        " {'businessName': 'X', 'nickname': 'x'}.",
    ),
    "a bad phone type": (
        [patched(phones=[{"type": "CELL", "number": "+1 555 0100"}])],
        AT + "[0].patch.customer.phones[0].type: Value 'CELL' does not exist in 'PhoneType' enum.",
    ),
    "a null phone": (
        [patched(phones=[None])],
        AT + "[0].patch.customer.phones[0]: Expected"
        " value of non-null type 'PhoneInput!' not to be None.",
    ),
    "a phone without its number": (
        [patched(phones=[{"type": "MOBILE"}])],
        AT + "[0].patch"
        ".customer.phones[0]: Expected value of type 'PhoneInput' to include required field"
        " 'number', found: {'type': 'MOBILE'}.",
    ),
    "a null email in the list": (
        [patched(notificationEmails=["a@x.example", None])],
        AT + "[0].patch.customer.notificationEmails[1]: Expected value of non-null type 'String!'"
        " not to be None.",
    ),
    "a setting as text": (
        [patched(settings={"taxFree": "yes"})],
        AT + "[0].patch.customer"
        ".settings.taxFree: Boolean cannot represent a non boolean value: 'yes'",
    ),
    "a null change": (
        [good(), None],
        AT + "[1]: Expected value of non-null type 'ChangeInput!' not to be None.",
    ),
    "null changes": (
        None,
        "Variable '$changes' has invalid value: Expected value of non-null"
        " type '[ChangeInput!]!' not to be None.",
    ),
    "a change that is text": (
        ["x"],
        AT + "[0]: Expected value of type 'ChangeInput' to be an object, found: 'x'.",
    ),
}


def first_message(body: dict[str, Any]) -> str:
    assert body.get("data") is None, body
    return str(body["errors"][0]["message"])


class TestBadValues:
    @pytest.mark.parametrize("name", list(BAD))
    async def test_the_errors_are_graphql_cores(self, tenant, name):
        """Each bad value is refused before execution with graphql-core's message."""
        device = await Device(tenant.admin).register()
        value, message = BAD[name]
        response = await tenant.admin.post(PUSH, {"d": device.id, "changes": value})
        body = response.json()
        assert first_message(body) == message
        assert len(body["errors"]) == 1, body

    async def test_a_missing_field(self, tenant):
        """A change without its counter: graphql-core's message, which quotes the change."""
        device = await Device(tenant.admin).register()
        change = without("counter")
        body = (await tenant.admin.post(PUSH, {"d": device.id, "changes": [change]})).json()
        found = FOUND % (change["clientMutationId"], change["recordId"], "", "")
        assert first_message(body) == (
            f"{AT}[0]: Expected value of type 'ChangeInput' to include required field"
            f" 'counter', found: {found}."
        )

    async def test_an_unknown_field(self, tenant):
        """An unknown field of a change: graphql-core's message, without suggestions."""
        device = await Device(tenant.admin).register()
        change = good(foo=1)
        body = (await tenant.admin.post(PUSH, {"d": device.id, "changes": [change]})).json()
        found = FOUND % (
            change["clientMutationId"],
            change["recordId"],
            " 'counter': 1,",
            ", 'foo': 1",
        )
        assert first_message(body) == (
            f"{AT}[0]: Expected value of type 'ChangeInput' not to include unknown field"
            f" 'foo'. Found: {found}."
        )

    async def test_every_bad_change_is_reported_up_to_the_limit(self, tenant):
        """Sixty bad counters: fifty errors in order, then graphql-core's limit."""
        device = await Device(tenant.admin).register()
        changes = [good(counter="x") for _ in range(60)]
        body = (await tenant.admin.post(PUSH, {"d": device.id, "changes": changes})).json()
        messages = [e["message"] for e in body["errors"]]
        assert messages[:50] == [
            f"{AT}[{i}].counter: Int cannot represent non-integer value: 'x'" for i in range(50)
        ]
        assert messages[50:] == [
            "Too many errors processing variables, error limit reached. Execution aborted."
        ]

    async def test_a_bad_change_after_good_ones(self, tenant):
        """The error names the bad change's index, whatever comes before it."""
        device = await Device(tenant.admin).register()
        changes = [good(counter=i + 1) for i in range(5)] + [good(recordId=None)]
        body = (await tenant.admin.post(PUSH, {"d": device.id, "changes": changes})).json()
        assert first_message(body) == (
            f"{AT}[5].recordId: Expected value of non-null type 'ID!' not to be None."
        )

    async def test_a_record_id_that_is_no_id_is_a_user_error(self, tenant):
        """A record id GraphQL takes (a number is an ID) but that names no record: the
        push's ValidationError, as before."""
        device = await Device(tenant.admin).register()
        result = await device.push([good(recordId=123)])
        assert result == {
            "__typename": "ValidationError",
            "code": "VALIDATION_FAILED",
            "message": "Some fields are invalid: recordId is not a record id: '123'",
        }


class TestValuesGraphqlCoreTakesSpecially:
    """Values the plan leaves to graphql-core, which takes them: the push is applied."""

    @pytest.mark.parametrize(
        "change",
        [
            good(counter=1.0),
            patched(phones={"type": "MOBILE", "number": "+1 555 0100"}),
            patched(notificationEmails="a@x.example"),
            patched(settings={"taxRate": 7}),
        ],
        ids=["an Int as 1.0", "one phone", "one email", "a Float as an Int"],
    )
    async def test_applied(self, tenant, change):
        device = await Device(tenant.admin).register()
        result = await device.push([copy.deepcopy(change)])
        assert [r["outcome"] for r in result["results"]] == ["APPLIED"], result

    async def test_one_change_given_bare(self, tenant):
        """`changes` as one object (a list of one)."""
        device = await Device(tenant.admin).register()
        response = await tenant.admin.post(PUSH, {"d": device.id, "changes": good()})
        results = response.json()["data"]["pushChanges"]["results"]
        assert [r["outcome"] for r in results] == ["APPLIED"]

    async def test_one_phone_is_stored_as_a_list(self, tenant):
        device = await Device(tenant.admin).register()
        change = patched(phones={"type": "MOBILE", "number": "+1 555 0100"})
        data = await tenant.admin(RESULTS, {"d": device.id, "changes": [change]})
        record = data["first"]["results"][0]["record"]
        assert record["data"]["phones"] == [{"type": "MOBILE", "number": "+1 555 0100"}]


class TestPlannedValues:
    async def test_a_variable_used_twice_pushes_twice(self, tenant):
        """Two pushChanges fields reading one variable: the second is a replay."""
        device = await Device(tenant.admin).register()
        changes = [good(counter=1), patched(customFields={"a": {"nested": [1]}})]
        changes[1]["counter"] = 2
        data = await tenant.admin(RESULTS, {"d": device.id, "changes": changes})
        first, again = data["first"]["results"], data["again"]["results"]
        assert [r["outcome"] for r in first] == ["APPLIED", "VALIDATION_FAILED"]
        assert [r["replayed"] for r in again] == [True, True]
        assert [r["fieldErrors"] for r in again] == [r["fieldErrors"] for r in first]

    async def test_inline_literals_answer_as_variables(self, tenant):
        """The same changes written inline and sent as a variable: the same outcomes,
        records and errors (nested custom field values included)."""
        device = await Device(tenant.admin).register()
        patch = (
            '{customer: {businessName: "Lit", phones: [{type: MOBILE, number: "1"}],'
            " settings: {taxRate: 7}, customFields: {a: {nested: [1]}}}}"
        )
        record_id = str(uuid.uuid4())
        inline = f"""mutation($d: ID!) {{ pushChanges(deviceId: $d, changes: [{{
          clientMutationId: "inline", recordId: "{record_id}", op: UPSERT, counter: 1,
          patch: {patch}}}]) {{ __typename ... on PushResult {{ results {{ outcome
          fieldErrors {{ field message }} }} }} }} }}"""
        literal = await tenant.admin(inline, {"d": device.id})
        other = await Device(tenant.admin).register()
        change = good(
            clientMutationId="inline",
            counter=1,
            patch={
                "customer": {
                    "businessName": "Lit",
                    "phones": [{"type": "MOBILE", "number": "+1 555 0100"}],
                    "settings": {"taxRate": 7},
                    "customFields": {"a": {"nested": [1]}},
                }
            },
        )
        variable = await tenant.admin(
            """mutation($d: ID!, $changes: [ChangeInput!]!) {
              pushChanges(deviceId: $d, changes: $changes) { __typename ... on PushResult {
              results { outcome fieldErrors { field message } } } } }""",
            {"d": other.id, "changes": [change]},
        )
        assert literal == variable
        assert literal["pushChanges"]["results"][0]["outcome"] == "VALIDATION_FAILED"
