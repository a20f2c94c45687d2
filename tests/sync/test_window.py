"""The external sync window's pure rules: parsing, three-way comparison, direction,
categories, resolution and export."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from sync.window import (
    Category,
    Comparison,
    Direction,
    ImportFormat,
    PairState,
    Side,
    categorise,
    compare,
    customer_patch,
    export_csv,
    local_values,
    mapping_problems,
    parse_import,
    plan,
    resolve,
    sniff_format,
)

MAPPING = [
    ("No", "externalId"),
    ("Name", "businessName"),
    ("Mail", "email"),
    ("Tel", "phone"),
    ("State", "active"),
]
FIELDS = ("business_name", "email", "phone")
LIMIT = 1_000_000


def parse(text: str | bytes, mapping=MAPPING, fmt=ImportFormat.CSV):
    data = text.encode() if isinstance(text, str) else text
    return parse_import(data, mapping, fmt, max_bytes=LIMIT)


class TestMapping:
    def test_a_valid_mapping_has_no_problems(self) -> None:
        """Known targets, one external id, each column and target once."""
        assert mapping_problems(MAPPING) == {}

    def test_unknown_fields_and_missing_id_are_named(self) -> None:
        """A target that is not a customer field, a repeated column and no external id."""
        problems = mapping_problems([("A", "faxNumber"), ("A", "email")])
        assert "'faxNumber' is not a customer field" in problems["mapping[0].field"]
        assert problems["mapping[1].column"] == "'A' is mapped twice"
        assert problems["mapping"] == "one column must map to 'externalId'"


class TestParsing:
    def test_rows_come_back_normalised_with_line_numbers(self) -> None:
        """Cells are trimmed, blanks are None, a BOM is dropped, blank lines skipped."""
        text = "\ufeffNo,Name,Mail,Tel,State\r\n 7 , Acme ,a@acme.example,,\r\n\r\n8,Bolt,,,no\r\n"
        parsed = parse(text)
        assert parsed.problems == []
        assert [(r.line, r.external_id, r.active) for r in parsed.rows] == [
            (2, "7", True),
            (4, "8", False),
        ]
        assert parsed.rows[0].values == {
            "business_name": "Acme",
            "email": "a@acme.example",
            "phone": None,
        }

    def test_quoted_newlines_keep_line_numbers_right(self) -> None:
        """A quoted cell spanning two lines: the next row's line is still its own."""
        text = 'No,Name,Mail,Tel,State\n1,"Two\nLines",,,\n2,Bad,nope,,\n'
        parsed = parse(text)
        assert [(p.line, p.column) for p in parsed.problems] == [(4, "Mail")]

    def test_every_bad_row_is_listed_and_none_is_kept(self) -> None:
        """Duplicate ids, malformed emails, bad flags, missing ids and names: all listed."""
        text = (
            "No,Name,Mail,Tel,State\n"
            "1,Acme,a@acme.example,,\n"
            "1,Again,b@acme.example,,\n"
            "2,Bolt,not-an-email,,\n"
            "3,Crane,c@crane.example,,maybe\n"
            ",Delta,d@delta.example,,\n"
            "5,,e@echo.example,,\n"
            "6,Foxtrot,A@ACME.example,,\n"
            "7,Golf,g@golf.example,12,\n"
        )
        parsed = parse(text)
        assert parsed.rows == []
        lines = [p.line for p in parsed.problems]
        assert lines == [3, 4, 5, 6, 7, 8, 9]
        reasons = " | ".join(p.reason for p in parsed.problems)
        assert "duplicate external id '1' (also on line 2)" in reasons
        assert "not a valid email address" in reasons
        assert "'maybe' is not yes/no" in reasons
        assert "the external id is missing" in reasons
        assert "a business name or a first or last name is needed" in reasons
        assert "is also on line 2" in reasons
        assert "phone must be 3-40 digits" in reasons

    def test_a_header_without_mapped_columns_is_refused_naming_them(self) -> None:
        """Missing mapped columns and the unmapped ones found are both named."""
        parsed = parse("Number,Name,Mail\n1,Acme,a@acme.example\n")
        [problem] = parsed.problems
        assert problem.line == 1
        assert "'No', 'Tel', 'State'" in problem.reason
        assert "unmapped column(s) 'Number'" in problem.reason

    def test_a_ragged_row_is_a_problem(self) -> None:
        """A row with more cells than the header is listed."""
        parsed = parse("No,Name,Mail,Tel,State\n1,Acme,a@acme.example,,,extra\n")
        assert parsed.problems[0].line == 2
        assert "has 6 cells; the header has 5" in parsed.problems[0].reason

    def test_non_utf8_is_refused_with_where(self) -> None:
        """Latin-1 bytes are refused with the offending line."""
        parsed = parse("No,Name,Mail,Tel,State\n1,Café,,,\n".encode("latin-1"))
        [problem] = parsed.problems
        assert problem.line == 2
        assert "not UTF-8" in problem.reason

    def test_an_oversized_file_is_refused_before_decoding(self) -> None:
        """The size limit applies to the raw bytes."""
        parsed = parse_import(b"x" * 11, MAPPING, ImportFormat.CSV, max_bytes=10)
        assert parsed.problems[0].reason == "the file has 11 bytes; at most 10"

    def test_json_rows_and_problems(self) -> None:
        """JSON arrays (or {"records": [...]}) import like CSV; positions are lines."""
        ok = parse(
            '{"records": [{"No": 1, "Name": "Acme", "Mail": null, "Tel": "", "State": true}]}',
            fmt=ImportFormat.JSON,
        )
        assert [(r.line, r.external_id, r.active) for r in ok.rows] == [(1, "1", True)]
        bad = parse(
            '[{"No": 1, "Name": {"x": 1}, "Mail": null, "Tel": null, "State": null}, 3]',
            fmt=ImportFormat.JSON,
        )
        assert [(p.line, p.column) for p in bad.problems] == [(1, "Name"), (2, None)]

    def test_the_format_is_sniffed(self) -> None:
        """By file name first, else by the first character."""
        assert sniff_format(b"No,Name", "x.JSON") is ImportFormat.JSON
        assert sniff_format(b"\xef\xbb\xbf [", None) is ImportFormat.JSON
        assert sniff_format(b"No,Name", None) is ImportFormat.CSV


