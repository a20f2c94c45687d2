"""Version vectors: order, merge, increment, and parsing of untrusted input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given

from sync.version_vector import (
    MAX_COUNTER,
    Ordering,
    compare,
    covers,
    dominates_or_equal,
    increment,
    merge,
    normalize,
    parse,
)
from tests.sync.strategies import PROPERTY, replicas, version_vectors

MIRROR = {
    Ordering.EQUAL: Ordering.EQUAL,
    Ordering.BEFORE: Ordering.AFTER,
    Ordering.AFTER: Ordering.BEFORE,
    Ordering.CONCURRENT: Ordering.CONCURRENT,
}


class TestCompare:
    """compare()."""

    def test_equal(self) -> None:
        """Vectors with the same counters are EQUAL."""
        assert compare({"a": 1, "b": 2}, {"b": 2, "a": 1}) is Ordering.EQUAL

    def test_missing_is_zero(self) -> None:
        """A missing replica and a zero counter mean the same thing."""
        assert compare({"a": 1, "b": 0}, {"a": 1}) is Ordering.EQUAL
        assert compare({}, {}) is Ordering.EQUAL

    def test_before(self) -> None:
        """A vector dominated by the other is BEFORE it."""
        assert compare({"a": 1}, {"a": 2}) is Ordering.BEFORE
        assert compare({}, {"a": 1}) is Ordering.BEFORE

    def test_after(self) -> None:
        """A vector dominating the other is AFTER it."""
        assert compare({"a": 2, "b": 1}, {"a": 2}) is Ordering.AFTER

    def test_concurrent(self) -> None:
        """Each having seen a write the other has not is CONCURRENT."""
        assert compare({"a": 2, "b": 1}, {"a": 1, "b": 2}) is Ordering.CONCURRENT
        assert compare({"a": 1}, {"b": 1}) is Ordering.CONCURRENT

    @PROPERTY
    @given(version_vectors)
    def test_reflexive(self, a: dict[str, int]) -> None:
        """Every vector is EQUAL to itself."""
        assert compare(a, a) is Ordering.EQUAL

    @PROPERTY
    @given(version_vectors, version_vectors)
    def test_mirror(self, a: dict[str, int], b: dict[str, int]) -> None:
        """compare(b, a) is the mirror image of compare(a, b)."""
        assert compare(b, a) is MIRROR[compare(a, b)]

    @PROPERTY
    @given(version_vectors, version_vectors)
    def test_agrees_with_dominates(self, a: dict[str, int], b: dict[str, int]) -> None:
        """The ordering is exactly what dominates_or_equal says in both directions."""
        expected = {
            (True, True): Ordering.EQUAL,
            (True, False): Ordering.AFTER,
            (False, True): Ordering.BEFORE,
            (False, False): Ordering.CONCURRENT,
        }[dominates_or_equal(a, b), dominates_or_equal(b, a)]
        assert compare(a, b) is expected

    @PROPERTY
    @given(version_vectors, version_vectors)
    def test_antisymmetric(self, a: dict[str, int], b: dict[str, int]) -> None:
        """Vectors that dominate each other are the same vector."""
        if dominates_or_equal(a, b) and dominates_or_equal(b, a):
            assert normalize(a) == normalize(b)

    @PROPERTY
    @given(version_vectors, version_vectors, version_vectors)
    def test_transitive(self, x: dict[str, int], y: dict[str, int], z: dict[str, int]) -> None:
        """a >= b and b >= c imply a >= c, for random triples and for built chains."""
        if dominates_or_equal(x, y) and dominates_or_equal(y, z):
            assert dominates_or_equal(x, z)
        c = z
        b = merge(y, c)
        a = merge(x, b)
        assert dominates_or_equal(a, b)
        assert dominates_or_equal(b, c)
        assert dominates_or_equal(a, c)


class TestMerge:
    """merge()."""

    def test_pointwise_max(self) -> None:
        """Each replica gets the larger counter; zeros are dropped."""
        assert merge({"a": 3, "b": 1, "z": 0}, {"b": 4, "c": 2}) == {"a": 3, "b": 4, "c": 2}

    def test_new_dict(self) -> None:
        """The inputs are left untouched."""
        a, b = {"a": 1}, {"b": 1}
        merged = merge(a, b)
        merged["a"] = 9
        assert a == {"a": 1}
        assert b == {"b": 1}

    @PROPERTY
    @given(version_vectors, version_vectors)
    def test_commutative(self, a: dict[str, int], b: dict[str, int]) -> None:
        """merge(a, b) == merge(b, a)."""
        assert merge(a, b) == merge(b, a)

    @PROPERTY
    @given(version_vectors, version_vectors, version_vectors)
    def test_associative(self, a: dict[str, int], b: dict[str, int], c: dict[str, int]) -> None:
        """merge(merge(a, b), c) == merge(a, merge(b, c))."""
        assert merge(merge(a, b), c) == merge(a, merge(b, c))

    @PROPERTY
    @given(version_vectors)
    def test_idempotent(self, a: dict[str, int]) -> None:
        """merge(a, a) is a itself."""
        assert merge(a, a) == normalize(a)

    @PROPERTY
    @given(version_vectors, version_vectors, version_vectors)
    def test_least_upper_bound(
        self, a: dict[str, int], b: dict[str, int], c: dict[str, int]
    ) -> None:
        """The merge dominates both inputs, and anything dominating both dominates it."""
        merged = merge(a, b)
        assert dominates_or_equal(merged, a)
        assert dominates_or_equal(merged, b)
        if dominates_or_equal(c, a) and dominates_or_equal(c, b):
            assert dominates_or_equal(c, merged)


class TestIncrement:
    """increment()."""

    def test_bumps_one_replica(self) -> None:
        """Only the writer's counter moves, starting from 1 for a new replica."""
        assert increment({"a": 2}, "a") == {"a": 3}
        assert increment({"a": 2}, "b") == {"a": 2, "b": 1}

    def test_new_dict(self) -> None:
        """The input is left untouched."""
        vv = {"a": 1}
        increment(vv, "a")
        assert vv == {"a": 1}

    def test_rejects_empty_replica(self) -> None:
        """An empty replica id is a bug in the caller."""
        with pytest.raises(ValueError, match="non-empty"):
            increment({}, "")

    @PROPERTY
    @given(version_vectors, replicas)
    def test_strictly_dominates(self, vv: dict[str, int], replica: str) -> None:
        """The incremented vector is AFTER the original, and covers the new dot."""
        bumped = increment(vv, replica)
        assert compare(bumped, vv) is Ordering.AFTER
        assert covers(bumped, (replica, bumped[replica]))
        assert not covers(vv, (replica, bumped[replica]))


