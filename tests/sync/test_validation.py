"""sync.validation: field shapes, blank emails, and the email fast path (which never
accepts what email-validator refuses)."""

from __future__ import annotations

import time
from datetime import date, datetime

import orjson
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from db.entities import ENTITIES
from sync.validation import (
    FIELD_SHAPES,
    FieldDefinition,
    Shape,
    _check_strings,
    _strings_fit,
    _surely_valid_email,
    camel,
    is_valid_email,
    shape_errors,
    validate_record,
    values_from_json,
)
from tests.sync import value_strategies
from tests.sync.value_strategies import nested


def library_accepts(value: str) -> bool:
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


# Near the fast path's shape, with the characters and lengths that make addresses invalid.
_local = st.text(alphabet="abcXYZ019._+-!#'~\"@ ", min_size=0, max_size=70)
_label = st.text(alphabet="abz09-_.A", min_size=0, max_size=70)
_tld = st.sampled_from(
    ["com", "test", "localhost", "invalid", "onion", "arpa", "local", "c0m", "1", "xn--p1ai", ""]
)
_emails = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
    _local,
    st.lists(_label, min_size=0, max_size=4),
    _tld,
)


@settings(max_examples=3000)
@given(_emails)
def test_fast_path_only_accepts_what_the_library_accepts(value: str) -> None:
    if _surely_valid_email(value):
        assert library_accepts(value), value
    assert is_valid_email(value) == library_accepts(value)


def test_fast_path_examples() -> None:
    assert _surely_valid_email("ops.team-42@example-corp.com")
    assert _surely_valid_email("device-1-2@mail.example.com")
    for refused_by_both in ("a@b.test", "x@localhost", "a..b@c.com", "a@-b.com", "a@b.co1"):
        assert not _surely_valid_email(refused_by_both)
        assert not is_valid_email(refused_by_both)
    # Shapes outside the fast path still get the library's answer.
    assert is_valid_email("A@B.COM")
    assert is_valid_email("a@xn--bcher-kva.ch")
    assert not is_valid_email(f"{'a' * 250}@b.com")
    assert not is_valid_email(f"a@{'b' * 64}.com")


def test_camel() -> None:
    assert camel("install_date") == "installDate"
    assert camel("email") == "email"
    assert camel("notification_emails") == "notificationEmails"


# --------------------------------------------------------------------------- shapes


def _customer(**values: object) -> dict[str, object]:
    return {"business_name": "Acme", **values}