class TestCompare:
    def test_one_sided_changes_and_conflicts(self) -> None:
        """Each field is sorted by which side moved away from the last-synced value."""
        synced = {"business_name": "Acme", "email": "a@x.example", "phone": "1"}
        local = {"business_name": "Acme Local", "email": "a@x.example", "phone": "2"}
        external = {"business_name": "Acme", "email": "new@x.example", "phone": "3"}
        result = compare(FIELDS, synced, local, external)
        assert result.local_only == {"business_name": "Acme Local"}
        assert result.external_only == {"email": "new@x.example"}
        assert result.conflicts == {"phone": ("2", "3")}

    def test_without_a_baseline_every_difference_is_a_conflict(self) -> None:
        """A fresh pair has no last-synced values; emails compare case-insensitively."""
        result = compare(FIELDS, None, {"email": "A@X.example"}, {"email": "a@x.example"})
        assert result.conflicts == {}
        assert set(result.agreed) == set(FIELDS)
        result = compare(FIELDS, None, {"business_name": "A"}, {"business_name": "B"})
        assert result.conflicts == {"business_name": ("A", "B")}


values = st.sampled_from([None, "", "a", "b", " a ", "c"])
records = st.fixed_dictionaries(dict.fromkeys(FIELDS, values))


class TestProperties:
    @given(synced=records, local=records, external=records)
    def test_a_field_changed_on_one_side_only_is_never_a_conflict(
        self, synced, local, external
    ) -> None:
        """Where either side still equals the last-synced value, there is no conflict."""
        result = compare(FIELDS, synced, local, external)
        for name in result.conflicts:
            norm = [(v or "").strip() for v in (synced[name], local[name], external[name])]
            assert norm[0] not in (norm[1], norm[2])

    @given(
        synced=st.one_of(st.none(), records),
        local=records,
        external=records,
        direction=st.sampled_from(list(Direction)),
    )
    def test_recategorising_after_applying_is_idempotent(
        self, synced, local, external, direction
    ) -> None:
        """After an import's automatic changes are applied, a second run applies nothing
        and keeps the same last-synced values, conflicts and category."""
        first = plan(direction, compare(FIELDS, synced, local, external), synced)
        applied = {**local, **first.apply_local}
        second = plan(direction, compare(FIELDS, first.synced, applied, external), first.synced)
        assert second.apply_local == {}
        assert second.synced == first.synced
        assert second.conflicts == first.conflicts
        assert second.pending_export == first.pending_export

    @given(synced=records, local=records, external=records)
    def test_direction_decides_who_moves(self, synced, local, external) -> None:
        """LOCAL_TO_EXTERNAL writes nothing; BOTH writes only external-only fields;
        EXTERNAL_TO_LOCAL also sets local-only fields back."""
        comparison = compare(FIELDS, synced, local, external)
        assert plan(Direction.LOCAL_TO_EXTERNAL, comparison, synced).apply_local == {}
        both = plan(Direction.BOTH, comparison, synced).apply_local
        assert both == comparison.external_only
        master = plan(Direction.EXTERNAL_TO_LOCAL, comparison, synced).apply_local
        assert set(master) == set(comparison.external_only) | set(comparison.local_only)
        for name, value in master.items():
            assert value == external[name]

    @given(synced=records, local=records, external=records, keep=st.sampled_from(list(Side)))
    def test_resolving_every_conflict_leaves_none(self, synced, local, external, keep) -> None:
        """Keeping one side of all conflicting fields leaves no conflict behind."""
        comparison = compare(FIELDS, synced, local, external)
        apply_local, new_synced = resolve(comparison.conflicts, keep, comparison.conflicts, synced)
        after = compare(FIELDS, new_synced, {**local, **apply_local}, external)
        assert after.conflicts == {}
        if keep is Side.LOCAL:
            assert apply_local == {}
            assert set(comparison.conflicts) <= set(after.local_only)