class TestCovers:
    """covers() and dominates_or_equal()."""

    def test_covers(self) -> None:
        """A dot is covered when the replica's counter reached it."""
        assert covers({"a": 3}, ("a", 3))
        assert covers({"a": 3}, ("a", 1))
        assert not covers({"a": 3}, ("a", 4))
        assert not covers({}, ("a", 1))

    def test_dominates_or_equal(self) -> None:
        """a >= b pointwise, with missing replicas as zero."""
        assert dominates_or_equal({"a": 2, "b": 1}, {"a": 2})
        assert dominates_or_equal({}, {"a": 0})
        assert not dominates_or_equal({"a": 2}, {"a": 2, "b": 1})


class TestNormalize:
    """normalize()."""

    def test_drops_zeros(self) -> None:
        """Zero counters are not stored."""
        assert normalize({"a": 0, "b": 2}) == {"b": 2}

    @pytest.mark.parametrize(
        ("vv", "message"),
        [
            ({"a": -1}, "must not be negative"),
            ({"a": 1.5}, "must be an integer"),
            ({"a": True}, "must be an integer"),
            ({"": 1}, "must not be empty"),
            ({1: 1}, "must be strings"),
        ],
    )
    def test_rejects(self, vv: dict[object, object], message: str) -> None:
        """Negative or non-integer counters and empty or non-string ids raise ValueError."""
        with pytest.raises(ValueError, match=message):
            normalize(vv)  # type: ignore[arg-type]


class TestParse:
    """parse() of untrusted JSON."""

    def test_valid(self) -> None:
        """A JSON object of counters parses, zeros dropped."""
        assert parse(json.loads('{"a": 3, "b": 0, "device-7": 12}')) == {"a": 3, "device-7": 12}
        assert parse({}) == {}

    def test_limits_inclusive(self) -> None:
        """1000 entries and 64-character ids are allowed."""
        assert len(parse({f"r{i}": 1 for i in range(1000)})) == 1000
        assert parse({"x" * 64: MAX_COUNTER}) == {"x" * 64: MAX_COUNTER}

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ([["a", 1]], "must be a JSON object.*got list"),
            ("a:1", "must be a JSON object.*got str"),
            (None, "must be a JSON object.*got NoneType"),
            ({"a": -1}, "counter of replica 'a' must not be negative, got -1"),
            ({"a": "1"}, "counter of replica 'a' must be an integer, got str"),
            ({"a": 1.0}, "counter of replica 'a' must be an integer, got float"),
            ({"a": None}, "must be an integer, got NoneType"),
            ({"a": True}, "must be an integer, got bool"),
            ({"": 1}, "replica ids must not be empty"),
            ({"x" * 65: 1}, "is longer than 64 characters"),
            ({"a": MAX_COUNTER + 1}, "is larger than"),
            ({f"r{i}": 1 for i in range(1001)}, "at most 1000 entries, got 1001"),
        ],
    )
    def test_rejects(self, value: object, message: str) -> None:
        """Anything but an object of non-empty ids to non-negative integers is refused."""
        with pytest.raises(ValueError, match=message):
            parse(value)

    def test_long_id_not_echoed(self) -> None:
        """An oversized replica id is cut short in the error message."""
        with pytest.raises(ValueError, match="longer than") as info:
            parse({"x" * 10_000: 1})
        assert len(str(info.value)) < 200

    @PROPERTY
    @given(version_vectors)
    def test_round_trip(self, vv: dict[str, int]) -> None:
        """A valid vector survives JSON and parse unchanged."""
        assert parse(json.loads(json.dumps(vv))) == vv