class TestFieldShapes:
    """shape_errors: every field of every record type has one shape, checked first."""

    def test_every_field_of_every_entity_has_a_shape(self) -> None:
        """FIELD_SHAPES names exactly the writable fields of db/entities.py."""
        for entity, spec in ENTITIES.items():
            assert set(FIELD_SHAPES[entity.value]) == set(spec.fields), entity

    def test_shapes_follow_the_column_types(self) -> None:
        """Text columns are text, booleans bool, a date a date, JSON columns lists/objects."""
        expected = {
            "TEXT": Shape.TEXT,
            "BOOLEAN": Shape.BOOL,
            "DATE": Shape.DATE,
            "BYTEA": Shape.BYTES,
            "INTEGER": Shape.INTEGER,
        }
        for entity, spec in ENTITIES.items():
            for name in spec.fields:
                sql = str(spec.table.c[name].type.compile(dialect=postgresql.dialect()))
                shape = FIELD_SHAPES[entity.value][name]
                if sql == "JSONB":
                    assert shape not in expected.values(), (entity, name)
                else:
                    assert shape is expected[sql], (entity, name, sql)

    @pytest.mark.parametrize(
        ("values", "path"),
        [
            ({"phones": {"evil": True}}, "phones"),
            ({"phones": [["+1 555 0100"]]}, "phones[0]"),
            ({"phones": [{"type": "WORK"}]}, "phones[0].number"),
            ({"phones": [{"type": "WORK", "number": 5550100}]}, "phones[0].number"),
            ({"phones": [{"type": "WORK", "number": "1234", "x": 1}]}, "phones[0].x"),
            ({"phones": None}, "phones"),
            ({"addresses": [{"line1": "Main St"}]}, "addresses[0].type"),
            ({"addresses": [{"type": "BILL_TO", "city": ["x"]}]}, "addresses[0].city"),
            ({"notification_emails": "a@b.example"}, "notificationEmails"),
            ({"invoice_cc_emails": [None]}, "invoiceCcEmails[0]"),
            ({"settings": [1, 2]}, "settings"),
            ({"settings": {"taxRate": "5"}}, "settings.taxRate"),
            ({"settings": {"taxRate": True}}, "settings.taxRate"),
            ({"settings": {"taxRate": 2**64}}, "settings.taxRate"),
            ({"settings": {"taxFree": "yes"}}, "settings.taxFree"),
            ({"settings": {"evil": 1}}, "settings.evil"),
            ({"business_name": 12345}, "businessName"),
            ({"email": ["a@b.example"]}, "email"),
            ({"archived": None}, "archived"),
            ({"custom_fields": []}, "customFields"),
            ({"custom_fields": None}, "customFields"),
            ({"custom_fields": {"note": [1]}}, "customFields.note"),
            ({"custom_fields": {"note": {"a": 1}}}, "customFields.note"),
            ({"custom_fields": {"note": float("nan")}}, "customFields.note"),
            ({"custom_fields": {"note": 2**70}}, "customFields.note"),
        ],
    )
    def test_a_customer_value_of_the_wrong_shape_is_named(
        self, values: dict[str, object], path: str
    ) -> None:
        """The error names the camelCase path of the value and what was expected."""
        errors = validate_record("customer", _customer(**values), [])
        assert path in errors, errors
        assert errors == shape_errors("customer", _customer(**values))

    @pytest.mark.parametrize(
        ("entity", "values", "path"),
        [
            ("contact", {"phones": {}}, "phones"),
            ("contact", {"title": 1.5}, "title"),
            ("facility", {"address": []}, "address"),
            ("facility", {"address": {"type": "BILL_TO"}}, "address.type"),
            ("facility", {"address": {"city": 1}}, "address.city"),
            ("asset", {"install_date": "2024-01-01"}, "installDate"),
            ("asset", {"install_date": datetime(2024, 1, 1)}, "installDate"),
            ("asset", {"kind": ["Door"]}, "kind"),
            ("credential", {"is_public": "yes"}, "isPublic"),
            ("credential", {"wrapped_key": "text"}, "wrappedKey"),
            ("credential", {"alg_version": True}, "algVersion"),
        ],
    )
    def test_every_entity_is_checked(
        self, entity: str, values: dict[str, object], path: str
    ) -> None:
        """Contacts, facilities, assets and credentials have their shapes too."""
        assert path in shape_errors(entity, values)

    def test_well_shaped_records_pass(self) -> None:
        """Values as the inputs store them have no shape errors."""
        customer = {
            "business_name": "Acme",
            "email": None,
            "phones": [{"type": "WORK", "number": "+1 555 0100"}],
            "addresses": [{"type": "BILL_TO", "line1": "Main St", "city": None}],
            "notification_emails": ["a@acme.example"],
            "invoice_cc_emails": [],
            "settings": {"taxRate": 7.5, "taxFree": False, "noEmail": None},
            "custom_fields": {"note": "x", "num": 3, "flag": True, "when": "2024-01-01"},
            "archived": False,
        }
        assert shape_errors("customer", customer) == {}
        assert shape_errors("asset", {"install_date": date(2024, 1, 1), "kind": "Door"}) == {}
        secret = {"wrapped_key": b"k", "alg_version": 1, "key_id": "k1", "is_public": True}
        assert shape_errors("credential", secret) == {}
        # Bookkeeping columns are not fields; the write path refuses them in a patch.
        assert shape_errors("customer", {"restored_seq": 0}) == {}

    def test_nesting_of_any_depth_is_refused_in_linear_time(self) -> None:
        """A value nested 200,000 deep (far past the recursion limit) is one error, found
        at once; so is a list of a million items."""
        started = time.perf_counter()
        deep = nested(200_000)
        errors = validate_record("customer", _customer(custom_fields={"note": deep}), [])
        assert list(errors) == ["customFields.note"]
        errors = validate_record("customer", _customer(phones=deep), [])
        assert list(errors) == ["phones[0]"]
        errors = validate_record("customer", _customer(phones=[{}] * 1_000_000), [])
        assert list(errors) == ["phones"]
        errors = validate_record(
            "customer", _customer(custom_fields={str(i): [i] for i in range(100_000)}), []
        )
        assert errors == {"customFields": "has too many keys (100000, at most 1000)"}
        errors = validate_record(
            "customer", _customer(custom_fields={str(i): [i] for i in range(1_000)}), []
        )
        assert len(errors) == 20
        # Well-shaped but unknown keys: a few are named, not a thousand.
        errors = validate_record(
            "customer", _customer(custom_fields={str(i): i for i in range(1_000)}), []
        )
        assert len(errors) == 20
        assert time.perf_counter() - started < 2

    def test_blank_emails_are_refused(self) -> None:
        """A blank or whitespace email is an error, for the primary email, a contact's and
        each notification and invoice-CC email; null is no email."""
        for blank in ("", "   ", "\t"):
            assert "email" in validate_record("customer", _customer(email=blank), [])
            assert "email" in validate_record("contact", {"first_name": "A", "email": blank}, [])
            errors = validate_record(
                "customer", _customer(invoice_cc_emails=["a@b.com", blank]), []
            )
            assert "invoiceCcEmails[1]" in errors
        assert validate_record("customer", _customer(email=None), []) == {}

    def test_unpaired_surrogates_and_nul_are_refused(self) -> None:
        """Text that PostgreSQL or the JSON encoder cannot take is a field error."""
        errors = validate_record("customer", _customer(first_name="a\ud800"), [])
        assert "firstName" in errors
        errors = validate_record("customer", _customer(custom_fields={"n\ud800": "x"}), [])
        [path] = errors
        path.encode("utf-8")
        assert "NUL" in validate_record("customer", _customer(last_name="a\x00"), [])["lastName"]

    def test_dates_from_json_become_dates(self) -> None:
        """values_from_json turns an ISO date string of a date field into a date and leaves
        anything else for shape_errors to judge."""
        values = values_from_json("asset", {"install_date": "2024-02-03", "kind": "2024-02-03"})
        assert values == {"install_date": date(2024, 2, 3), "kind": "2024-02-03"}
        assert values_from_json("asset", {"install_date": "soon"}) == {"install_date": "soon"}
        assert "installDate" in shape_errors(
            "asset", values_from_json("asset", {"install_date": "soon"})
        )

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(name=st.sampled_from(sorted(value_strategies.stored_values)), data=st.data())
    def test_any_value_is_judged_and_what_passes_can_be_stored(
        self, name: str, data: st.DataObject
    ) -> None:
        """For any JSON value of any field, validation answers (never raises), and a value
        it accepts is of its field's shape and encodes as JSON without NUL."""
        column = "".join("_" + c.lower() if c.isupper() else c for c in name)
        value = data.draw(value_strategies.hostile_values | value_strategies.stored_values[name])
        errors = validate_record("customer", _customer(**{column: value}), [])
        if not errors:
            assert shape_errors("customer", {column: value}) == {}
            encoded = orjson.dumps(value)
            assert b"\\u0000" not in encoded


