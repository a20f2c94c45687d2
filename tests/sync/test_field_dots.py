"""Field dots: which fields changed, stamping, and their JSON form."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.field_dots import (
    Dot,
    changed_fields,
    changed_since,
    dots_from_json,
    dots_to_json,
    stamp,
)
from sync.version_vector import covers
from tests.sync.strategies import (
    FIELDS,
    PROPERTY,
    dots,
    field_dots,
    patches,
    version_vectors,
)


class TestChangedFields:
    """changed_fields()."""

    def test_differing_values(self) -> None:
        """Only fields whose value differs are changed, in the order of ``fields``."""
        old = {"name": "A", "email": "a@x", "phone": None}
        new = {"phone": "1", "email": "a@x", "name": "B"}
        assert changed_fields(old, new, ["name", "email", "phone"]) == ["name", "phone"]

    def test_missing_in_new_is_unchanged(self) -> None:
        """A field the patch does not carry is unchanged, even if old has it."""
        assert changed_fields({"name": "A"}, {}, ["name"]) == []

    def test_missing_in_old_is_changed(self) -> None:
        """A field set for the first time is changed, even to None."""
        assert changed_fields({}, {"name": None}, ["name"]) == ["name"]

    def test_only_listed_fields(self) -> None:
        """Fields outside ``fields`` are ignored, and duplicates reported once."""
        assert changed_fields({}, {"name": "A", "id": 1}, ["name", "name"]) == ["name"]

    @PROPERTY
    @given(patches, patches)
    def test_subset_of_new(self, old: dict[str, object], new: dict[str, object]) -> None:
        """Every changed field is in the new values and differs from (or is absent in) old."""
        changed = changed_fields(old, new, FIELDS)
        assert set(changed) <= set(new)
        for name in FIELDS:
            differs = name in new and (name not in old or old[name] != new[name])
            assert (name in changed) == differs


class TestStamp:
    """stamp()."""

    def test_sets_dot(self) -> None:
        """Stamped fields get the new dot; the others keep theirs."""
        before: dict[str, Dot] = {"name": ("a", 1), "email": ("a", 1)}
        after = stamp(before, ["email", "phone"], ("b", 4))
        assert after == {"name": ("a", 1), "email": ("b", 4), "phone": ("b", 4)}
        assert before == {"name": ("a", 1), "email": ("a", 1)}


class TestChangedSince:
    """changed_since()."""

    def test_uncovered_dots(self) -> None:
        """Fields whose last write the base has not seen are changed since it."""
        record_dots: dict[str, Dot] = {"name": ("a", 1), "email": ("b", 3), "phone": ("a", 2)}
        assert changed_since(record_dots, {"a": 1, "b": 3}) == {"phone"}
        assert changed_since(record_dots, {}) == {"name", "email", "phone"}
        assert changed_since(record_dots, {"a": 2, "b": 3}) == set()

    @PROPERTY
    @given(field_dots, version_vectors, st.lists(st.sampled_from(FIELDS)), dots)
    def test_stamped_field_is_changed_unless_covered(
        self,
        record_dots: dict[str, Dot],
        base: dict[str, int],
        fields: list[str],
        dot: Dot,
    ) -> None:
        """A freshly stamped field counts as changed exactly when the base lacks the dot."""
        changed = changed_since(stamp(record_dots, fields, dot), base)
        for name in fields:
            assert (name in changed) == (not covers(base, dot))


class TestJson:
    """dots_to_json() and dots_from_json()."""

    def test_form(self) -> None:
        """The JSON form is ``{field: [replica, counter]}``."""
        assert dots_to_json({"name": ("a", 2)}) == {"name": ["a", 2]}
        assert dots_from_json({"name": ["a", 2]}) == {"name": ("a", 2)}

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ([], "must be a JSON object"),
            ({"name": ["a"]}, r"must be \[replica, counter\]"),
            ({"name": "a:1"}, r"must be \[replica, counter\]"),
            ({"name": ["", 1]}, "invalid replica id"),
            ({"name": [1, 1]}, "invalid replica id"),
            ({"name": ["a", 0]}, "invalid counter"),
            ({"name": ["a", "1"]}, "invalid counter"),
            ({"name": ["a", True]}, "invalid counter"),
            ({"": ["a", 1]}, "non-empty strings"),
        ],
    )
    def test_rejects(self, value: object, message: str) -> None:
        """Anything but an object of ``[replica, counter >= 1]`` pairs raises ValueError."""
        with pytest.raises(ValueError, match=message):
            dots_from_json(value)

    @PROPERTY
    @given(field_dots)
    def test_round_trip(self, record_dots: dict[str, Dot]) -> None:
        """Dots survive the JSON form and a real JSON encode/decode unchanged."""
        assert dots_from_json(json.loads(json.dumps(dots_to_json(record_dots)))) == record_dots
