"""Canonical JSON text without recursion (sync/canonical.py)."""

from __future__ import annotations

import json
import time
from datetime import date
from typing import Any
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.canonical import canonical_json
from tests.sync.value_strategies import json_values, nested

ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.just(UUID(int=7))
    | st.just(date(2024, 2, 29)),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner)
        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(deadline=None)
@given(st.one_of(json_values, ANY))
def test_the_same_text_as_the_standard_library(value: Any) -> None:
    """Whatever json.dumps(sort_keys=True, default=str) writes, byte for byte (receipts
    stored before keep their digests)."""
    try:
        expected = json.dumps(value, sort_keys=True, default=str)
    except TypeError:
        return  # keys of mixed types: json cannot sort them, and no payload has them
    assert canonical_json(value) == expected


def test_any_depth_in_linear_time() -> None:
    """A value nested 100,000 deep (far past the recursion limit), at once."""
    started = time.perf_counter()
    deep = nested(100_000, {"a": [2**70]})
    text = canonical_json(["customer", {"custom_fields": {"note": deep}}])
    assert text.startswith('["customer", {"custom_fields": {"note": [[[')
    assert text.endswith('{"a": [1180591620717411303424]}' + "]" * 100_000 + "}}]")
    assert time.perf_counter() - started < 2