class TestCategories:
    def test_each_category(self) -> None:
        """The category follows links, sync switch, deletions, conflicts, activity."""
        assert categorise(PairState(linked=False)) is Category.NEW_EXTERNAL
        assert categorise(PairState(linked=False, external_active=False)) is Category.INACTIVE
        assert categorise(PairState(linked=False, external_deleted=True)) is None
        assert categorise(PairState(linked=True, sync_active=False)) is Category.DEACTIVATED
        assert categorise(PairState(linked=True, local_deleted=True)) is Category.DELETED
        assert categorise(PairState(linked=True, external_deleted=True)) is Category.DELETED
        assert categorise(PairState(linked=True, has_conflicts=True)) is Category.CONFLICT
        assert categorise(PairState(linked=True)) is Category.SYNCHRONIZED

    def test_no_auto_apply_leaves_one_sided_changes_pending(self) -> None:
        """An action re-sorting a pair writes nothing, whatever the direction."""
        comparison = Comparison(external_only={"email": "x@y.example"})
        result = plan(Direction.EXTERNAL_TO_LOCAL, comparison, {}, auto_apply=False)
        assert result.apply_local == {}
        assert result.pending_export == ("email",)


class TestLocalSide:
    def test_phone_is_the_first_number(self) -> None:
        """The synced phone reads and writes the first phone, keeping its type."""
        row = {"business_name": "A", "phones": [{"type": "MOBILE", "number": "1"}]}
        assert local_values(row, ("business_name", "phone")) == {"business_name": "A", "phone": "1"}
        assert customer_patch(row, {"phone": "2"}) == {
            "phones": [{"type": "MOBILE", "number": "2"}]
        }
        assert customer_patch({"phones": []}, {"phone": "2"}) == {
            "phones": [{"type": "WORK", "number": "2"}]
        }
        assert customer_patch(row, {"phone": None}) == {"phones": []}

    def test_export_uses_the_source_columns(self) -> None:
        """Columns in mapping order; new local rows have no id; formulas are defused."""
        text = export_csv(
            MAPPING,
            [
                ("7", {"business_name": "Acme", "email": "a@x.example", "phone": "+1 (555) 0100"}),
                (None, {"business_name": "=SUM(A1)", "email": None, "phone": None}),
            ],
        )
        rows = list(csv.reader(io.StringIO(text)))
        assert rows == [
            ["No", "Name", "Mail", "Tel", "State"],
            ["7", "Acme", "a@x.example", "+1 (555) 0100", "active"],
            ["", "'=SUM(A1)", "", "", "active"],
        ]
