"""The sync shape's completion and link rules (sync/record_shape.py), without a database."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.record_shape import (
    ADDRESS_KEYS,
    CANNOT_MOVE,
    NOT_THE_FACILITYS_CUSTOMER,
    SETTING_DEFAULTS,
    SITE_ADDRESS_KEYS,
    complete,
    complete_settings,
    link_errors,
)
from sync.validation import FIELD_SHAPES, shape_errors

SETTINGS_IN_VALIDATION = {
    "taxFree",
    "taxRate",
    "smsEnabled",
    "billingEmails",
    "marketingEmails",
    "reportEmails",
    "noEmail",
}


class TestCompletion:
    """Stored values come out with every key, defaults and nulls filled in."""

    def test_settings_have_all_seven_keys_at_their_defaults(self) -> None:
        """An empty settings object is the seven defaults; set keys keep their values; a
        stored null counts as unset."""
        assert complete_settings({}) == SETTING_DEFAULTS
        assert set(SETTING_DEFAULTS) == SETTINGS_IN_VALIDATION
        done = complete_settings({"taxRate": 7.5, "billingEmails": False, "noEmail": None})
        assert done == {**SETTING_DEFAULTS, "taxRate": 7.5, "billingEmails": False}

    def test_a_customer_is_completed_and_loses_archived(self) -> None:
        """Settings, every address with all keys, no `archived`; other fields untouched."""
        data: dict[str, Any] = {
            "businessName": "Acme",
            "archived": False,
            "settings": {"taxFree": True},
            "addresses": [{"type": "BILL_TO", "city": "Oslo"}, {"type": "SHIP_TO"}],
            "phones": [{"type": "WORK", "number": "555 0100"}],
        }
        out = complete("customer", data)
        assert out is data
        assert "archived" not in out
        assert out["settings"] == {**SETTING_DEFAULTS, "taxFree": True}
        assert [list(a) for a in out["addresses"]] == [list(ADDRESS_KEYS)] * 2
        assert out["addresses"][0] == dict.fromkeys(ADDRESS_KEYS) | {
            "type": "BILL_TO",
            "city": "Oslo",
        }
        assert out["phones"] == [{"type": "WORK", "number": "555 0100"}]

    def test_a_facility_address_has_every_key(self) -> None:
        """The default empty address, and a partial one, come out with all six keys."""
        assert complete("facility", {"address": {}})["address"] == dict.fromkeys(SITE_ADDRESS_KEYS)
        partial = complete("facility", {"address": {"line1": "1 Main St"}})["address"]
        assert partial == dict.fromkeys(SITE_ADDRESS_KEYS) | {"line1": "1 Main St"}

    def test_other_types_are_left_as_they_are(self) -> None:
        """Assets, contacts and credentials are stored complete."""
        for entity in ("asset", "contact", "credential"):
            data = {"notes": None, "customFields": {"a": 1}}
            assert complete(entity, dict(data)) == data

    # No deadline: the first example pays for imports and warm-up on a loaded machine.
    @settings(deadline=None)
    @given(
        st.fixed_dictionaries(
            {},
            optional={
                "taxFree": st.booleans(),
                "taxRate": st.none() | st.floats(0, 100) | st.integers(0, 100),
                "noEmail": st.booleans(),
            },
        ),
        st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["BILL_TO", "SHIP_TO", "PHYSICAL"])},
                optional={k: st.none() | st.text(max_size=5) for k in SITE_ADDRESS_KEYS},
            ),
            max_size=3,
        ),
    )
    def test_completion_keeps_the_shape_and_is_idempotent(
        self, stored: dict[str, Any], addresses: list[dict[str, Any]]
    ) -> None:
        """A completed record still fits its field shapes, and completing it again changes
        nothing (so data sent back as a patch and pulled again is the same)."""
        data = {"settings": stored, "addresses": addresses, "archived": True}
        once = complete("customer", data)
        columns = {"settings": once["settings"], "addresses": once["addresses"]}
        assert shape_errors("customer", columns) == {}
        assert complete("customer", dict(once)) == once

    def test_every_completed_field_has_a_shape(self) -> None:
        """The completion names fields that validation knows (it and the shapes agree)."""
        assert "settings" in FIELD_SHAPES["customer"]
        assert "addresses" in FIELD_SHAPES["customer"]
        assert "address" in FIELD_SHAPES["facility"]


class TestLinks:
    """A patch's customerId / facilityId must be the record's own."""

    def test_an_update_with_its_own_parents_is_fine(self) -> None:
        """The pulled links sent back name nothing; absent links too."""
        customer, facility = uuid4(), uuid4()
        row = {"customer_id": customer, "facility_id": facility, "kind": "Door"}
        given_links = {"customer_id": customer, "facility_id": facility}
        assert link_errors(given_links, row, new=False) == {}
        assert link_errors({}, row, new=False) == {}

    def test_an_update_naming_another_parent_is_refused(self) -> None:
        """Each link that differs is named by its API field: records cannot move."""
        row = {"customer_id": uuid4(), "facility_id": uuid4()}
        errors = link_errors({"customer_id": uuid4(), "facility_id": uuid4()}, row, new=False)
        assert errors == {"customerId": CANNOT_MOVE, "facilityId": CANNOT_MOVE}
        errors = link_errors({"facility_id": uuid4()}, row, new=False)
        assert errors == {"facilityId": CANNOT_MOVE}

    def test_a_link_the_record_type_has_not_is_ignored(self) -> None:
        """A contact has no facility; the input types never send one, nothing to check."""
        assert link_errors({"facility_id": uuid4()}, {"customer_id": uuid4()}, new=False) == {}

    def test_a_new_asset_must_name_its_facilitys_customer(self) -> None:
        """On a create the expected links are the parents' (an asset's customer is its
        facility's)."""
        parents = {"facility_id": uuid4(), "customer_id": uuid4()}
        assert link_errors({"facility_id": parents["facility_id"]}, parents, new=True) == {}
        assert link_errors(dict(parents), parents, new=True) == {}
        errors = link_errors({**parents, "customer_id": uuid4()}, parents, new=True)
        assert errors == {"customerId": NOT_THE_FACILITYS_CUSTOMER}