class TestFastPaths:
    """The quick checks of a clean value say "fine" only where the detailed checks they
    stand in front of would find nothing (they exist for speed, never for a verdict)."""

    @settings(max_examples=400, derandomize=True, deadline=None)
    @given(
        value=value_strategies.hostile_values
        | st.sampled_from(
            ["x" * 10, "\ud800", "caf\u00e9", date(2024, 1, 2), b"\x00", (1, "\x00")]
        ),
        max_length=st.sampled_from([5, 10_000]),
    )
    def test_strings_fit_only_where_check_strings_finds_nothing(
        self, value: object, max_length: int
    ) -> None:
        errors: dict[str, str] = {}
        _check_strings(value, "field", max_length, errors)
        if _strings_fit(value, max_length):
            assert errors == {}
        if not errors:
            # The quick check looks closely only at what it cannot vouch for.
            assert _strings_fit(value, max_length) or type(value) not in (str, dict, list)

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(name=st.sampled_from(sorted(value_strategies.stored_values)), data=st.data())
    def test_whole_records_are_judged_as_before(self, name: str, data: st.DataObject) -> None:
        """validate_record with its quick checks gives the detailed walk's answer: the same
        paths, messages and order."""
        column = "".join("_" + c.lower() if c.isupper() else c for c in name)
        value = data.draw(value_strategies.hostile_values | value_strategies.stored_values[name])
        record = _customer(**{column: value})
        errors = validate_record("customer", record, [], max_length=8)
        if shape_errors("customer", record):
            return
        expected: dict[str, str] = {}
        for key, inner in record.items():
            if key != "custom_fields":
                _check_strings(inner, camel(key), 8, expected)
        # The string problems come first, in field order, as the detailed walk finds them.
        assert list(errors.items())[: len(expected)] == list(expected.items())


