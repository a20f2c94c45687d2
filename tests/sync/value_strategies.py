"""Hypothesis strategies for hostile field values: wrong types, empty collections, nulls,
unusual Unicode, NUL characters, over-long text, huge numbers and deep nesting.

Shared by the pure validation properties (tests/sync/test_validation.py) and the
write-then-read fuzz over the API (tests/api/test_write_read_fuzz.py). Everything here is
JSON a client can send: no NaN or infinities (JSON has none; the server refuses the body)
and no lone surrogates (the server's JSON parser refuses those too).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Text that has broken one store or another: blank, NUL, bidi and BOM marks, emoji,
# JSON-looking text, an email-looking value with spaces, and text one over the limit.
SPECIAL_TEXT = (
    "",
    " ",
    "\t\n",
    "\x00",
    "a\x00b",
    "\u202eevil",
    "\ufeffbom",
    "😀🚪",
    "null",
    "[]",
    "{}",
    " a@acme.example ",
    "=HYPERLINK()",
    "x" * 10_001,
)
# Unicode without surrogates (category Cs) but with everything else, NUL included.
texts = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    st.sampled_from(SPECIAL_TEXT),
)
emails = st.one_of(st.sampled_from(["a@acme.example", "B@ACME.EXAMPLE", "not-an-email"]), texts)
numbers = st.one_of(
    st.integers(-(2**31), 2**31),
    st.sampled_from([0, -1, 101, 2**53 + 1, 2**63, -(2**63) - 1, 2**70]),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)


def nested(depth: int, leaf: Any = "x") -> Any:
    """``leaf`` inside ``depth`` lists, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=6,
)
# Any JSON value a client might put where one value belongs, deep nesting included.
hostile_values = st.one_of(
    json_values,
    st.sampled_from([[], {}, [[]], {"": None}, [None], {"a": {"b": {"c": []}}}]),
    st.integers(min_value=1, max_value=600).map(nested),
)


def hostile_for(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``good`` values (so writes get through and reach the reads), sometimes any."""
    return st.one_of(good, good, hostile_values)


phone_items = st.fixed_dictionaries(
    {"type": st.sampled_from(["MOBILE", "HOME", "WORK", "FAX", "OTHER"])},
    optional={"number": hostile_for(st.sampled_from(["+1 555 0100", "555-0199 x12"]))},
)
address_items = st.fixed_dictionaries(
    {"type": st.sampled_from(["BILL_TO", "SHIP_TO", "PHYSICAL"])},
    optional={k: hostile_for(st.none() | texts) for k in ("line1", "city", "postalCode")},
)
# Stored-shape values (as a conflict's merge values carry them), right or wrong.
stored_values: dict[str, st.SearchStrategy[Any]] = {
    "businessName": hostile_for(texts),
    "firstName": hostile_for(st.none() | texts),
    "email": hostile_for(st.none() | emails),
    "phones": hostile_for(st.lists(phone_items, max_size=3)),
    "addresses": hostile_for(st.lists(address_items, max_size=2)),
    "notificationEmails": hostile_for(st.lists(emails, max_size=3)),
    "settings": hostile_for(
        st.fixed_dictionaries(
            {},
            optional={
                "taxRate": hostile_for(st.none() | numbers),
                "taxFree": hostile_for(st.booleans()),
            },
        )
    ),
    "customFields": hostile_for(st.dictionaries(st.sampled_from(["note", "num"]), scalars)),
}