class TestStoredValues:
    """validate_record(stored=...): the values a record already holds were judged when
    written; the rules of one value judge only what a change writes, the rules of the
    whole record still see everything."""

    # Stored before a rule tightened: an address type and an email no longer accepted.
    STORED = _customer(
        email="not-an-email",
        addresses=[{"type": "OFFICE", "line1": "1 Main St"}],
        phones=[],
    )

    def test_an_edit_elsewhere_is_not_refused_for_stored_values(self) -> None:
        record = {**self.STORED, "phones": [{"type": "MOBILE", "number": "555 0100"}]}
        assert validate_record("customer", record, []) != {}
        assert validate_record("customer", record, [], stored=self.STORED) == {}

    def test_what_the_change_writes_is_judged(self) -> None:
        record = {**self.STORED, "phones": [{"type": "PAGER", "number": "?"}]}
        errors = validate_record("customer", record, [], stored=self.STORED)
        assert set(errors) == {"phones[0].type", "phones[0].number"}
        record = {**self.STORED, "email": "still not one"}
        errors = validate_record("customer", record, [], stored=self.STORED)
        assert set(errors) == {"email"}

    def test_record_rules_see_stored_values(self) -> None:
        """A record without a name and a custom field made required since are refused
        whatever the change writes."""
        stored = {"business_name": None, "first_name": None, "last_name": None, "phones": []}
        record = {**stored, "phones": [{"type": "MOBILE", "number": "555 0100"}]}
        errors = validate_record("customer", record, [], stored=stored)
        assert set(errors) == {"businessName"}
        required = FieldDefinition("po", "PO number", "TEXT", required=True)
        stored = _customer(custom_fields={}, phones=[])
        record = {**stored, "phones": [{"type": "MOBILE", "number": "555 0100"}]}
        errors = validate_record("customer", record, [required], stored=stored)
        assert errors == {"customFields.po": "PO number is required"}

    def test_equal_is_not_unchanged(self) -> None:
        """Identity, not equality: a value the change sends is judged even when equal."""
        phones = [{"type": "PAGER", "number": "1"}]
        stored = _customer(phones=phones)
        assert validate_record("customer", dict(stored), [], stored=stored) == {}
        record = {**stored, "phones": [dict(phones[0])]}
        errors = validate_record("customer", record, [], stored=stored)
        assert set(errors) == {"phones[0].type", "phones[0].number"}

    @settings(max_examples=300, derandomize=True, deadline=None)
    @given(name=st.sampled_from(sorted(value_strategies.stored_values)), data=st.data())
    def test_without_stored_values_the_verdict_is_the_whole_records(
        self, name: str, data: st.DataObject
    ) -> None:
        """With nothing stored, or only valid stored values, the verdict is the one on the
        whole record."""
        column = "".join("_" + c.lower() if c.isupper() else c for c in name)
        value = data.draw(value_strategies.hostile_values | value_strategies.stored_values[name])
        stored = _customer(phones=[{"type": "MOBILE", "number": "555 0100"}])
        record = {**stored, column: value}
        whole = validate_record("customer", record, [], max_length=8)
        assert validate_record("customer", record, [], max_length=8, stored={}) == whole
        if column not in stored:
            judged = validate_record("customer", record, [], max_length=8, stored=stored)
            assert judged == whole
